"""RedisFeatureStore against a real redis-server: idempotent writes, capped ordered histories,
decayed popularity, guarded vectors, dirty-user claims, Redis Cluster hash tags."""

from __future__ import annotations

import time

import numpy as np
import pytest
from redis.cluster import key_slot

from crossrec.config import FeatureStoreConfig
from crossrec.data.events import Event
from crossrec.errors import FeatureStoreError
from crossrec.feature_store import (
    ModelPointer,
    NewItem,
    RedisFeatureStore,
    SampleSpec,
    UserVector,
)
from crossrec.feature_store.samples import Sample
from tests.conftest import unique

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0


def _store(redis_server, **settings: object) -> RedisFeatureStore:  # type: ignore[no-untyped-def]
    cfg = FeatureStoreConfig(url=redis_server.url, key_prefix=unique("fs"), **settings)
    return RedisFeatureStore.from_config(cfg)


def _event(
    i: int,
    user: str = "u1",
    item: str | None = None,
    domain: str = "films",
    ts: float | None = None,
    kind: str = "view",
) -> Event:
    return Event(
        event_id=f"e{i}",
        user_id=user,
        item_id=item or f"i{i}",
        domain=domain,
        event_type=kind,
        timestamp=T0 + i if ts is None else ts,
    )  # type: ignore[arg-type]


def test_a_batch_written_twice_is_counted_once(redis_server) -> None:  # type: ignore[no-untyped-def]
    store = _store(redis_server)
    batch = [_event(i, user=f"u{i % 3}", domain=("books", "films")[i % 2]) for i in range(30)]
    first = store.write_events(batch)
    again = store.write_events(batch)
    assert (first.written, first.duplicates) == (30, 0)
    assert (again.written, again.duplicates) == (0, 30)
    states = store.histories(["u0", "u1", "u2"], ["books", "films"])
    for user in ("u0", "u1", "u2"):
        seq, entries = states[user]
        expected = [e.eid for e in batch if e.uid == user]
        assert seq == len(expected) == 10
        assert [h.event_id for h in entries] == expected  # merged across domains by time
    assert sorted(store.popularity("films", 100, now=T0))[0][0] == "i1"
    assert len(store.popularity("films", 100, now=T0)) == 15


def _samples(store: RedisFeatureStore, key: str) -> list[Sample]:
    return [Sample.from_json(f[b"s"]) for _, f in store.client.xrange(key)]


def test_new_events_become_samples_once_with_the_history_before_them(redis_server) -> None:  # type: ignore[no-untyped-def]
    store = _store(redis_server)
    spec = SampleSpec(
        key=f"{store.prefix}:online:samples",
        max_len=1000,
        context_length=3,
        domains=frozenset({"films"}),
    )
    # Two domains, one batch out of time order; a tie in time is ordered by event id.
    batch = [
        _event(1, domain="books"),
        _event(3),
        _event(2),
        _event(4, ts=T0 + 3),
        _event(5, domain="books"),
        _event(6),
        _event(7, user="u2"),
    ]
    first = store.write_events(batch, samples=spec)
    assert (first.written, first.samples) == (7, 5)  # the films events
    got = {s.event_id: s for s in _samples(store, spec.key)}
    assert list(got) == ["e3", "e2", "e4", "e6", "e7"]  # in arrival order (the buffer's order)
    assert got["e2"].context == (("books", "i1"),)
    assert got["e3"].context == (("books", "i1"), ("films", "i2"))
    assert got["e4"].context == (("books", "i1"), ("films", "i2"), ("films", "i3"))  # e3 < e4
    assert got["e6"].context == (("films", "i3"), ("films", "i4"), ("books", "i5"))  # newest 3
    assert got["e7"].context == ()
    assert (got["e6"].user_id, got["e6"].domain, got["e6"].item_id) == ("u1", "films", "i6")
    assert got["e6"].timestamp == T0 + 6
    # A replay (a crash before the commit, a duplicate delivery) records nothing again, also
    # when its first copy was written long ago; new events in it still count.
    again = store.write_events([*batch, _event(8)], samples=spec)
    assert (again.written, again.duplicates, again.samples) == (1, 7, 1)
    assert len(_samples(store, spec.key)) == 6
    assert _samples(store, spec.key)[-1].context[-1] == ("films", "i6")
    # Without a spec nothing is recorded.
    assert store.write_events([_event(9)]).samples == 0
    assert len(_samples(store, spec.key)) == 6


def test_popularity_dedupe_memory_stays_within_its_window(redis_server) -> None:  # type: ignore[no-untyped-def]
    store = _store(redis_server, popularity_dedupe_window_s=40)  # four 10 s buckets
    pattern = f"{store.prefix}:pop:*:seen:*"
    sizes = []
    for step in range(60):  # 300 s of writes, 10 events each 5 s
        now = T0 + 5 * step
        batch = [_event(10 * step + i, user=f"u{i}", ts=now) for i in range(10)]
        assert store.write_events(batch, now=now).written == 10
        # A replay inside the window counts nothing twice.
        store.write_events(batch[:3], now=now + 4)
        # Buckets expire by TTL; here time is simulated, so count what the window covers.
        live = store._popularity_buckets(now)
        keys = [k.decode() for k in store.client.scan_iter(pattern, count=1000)]
        sizes.append(sum(store.client.scard(k) for k in keys if int(k.rsplit(":", 1)[1]) in live))
        assert all(store.client.ttl(k) <= 10 * 5 + 1 for k in keys)
    top = dict(store.popularity("films", 1000, now=T0 + 300))
    assert len(top) == 600  # every event counted once, replays inside the window not again
    assert all(v == pytest.approx(1.0, rel=1e-3) for v in top.values())
    # At most one window plus a bucket of event ids (10 per 5 s): 100, never the 600 written.
    assert max(sizes) <= 100


def test_histories_are_capped_newest_kept_and_ordered_by_event_time(redis_server) -> None:  # type: ignore[no-untyped-def]
    store = _store(redis_server, history_length=5)
    late_first = [_event(i, ts=T0 + 100 - i) for i in range(12)]  # arrive newest first
    store.write_events(late_first)
    history = store.history("u1", "films")
    assert [h.event_id for h in history] == ["e4", "e3", "e2", "e1", "e0"]
    assert [h.timestamp for h in history] == sorted(h.timestamp for h in history)


def test_a_flood_for_one_user_keeps_its_memory_bounded(redis_server) -> None:  # type: ignore[no-untyped-def]
    store = _store(redis_server, history_length=20, dedupe_max_per_user=300)
    for start in range(0, 3000, 500):  # 3,000 events for one user, in six batches
        result = store.write_events([_event(i) for i in range(start, start + 500)])
        assert result.written == 500
    seen = store.user_key("u1", "seen")
    assert store.client.zcard(seen) == 300  # not 3,000
    assert len(store.history("u1", "films")) == 20
    # The newest ids still dedupe; another user is untouched.
    assert store.write_events([_event(2999)]).duplicates == 1
    assert store.write_events([_event(0, user="u2")]).written == 1


def test_popularity_is_weighted_and_halves_each_half_life(redis_server) -> None:  # type: ignore[no-untyped-def]
    store = _store(redis_server, popularity_half_life_s=3600.0)
    store.write_events(
        [
            _event(1, item="a", ts=T0),
            _event(2, item="a", ts=T0, user="u2"),
            _event(3, item="b", ts=T0, kind="purchase"),
            _event(4, item="c", ts=T0 - 3600),  # an hour older: half weight
        ],
        now=T0,
    )
    top = dict(store.popularity("films", 10, now=T0))
    assert top["b"] == pytest.approx(3.0)  # purchase weight
    assert top["a"] == pytest.approx(2.0)
    assert top["c"] == pytest.approx(0.5)
    later = dict(store.popularity("films", 10, now=T0 + 7200))
    assert later["a"] == pytest.approx(0.5)
    assert [i for i, _ in store.popularity("films", 2, now=T0)] == ["b", "a"]


def test_popularity_survives_rescaling_after_a_long_time(redis_server) -> None:  # type: ignore[no-untyped-def]
    store = _store(redis_server, popularity_half_life_s=1.0)
    store.write_events([_event(1, item="old", ts=T0)], now=T0)
    store.write_events([_event(2, item="new", ts=T0 + 1000)], now=T0 + 1000)  # 2^1000 apart
    top = dict(store.popularity("films", 10, now=T0 + 1000))
    assert top["new"] == pytest.approx(1.0)
    assert top["old"] == pytest.approx(0.0, abs=1e-12)


def test_a_vector_from_an_older_history_never_replaces_a_newer_one(redis_server) -> None:  # type: ignore[no-untyped-def]
    store = _store(redis_server)
    newer = UserVector("u1", "films", np.arange(4, dtype=np.float32), "m-a", T0, seq=7)
    older = UserVector("u1", "films", np.zeros(4, dtype=np.float32), "m-a", T0 + 1, seq=6)
    assert store.write_user_vectors([newer]) == 1
    assert store.write_user_vectors([older]) == 0
    got = store.user_vector("u1", "films")
    assert got is not None
    np.testing.assert_array_equal(got.vector, newer.vector)
    assert (got.seq, got.model_version) == (7, "m-a")
    # The same history under a new model version is written.
    assert store.write_user_vectors([UserVector("u1", "films", np.ones(4), "m-b", T0, 7)]) == 1
    assert store.user_vector("u1", "films").model_version == "m-b"  # type: ignore[union-attr]
    assert store.user_vector("nobody", "films") is None


def test_dirty_claims_keep_users_marked_again_meanwhile(redis_server) -> None:  # type: ignore[no-untyped-def]
    store = _store(redis_server)
    store.write_events([_event(1, user="a"), _event(2, user="b")])
    claims = store.dirty_users(10)
    assert sorted(u for u, _ in claims) == ["a", "b"]
    time.sleep(0.01)
    store.write_events([_event(3, user="b")])  # b is marked again after the claim
    assert store.clear_dirty(claims) == 1
    assert [u for u, _ in store.dirty_users(10)] == ["b"]
    assert store.dirty_users(10, quiet_for_s=60) == []  # debounce: b is not quiet yet


def test_one_users_keys_share_a_cluster_slot(redis_server) -> None:  # type: ignore[no-untyped-def]
    store = _store(redis_server)
    store.write_events(
        [_event(1, user="alice", domain="films"), _event(2, user="alice", domain="books")]
    )
    store.write_user_vectors([UserVector("alice", "films", np.ones(3), "m", T0, 2)])
    keys = [k.decode() for k in store.client.scan_iter(f"{store.prefix}:u:*", count=100)]
    assert len(keys) == 5  # seen, seq, two histories, one vector
    store.write_events([_event(3, user="alice")], samples=SampleSpec("s", 10, 5))
    keys = [k.decode() for k in store.client.scan_iter(f"{store.prefix}:u:*", count=100)]
    assert len(keys) == 6  # + the sample context
    assert len({key_slot(k.encode()) for k in keys}) == 1
    assert all(k.startswith(f"{store.prefix}:") for k in keys)


def test_model_pointer_item_texts_and_the_new_item_queue(redis_server) -> None:  # type: ignore[no-untyped-def]
    store = _store(redis_server)
    assert store.current_model() is None
    store.set_current_model(ModelPointer("m-1", "/models/1", T0))
    assert store.current_model() == ModelPointer("m-1", "/models/1", T0)
    store.mark_items_pending("films", ["x", "y"])
    store.put_item_texts("films", {"x": "A film about x"})
    assert store.pending_items("films") == {"y"}
    assert store.item_texts("films", ["x", "y"]) == {"x": "A film about x"}
    vec = np.linspace(0, 1, 8, dtype=np.float32)
    store.queue_new_items([NewItem("films", "x", "A film about x", vec, "m-1")])
    ((entry_id, item),) = store.new_items("films")
    assert (item.item_id, item.text, item.model_version) == ("x", "A film about x", "m-1")
    np.testing.assert_array_equal(item.text_vector, vec)
    assert store.new_items("films", after=entry_id) == []


def test_an_unreachable_server_raises_a_clear_error() -> None:
    from crossrec.embedded import free_port

    cfg = FeatureStoreConfig(
        url=f"redis://127.0.0.1:{free_port()}/0", retries=1, connect_timeout_s=0.5
    )
    store = RedisFeatureStore.from_config(cfg)
    with pytest.raises(FeatureStoreError, match="redis write_events failed: ConnectionError"):
        store.write_events([_event(1)])
    assert store.ping() is False


# --------------------------------------------------------------------------- Redis Cluster
@pytest.fixture(scope="module")
def redis_cluster():  # type: ignore[no-untyped-def]
    """A real three-primary Redis Cluster on loopback ports, for this module."""
    from crossrec.embedded import EmbeddedRedisCluster

    with EmbeddedRedisCluster(3) as cluster:
        yield cluster


def test_the_write_and_read_path_on_a_real_redis_cluster(redis_cluster) -> None:  # type: ignore[no-untyped-def]
    from redis.cluster import RedisCluster

    cfg = FeatureStoreConfig(url=redis_cluster.url, cluster=True, key_prefix=unique("cl"))
    store = RedisFeatureStore.from_config(cfg)
    assert isinstance(store.client, RedisCluster)
    spec = SampleSpec(key=f"{store.prefix}:{{online}}:samples", max_len=1000, context_length=4)
    users = [f"user-{n}" for n in range(40)]  # spread over every primary's slots
    batch = [_event(i, user=users[i % 40], domain=("books", "films")[i % 2]) for i in range(400)]
    # A fresh cluster knows none of the scripts (NOSCRIPT is answered by loading them).
    first = store.write_events(batch, samples=spec)
    assert (first.written, first.duplicates, first.samples) == (400, 0, 400)
    again = store.write_events(batch, samples=spec)
    assert (again.written, again.duplicates, again.samples) == (0, 400, 0)
    states = store.histories(users, ["books", "films"])
    for n, user in enumerate(users):
        seq, entries = states[user]
        assert seq == 10
        assert [h.event_id for h in entries] == [f"e{i}" for i in range(n, 400, 40)]
    recorded = _samples(store, spec.key)
    assert len(recorded) == 400
    last = next(s for s in reversed(recorded) if s.user_id == "user-0")
    assert last.context == tuple(("books", f"i{i}") for i in (200, 240, 280, 320))
    assert len(store.popularity("films", 1000)) == 200
    # Vectors (a script per user, routed to each user's primary) and the dirty set.
    vectors = [
        UserVector(u, "films", np.full(3, n, np.float32), "m-1", T0, 10)
        for n, u in enumerate(users)
    ]
    assert store.write_user_vectors(vectors) == 40
    got = store.user_vector("user-7", "films")
    assert got is not None
    np.testing.assert_array_equal(got.vector, np.full(3, 7, np.float32))
    claims = store.dirty_users(100)
    assert sorted(u for u, _ in claims) == sorted(users)
    assert store.clear_dirty(claims) == 40
    store.set_current_model(ModelPointer("m-1", "/tmp/m-1", T0))
    assert store.current_model() == ModelPointer("m-1", "/tmp/m-1", T0)
    # After every primary forgot its scripts (a restart or a failover), writes load them again.
    for node in store.client.get_primaries():
        node.redis_connection.script_flush()
    later = [_event(1000 + i, user=users[i]) for i in range(40)]
    assert store.write_events(later, samples=spec).written == 40
    store.close()


def test_ids_with_redis_key_metacharacters_stay_apart(redis_server) -> None:  # type: ignore[no-untyped-def]
    store = _store(redis_server)
    # Hash-tag braces, key separators, glob characters: each id is its own user and item.
    users = ["a{b}", "a", "b", "x}:seen", "x", "*", "a:b", "{", "}", "u:{films}:h"]
    batch = [_event(i, user=u, item=f"{u}-item") for i, u in enumerate(users)]
    assert store.write_events(batch).written == len(users)
    states = store.histories(users, ["films"])
    for i, user in enumerate(users):
        seq, entries = states[user]
        assert seq == 1, user
        assert [(h.event_id, h.item_id) for h in entries] == [(f"e{i}", f"{user}-item")], user
    assert len(store.popularity("films", 100)) == len(users)
    # A newline or a 10 kB id never gets this far: events refuse them with the field named.
    from pydantic import ValidationError

    for bad, reason in (("a\nb", "control character"), ("u" * 10_000, "longer than 256")):
        with pytest.raises(ValidationError, match=reason):
            _event(99, user=bad)


def test_open_feature_store_builds_the_configured_type(redis_server) -> None:  # type: ignore[no-untyped-def]
    from crossrec.errors import ConfigError
    from crossrec.feature_store import (
        EventStore,
        ModelPointerStore,
        SampleStore,
        open_feature_store,
    )

    cfg = FeatureStoreConfig(url=redis_server.url, key_prefix=unique("open"))
    with open_feature_store(cfg) as store:
        assert isinstance(store, RedisFeatureStore)
        assert isinstance(store, EventStore)
        assert isinstance(store, ModelPointerStore)
        assert isinstance(store, SampleStore)
        assert store.write_events([_event(1)]).written == 1
        assert [h.item_id for h in store.history("u1", "films")] == ["i1"]
    cfg.type = "cassandra"
    with pytest.raises(
        ConfigError, match=r"feature_store.type: unknown store 'cassandra'; known: redis"
    ):
        open_feature_store(cfg)
