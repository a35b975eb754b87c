"""The stream end to end, against a real redis-server and a Kafka-protocol broker:
exactly-once effects from at-least-once delivery, dead letters, crashes, Redis outages,
consumer groups, and fresh user vectors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from kafka import KafkaConsumer, TopicPartition

from crossrec.config import CrossRecConfig
from crossrec.data.dataset import CrossDomainDataset
from crossrec.embedded import EmbeddedKafka, EmbeddedRedis
from crossrec.errors import FeatureStoreError
from crossrec.feature_store import RedisFeatureStore
from crossrec.models.bundle import ModelBundle
from crossrec.models.crossrec_model import CrossRecModel
from crossrec.registry import publish_model
from crossrec.stream.events import Event, EventProducer
from crossrec.stream.updates import history_context
from crossrec.stream.worker import FAULT_ENV, FAULT_EXIT_CODE, StreamWorker
from tests.conftest import init_local_ray, unique

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
MAX_EVENT_BYTES = 2048


def stream_config(
    kafka: EmbeddedKafka, redis_url: str, *, partitions: int = 4, **stream: Any
) -> CrossRecConfig:
    name = unique("stream")
    cfg = CrossRecConfig()
    s = cfg.stream
    s.bootstrap_servers, s.api_version, s.mock_broker = kafka.bootstrap_servers, "2.1", True
    s.topic, s.dead_letter_topic, s.group_id = f"{name}-events", f"{name}-dlq", f"{name}-group"
    s.domains, s.max_event_bytes = ["books", "films"], MAX_EVENT_BYTES
    s.poll_timeout_ms, s.lag_interval_s, s.backoff_s, s.max_backoff_s = 1000, 0.3, 0.1, 0.5
    s.rejoin_timeout_s = 20.0
    for key, value in stream.items():
        setattr(s, key, value)
    cfg.feature_store.url = redis_url
    cfg.feature_store.key_prefix = name
    cfg.feature_store.history_length = 500
    for topic in (s.topic, s.dead_letter_topic):
        kafka.create_topic(topic, partitions)
    return cfg


def events_for(n: int, users: int = 300, start: int = 0, now: float | None = None) -> list[Event]:
    now = time.time() if now is None else now
    return [
        Event(
            event_id=f"ev-{i}",
            user_id=f"user-{i % users}",
            item_id=f"item-{i % 97}",
            domain=("books", "films")[i % 2],
            event_type=("view", "click", "purchase")[i % 3],
            timestamp=now - 1000 + i * 1e-3,
        )
        for i in range(start, start + n)
    ]


def produce(cfg: CrossRecConfig, events: list[Event], raw: list[bytes] = ()) -> None:  # type: ignore[assignment]
    with EventProducer(cfg.stream) as producer:
        for event in events:
            producer.send(event)
        for value in raw:
            producer.send_raw(value, key=b"bad")


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):
        if condition():
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def committed_offsets(cfg: CrossRecConfig) -> dict[int, int]:
    consumer = KafkaConsumer(
        bootstrap_servers=cfg.stream.bootstrap_servers,
        api_version=(2, 1),
        group_id=cfg.stream.group_id,
        enable_auto_commit=False,
    )
    try:
        parts = consumer.partitions_for_topic(cfg.stream.topic) or set()
        return {p: consumer.committed(TopicPartition(cfg.stream.topic, p)) or 0 for p in parts}
    finally:
        consumer.close(autocommit=False)


def read_topic(cfg: CrossRecConfig, topic: str, expected: int) -> list[Any]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=cfg.stream.bootstrap_servers,
        api_version=(2, 1),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    out: list[Any] = []
    try:
        deadline = time.monotonic() + 30
        while len(out) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(records)
    finally:
        consumer.close(autocommit=False)
    return out


def assert_exactly_once(store: RedisFeatureStore, events: list[Event]) -> None:
    """Every event is in its user's dedupe set, history and counter, once."""
    by_user: dict[str, list[str]] = {}
    for e in events:
        by_user.setdefault(e.uid, []).append(e.eid)
    states = store.histories(sorted(by_user), ["books", "films"])
    for user, ids in by_user.items():
        seq, entries = states[user]
        assert seq == len(ids), f"{user}: counter {seq}, {len(ids)} events"
        assert sorted(h.event_id for h in entries) == sorted(ids), user
        seen = {m.decode() for m in store.client.zrange(store.user_key(user, "seen"), 0, -1)}
        assert seen == set(ids), user


class WorkerThread:
    """A worker running in a daemon thread, stopped and joined with bounds."""

    def __init__(self, worker: StreamWorker, **run: Any) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, kwargs=run, daemon=True)
        self.thread.start()

    def _run(self, **run: Any) -> None:
        try:
            self.worker.run(**run)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def committed(self) -> int:
        return sum(self.worker.report.committed.values())

    def stop(self, timeout: float = 30.0) -> None:
        self.worker.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "worker did not stop"
        if self.error is not None:
            raise self.error


# --------------------------------------------------------------------------- 10k events
MALFORMED: list[tuple[Callable[[int], bytes], str]] = [
    (lambda i: b'{"event_id": "bad-%d", "user_id": ' % i, "not valid JSON"),
    (
        lambda i: json.dumps(
            {
                "event_id": f"bad-{i}",
                "user_id": "u",
                "domain": "films",
                "event_type": "view",
                "timestamp": 1.0,
            }
        ).encode(),
        "missing field 'item_id'",
    ),
    (
        lambda i: json.dumps(
            {
                "event_id": f"bad-{i}",
                "user_id": "u",
                "item_id": "i",
                "domain": "games",
                "event_type": "view",
                "timestamp": 1.0,
            }
        ).encode(),
        "unknown domain 'games'",
    ),
    (
        lambda i: json.dumps(
            {
                "event_id": f"bad-{i}",
                "user_id": "u",
                "item_id": "i",
                "domain": "films",
                "event_type": "view",
                "timestamp": "noon",
            }
        ).encode(),
        "field 'timestamp': must be a number",
    ),
    (
        lambda i: json.dumps(
            {
                "event_id": f"bad-{i}",
                "user_id": "u",
                "item_id": "x" * 200,
                "domain": "films",
                "event_type": "view",
                "timestamp": 1.0,
                "pad": "p" * MAX_EVENT_BYTES,
            }
        ).encode(),
        f"more than the {MAX_EVENT_BYTES} allowed",
    ),
]


def test_ten_thousand_events_with_one_percent_malformed(
    kafka_broker: EmbeddedKafka, redis_server: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = stream_config(kafka_broker, redis_server.url)
    good = events_for(9_900)
    bad = {MALFORMED[i % 5][0](i): MALFORMED[i % 5][1] for i in range(100)}
    assert len(bad) == 100
    produce(cfg, good, list(bad))

    worker = StreamWorker(cfg)
    with caplog.at_level("WARNING", logger="crossrec.stream.updates"):
        report = worker.run(idle_exit_s=2.0)

    assert (report.written, report.duplicates, report.dead_letters) == (9_900, 0, 100)
    assert_exactly_once(worker.store, good)  # type: ignore[arg-type]
    # Offsets: committed up to the end of every partition.
    ends = {
        tp.partition: off
        for tp, off in KafkaConsumer(
            bootstrap_servers=cfg.stream.bootstrap_servers, api_version=(2, 1)
        )
        .end_offsets([TopicPartition(cfg.stream.topic, p) for p in range(4)])
        .items()
    }
    assert committed_offsets(cfg) == ends
    assert sum(ends.values()) == 10_000
    # Every malformed record is in the dead-letter topic: original bytes, reason, source.
    dead = read_topic(cfg, cfg.stream.dead_letter_topic, 100)
    assert len(dead) == 100
    for record in dead:
        headers = {k: v.decode() for k, v in record.headers}
        assert bad[record.value] in headers["crossrec-reason"]
        assert headers["crossrec-source-topic"] == cfg.stream.topic
        assert (
            0
            <= int(headers["crossrec-source-offset"])
            < ends[int(headers["crossrec-source-partition"])]
        )
    assert {r.value for r in dead} == set(bad)
    # Prometheus metrics agree; lag is read and is zero once everything is consumed.
    m = worker.metrics
    assert m.value("crossrec_stream_events_total", outcome="written") == 9_900
    assert m.value("crossrec_stream_events_total", outcome="dead_letter") == 100
    lags = [
        m.registry.get_sample_value(
            "crossrec_stream_consumer_lag",
            {"worker": "0", "topic": cfg.stream.topic, "partition": str(p)},
        )
        for p in range(4)
    ]
    assert lags == [0.0, 0.0, 0.0, 0.0]
    # No model published: histories updated, vectors skipped with a clear log line.
    assert report.vectors == 0
    assert any("user vectors are skipped" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- crash
def _stream_cli(cfg_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "crossrec.cli",
        "stream",
        "--local",
        "--config",
        str(cfg_path),
        "--idle-exit",
        "3",
    ]
    return subprocess.run(  # noqa: S603 - our own CLI
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_a_crash_between_write_and_commit_loses_nothing_and_counts_nothing_twice(
    kafka_broker: EmbeddedKafka, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    cfg = stream_config(kafka_broker, redis_server.url, batch_size=500)
    events = events_for(3_000, users=50)
    produce(cfg, events)
    cfg_path = tmp_path / "stream.yaml"
    cfg_path.write_text(cfg.to_yaml())
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    crashed = _stream_cli(cfg_path, {**env, FAULT_ENV: "after_write:2"})
    assert crashed.returncode == FAULT_EXIT_CODE, crashed.stderr[-2000:]
    assert "injected fault" in crashed.stderr
    written_before_commit = sum(committed_offsets(cfg).values())
    assert written_before_commit < 3_000  # the second batch was written, not committed

    again = _stream_cli(cfg_path, env)
    assert again.returncode == 0, again.stderr[-2000:]
    summary = re.search(r"([\d,]+) events written, ([\d,]+) duplicates", again.stdout)
    assert summary is not None, again.stdout
    written, duplicates = (int(g.replace(",", "")) for g in summary.groups())
    assert duplicates > 0, (written_before_commit, again.stdout, crashed.stderr[-3000:])
    assert written + duplicates == 3_000 - written_before_commit
    store = RedisFeatureStore.from_config(cfg.feature_store)
    assert_exactly_once(store, events)  # ...and nothing was lost or counted twice
    assert sum(committed_offsets(cfg).values()) == 3_000


# --------------------------------------------------------------------------- Redis outage
def test_redis_outage_commits_nothing_unwritten_and_resumes(
    kafka_broker: EmbeddedKafka, tmp_path: Path
) -> None:
    with EmbeddedRedis(data_dir=tmp_path / "redis") as server:
        cfg = stream_config(kafka_broker, server.url)
        cfg.feature_store.retries = 0
        cfg.feature_store.connect_timeout_s = cfg.feature_store.socket_timeout_s = 1.0
        first, second = events_for(1_000), events_for(1_000, start=1_000)
        running = WorkerThread(StreamWorker(cfg))
        try:
            produce(cfg, first)
            wait_for("the first 1,000 events committed", lambda: running.committed() == 1_000)
            server.stop()
            produce(cfg, second)
            wait_for("write retries", lambda: running.worker.report.store_retries >= 3)
            assert sum(committed_offsets(cfg).values()) == 1_000
            assert running.committed() == 1_000
            server.start()
            wait_for("all 2,000 committed", lambda: running.committed() == 2_000)
        finally:
            running.stop()
        assert running.worker.report.written == 2_000
        store = RedisFeatureStore.from_config(cfg.feature_store)
        assert_exactly_once(store, first + second)


# --------------------------------------------------------------------------- rebalances
# kafka-python assigns eagerly (it has no cooperative protocol): on every rebalance each member
# gives up all its partitions and gets a fresh set, positions reset to the committed offsets.
def test_a_worker_joining_during_a_backlog_loses_nothing(
    kafka_broker: EmbeddedKafka, redis_server: EmbeddedRedis
) -> None:
    # Large batches are topped up over several polls, so a rebalance lands inside one while
    # records of the same partitions are already in hand.
    cfg = stream_config(kafka_broker, redis_server.url, batch_size=2_000, poll_timeout_ms=200)
    events = events_for(6_000, users=400)
    produce(cfg, events)
    first = WorkerThread(StreamWorker(cfg, worker_index=0))
    second: WorkerThread | None = None
    try:
        wait_for("the first worker's first batch", lambda: first.worker.report.records > 0)
        second = WorkerThread(StreamWorker(cfg, worker_index=1))
        wait_for(
            "every event committed",
            lambda: sum(committed_offsets(cfg).values()) == 6_000,
            timeout=120,
        )
    finally:
        # Both asked at once: one leaving alone sends the other into a rejoin first.
        for running in (first, second):
            if running is not None:
                running.worker.stop()
        first.stop(90)
        if second is not None:
            second.stop(90)
    assert second is not None
    assert sum(committed_offsets(cfg).values()) == 6_000  # committed = end offsets
    store = RedisFeatureStore.from_config(cfg.feature_store)
    assert_exactly_once(store, events)
    # Each event was new exactly once, whoever wrote it.
    assert first.worker.report.written + second.worker.report.written == 6_000


def test_a_rebalance_during_a_redis_outage_loses_nothing(
    kafka_broker: EmbeddedKafka, tmp_path: Path
) -> None:
    with EmbeddedRedis(data_dir=tmp_path / "redis") as server:
        # Long back-off polls: the whole rebalance (revoke, join, assign, fetch) happens
        # inside one of them.
        cfg = stream_config(kafka_broker, server.url, poll_timeout_ms=200, max_backoff_s=3.0)
        cfg.stream.backoff_s = 3.0
        cfg.feature_store.retries = 0
        cfg.feature_store.connect_timeout_s = cfg.feature_store.socket_timeout_s = 1.0
        before, backlog = events_for(1_000), events_for(5_000, start=1_000)
        first = WorkerThread(StreamWorker(cfg, worker_index=0))
        second = WorkerThread(StreamWorker(cfg, worker_index=1))
        try:
            produce(cfg, before)
            wait_for(
                "the first 1,000 events committed",
                lambda: first.committed() + second.committed() == 1_000,
            )
            assert first.committed() > 0
            assert second.committed() > 0
            server.stop()
            produce(cfg, backlog)
            wait_for(
                "write retries on both",
                lambda: (
                    min(first.worker.report.store_retries, second.worker.report.store_retries) >= 1
                ),
            )
            # One member leaves while both back off: the group hands its partitions to the
            # other (fresh, un-paused) in the middle of that one's back-off.
            second.stop()
            wait_for(
                "the first worker owning every partition",
                lambda: len(first.worker.assignment) == 4,
                timeout=60,
            )
            time.sleep(4.0)  # more back-off turns with the new assignment
            assert sum(committed_offsets(cfg).values()) == 1_000  # nothing past unwritten
            server.start()
            everything = lambda: sum(committed_offsets(cfg).values()) == 6_000  # noqa: E731
            wait_for("every event committed", everything, timeout=120)
        finally:
            first.worker.stop()
            second.worker.stop()
            first.stop(90)
            second.stop(90)
        store = RedisFeatureStore.from_config(cfg.feature_store)
        assert_exactly_once(store, before + backlog)
        # Every event was written by one of them: a batch whose write landed while its reply
        # was lost to the outage is retried and then reads as duplicates (once seen in a
        # fresh-clone run: 5,508 + 297 written, 195 duplicates after 2 retries), never as a
        # second write (the store holds each event exactly once, above).
        a, b = first.worker.report, second.worker.report
        assert a.written + b.written <= 6_000
        assert a.written + b.written + a.duplicates + b.duplicates >= 6_000
        assert len(first.worker.report.committed) == 4  # it took the other's partitions


def test_a_worker_started_during_an_outage_waits_for_the_store(
    kafka_broker: EmbeddedKafka, tmp_path: Path
) -> None:
    with EmbeddedRedis(data_dir=tmp_path / "redis") as server:
        cfg = stream_config(kafka_broker, server.url, poll_timeout_ms=200)
        cfg.feature_store.retries = 0
        cfg.feature_store.connect_timeout_s = cfg.feature_store.socket_timeout_s = 1.0
        events = events_for(500)
        produce(cfg, events)
        server.stop()
        running = WorkerThread(StreamWorker(cfg))
        try:
            time.sleep(1.5)
            assert running.thread.is_alive()  # waiting, not crashed
            assert running.worker.report.records == 0  # and not in the group yet
            server.start()
            wait_for("every event committed", lambda: running.committed() == 500)
        finally:
            running.stop()
        assert_exactly_once(RedisFeatureStore.from_config(cfg.feature_store), events)


# --------------------------------------------------------------------------- a group
def test_two_ray_workers_share_the_partitions_without_duplicates(
    kafka_broker: EmbeddedKafka, redis_server: EmbeddedRedis
) -> None:
    import ray

    from crossrec.stream.ray_workers import run_ray_workers

    cfg = stream_config(kafka_broker, redis_server.url, worker_num_cpus=0.5)
    events = events_for(4_000, users=200)
    result: dict[str, Any] = {}
    stop = threading.Event()
    init_local_ray()
    try:

        def run() -> None:
            try:
                result["reports"] = run_ray_workers(cfg, 2, should_stop=stop.is_set)
            except BaseException as exc:
                result["error"] = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        # Events keep arriving for a while, so both workers have joined before the end.
        for chunk in range(8):
            produce(cfg, events[chunk * 500 : (chunk + 1) * 500])
            time.sleep(0.75)
        wait_for(
            "every event committed",
            lambda: sum(committed_offsets(cfg).values()) == 4_000,
            timeout=120,
        )
        stop.set()
        thread.join(120)
        assert not thread.is_alive(), "workers did not stop"
    finally:
        stop.set()
        ray.shutdown()
    assert "error" not in result, result.get("error")
    reports = result["reports"]
    assert len(reports) == 2
    assert all(r.written > 0 for r in reports)  # both took part
    # Each event is stored and counted by exactly one worker. (The mock broker refuses offset
    # commits while a rebalance is under way, so a batch written just before one can be
    # delivered again to the partition's next owner; the dedupe recognises it.)
    assert sum(r.written for r in reports) == 4_000
    partitions = [set(r.committed) for r in reports]
    assert partitions[0] | partitions[1] == {f"{cfg.stream.topic}[{p}]" for p in range(4)}
    store = RedisFeatureStore.from_config(cfg.feature_store)
    assert_exactly_once(store, events)


# --------------------------------------------------------------------------- freshness
@pytest.fixture(scope="module")
def model_version(
    small_world: CrossDomainDataset, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """An (untrained) model version for films over the small world."""
    from tests.conftest import SMALL_WORLD

    cfg = CrossRecConfig()
    cfg.data.synthetic = SMALL_WORLD
    torch.manual_seed(0)
    vectors = torch.randn(small_world.num_items, 384)
    model = CrossRecModel.for_dataset(small_world, cfg, text_vectors=vectors)
    model.target_domain = "films"
    root = tmp_path_factory.mktemp("version")
    model.save_pretrained(root / "films")
    return root


def test_a_users_vector_follows_their_events(
    kafka_broker: EmbeddedKafka,
    redis_server: EmbeddedRedis,
    small_world: CrossDomainDataset,
    model_version: Path,
) -> None:
    cfg = stream_config(kafka_broker, redis_server.url)
    store = RedisFeatureStore.from_config(cfg.feature_store)
    pointer = publish_model(store, model_version)
    bundle = ModelBundle.load(model_version)
    model = bundle.models["films"]
    books = [it.item_id for it in small_world.items if it.domain == "books"][:6]
    films = [it.item_id for it in small_world.items if it.domain == "films"][:3]
    now = time.time()

    def event(i: int, item: str, domain: str) -> Event:
        return Event(
            event_id=f"f{i}",
            user_id="U",
            item_id=item,
            domain=domain,
            event_type="click",
            timestamp=now + i,
        )

    def expected() -> np.ndarray:
        seq, entries = store.histories(["U"], model.domains)["U"]
        return model.encode_users([history_context(model, entries)], "films")[0].detach().numpy()

    def stored_seq() -> int:
        vec = store.user_vector("U", "films")
        return -1 if vec is None else vec.seq

    running = WorkerThread(StreamWorker(cfg))
    try:
        produce(cfg, [event(i, b, "books") for i, b in enumerate(books)])
        wait_for("U's first vector", lambda: stored_seq() == 6)
        first = store.user_vector("U", "films")
        assert first is not None
        assert first.model_version == pointer.version
        np.testing.assert_allclose(first.vector, expected(), atol=1e-5)

        produce(cfg, [event(10 + i, f, "films") for i, f in enumerate(films)])
        wait_for("U's vector after film events", lambda: stored_seq() == 9)
        second = store.user_vector("U", "films")
        assert second is not None
        np.testing.assert_allclose(second.vector, expected(), atol=1e-5)
        assert not np.allclose(second.vector, first.vector, atol=1e-3)

        # A new item: its text is known (the API wrote it) -> encoded, queued for indexes and
        # part of U's history; an item with no text yet is pending and left out.
        store.put_item_texts("films", {"brand-new": "Title: A documentary about tea."})
        produce(cfg, [event(20, "brand-new", "films"), event(21, "mystery", "films")])
        wait_for("U's vector after new items", lambda: stored_seq() == 11)
        ((_, queued),) = store.new_items("films")
        assert queued.item_id == "brand-new"
        assert queued.model_version == pointer.version
        assert store.pending_items("films") == {"mystery"}
        model.add_items("films", ["brand-new"], ["Title: A documentary about tea."])
        third = store.user_vector("U", "films")
        assert third is not None
        np.testing.assert_allclose(third.vector, expected(), atol=1e-5)
    finally:
        running.stop()
    assert running.worker.report.committed
    assert running.worker.report.vectors >= 3


# --------------------------------------------------------------------------- CLI and signals
def test_events_produce_names_the_bad_line(
    kafka_broker: EmbeddedKafka, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from crossrec.cli import app

    cfg = stream_config(kafka_broker, redis_server.url)
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(cfg.to_yaml())
    lines = [e.to_json().decode() for e in events_for(3)]
    events_file = tmp_path / "events.jsonl"
    events_file.write_text("\n".join([lines[0], lines[1], '{"event_id": 1}', lines[2]]) + "\n")
    runner = CliRunner()

    stopped = runner.invoke(app, ["events", "produce", str(events_file), "-c", str(cfg_path)])
    assert stopped.exit_code == 1  # bad data: a runtime error
    assert f"{events_file}:3: missing field 'user_id'" in stopped.output

    skipped = runner.invoke(
        app, ["events", "produce", str(events_file), "-c", str(cfg_path), "--skip-invalid"]
    )
    assert skipped.exit_code == 0, skipped.output
    assert "sent 3 events" in skipped.output
    assert "skipped 1 invalid lines" in skipped.output
    assert len(read_topic(cfg, cfg.stream.topic, 5)) == 5  # 2 before the stop, 3 after

    unset = runner.invoke(app, ["events", "produce", str(events_file)])
    assert unset.exit_code == 2
    assert "stream.bootstrap_servers: not set" in unset.output


def test_sigterm_finishes_the_batch_commits_and_exits(
    kafka_broker: EmbeddedKafka, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    import signal

    cfg = stream_config(kafka_broker, redis_server.url, batch_size=200)
    cfg_path = tmp_path / "stream.yaml"
    cfg_path.write_text(cfg.to_yaml())
    cmd = [sys.executable, "-m", "crossrec.cli", "stream", "--local", "--config", str(cfg_path)]
    proc = subprocess.Popen(  # noqa: S603 - our own CLI
        cmd,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        events = events_for(2_000, users=100)
        produce(cfg, events[:1_000])
        wait_for("the worker to commit", lambda: sum(committed_offsets(cfg).values()) > 0)
        produce(cfg, events[1_000:])
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "SIGTERM: finishing the current batch" in err
    summary = re.search(r"([\d,]+) events written", out)
    assert summary is not None, out
    written = int(summary.group(1).replace(",", ""))
    # Whatever it wrote, it committed: nothing written is left to replay.
    assert sum(committed_offsets(cfg).values()) == written
    store = RedisFeatureStore.from_config(cfg.feature_store)
    states = store.histories([e.uid for e in events], ["books", "films"])
    assert sum(seq for seq, _ in states.values()) == written


def test_debounce_waits_for_a_quiet_user(redis_server: EmbeddedRedis, model_version: Path) -> None:
    from crossrec.stream.updates import UserVectorUpdater

    cfg = CrossRecConfig()
    cfg.feature_store.url, cfg.feature_store.key_prefix = redis_server.url, unique("debounce")
    cfg.stream.updates.mode, cfg.stream.updates.debounce_s = "debounce", 0.3
    store = RedisFeatureStore.from_config(cfg.feature_store)
    updater = UserVectorUpdater(store, cfg, ModelBundle.load(model_version))
    store.write_events(events_for(3, users=1))
    assert updater.run_once().users == 0  # still active
    wait_for("the quiet period", lambda: updater.run_once().users == 1, timeout=10)
    assert store.user_vector("user-0", "films") is not None
    assert store.dirty_users(10) == []


# --------------------------------------------------------------------------- rebalance timing
# kafka-python runs the revoke and assign callbacks, resets positions and fetches inside one
# `poll()`. Whether a rebalance lands between two polls of one batch, or inside a back-off poll
# with data ready, depends on timing the tests above cannot force on the embedded broker; this
# consumer replays exactly that sequence (one partition log per partition, positions reset to
# the committed offsets on assignment, as kafka-python's eager protocol does) against the real
# worker and a real redis-server.
class _Record:
    def __init__(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        self.topic, self.partition, self.offset, self.value = topic, partition, offset, value
        self.key, self.timestamp = None, 0


class ScriptedConsumer:
    def __init__(
        self, topic: str, logs: dict[int, list[bytes]], rebalance_at: set[int], per_fetch: int = 100
    ) -> None:
        self.tps = [TopicPartition(topic, p) for p in sorted(logs)]
        self.logs = {tp: logs[tp.partition] for tp in self.tps}
        self.rebalance_at, self.per_fetch = rebalance_at, per_fetch
        self.listener: Any = None
        self.assigned: set[Any] = set()
        self.positions: dict[Any, int] = {}
        self.committed: dict[Any, int] = dict.fromkeys(self.tps, 0)
        self.paused_tps: set[Any] = set()
        self.calls = 0

    def _assign(self) -> None:
        if self.assigned:
            self.listener.on_partitions_revoked(set(self.assigned))
        self.assigned = set(self.tps)
        self.positions = dict(self.committed)  # fresh state: committed offsets, un-paused
        self.paused_tps.clear()
        self.listener.on_partitions_assigned(set(self.assigned))

    def poll(self, timeout_ms: int = 0, max_records: int = 500) -> dict[Any, list[Any]]:
        self.calls += 1
        if self.calls == 1 or self.calls in self.rebalance_at:
            self._assign()
        out: dict[Any, list[Any]] = {}
        for tp in self.tps:
            if tp not in self.assigned or tp in self.paused_tps or max_records <= 0:
                continue
            start = self.positions[tp]
            take = self.logs[tp][start : start + min(self.per_fetch, max_records)]
            if take:
                out[tp] = [
                    _Record(tp.topic, tp.partition, start + i, v) for i, v in enumerate(take)
                ]
                self.positions[tp] = start + len(take)
                max_records -= len(take)
        return out

    def assignment(self) -> set[Any]:
        return set(self.assigned)

    def pause(self, *tps: Any) -> None:
        self.paused_tps |= set(tps)

    def resume(self, *tps: Any) -> None:
        self.paused_tps -= set(tps)

    def paused(self) -> set[Any]:
        return set(self.paused_tps)

    def seek(self, tp: Any, offset: int) -> None:
        self.positions[tp] = offset

    def commit(self, offsets: dict[Any, Any]) -> None:
        self.committed.update({tp: o.offset for tp, o in offsets.items()})

    commit_async = commit

    def end_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return {tp: len(self.logs[tp]) for tp in tps}

    def position(self, tp: Any) -> int:
        return self.positions[tp]

    def close(self, autocommit: bool = False) -> None:
        pass


class _NoDeadLetters:
    def close(self, timeout: float = 0) -> None:
        pass


class _Outage:
    """The real store, refusing its first ``n`` batch writes (a Redis outage)."""

    def __init__(self, store: RedisFeatureStore, n: int) -> None:
        self.store, self.left = store, n

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def write_events(self, events: Any, **kwargs: Any) -> Any:
        if self.left > 0:
            self.left -= 1
            raise FeatureStoreError("redis write_events failed: (scripted outage)")
        return self.store.write_events(events, **kwargs)


def _scripted_run(redis_server: EmbeddedRedis, rebalance_at: set[int], outage: int) -> None:
    from crossrec.stream.worker import _rebalance_listener

    cfg = CrossRecConfig()
    cfg.stream.domains, cfg.stream.batch_size = ["books", "films"], 1_000
    cfg.stream.backoff_s = cfg.stream.max_backoff_s = 0.01
    cfg.feature_store.url, cfg.feature_store.key_prefix = redis_server.url, unique("scripted")
    events = events_for(1_200, users=100)
    logs = {p: [e.to_json() for e in events[p::2]] for p in (0, 1)}
    store = RedisFeatureStore.from_config(cfg.feature_store)
    consumer = ScriptedConsumer("events", logs, rebalance_at)

    class Worker(StreamWorker):
        def _make_consumer(self) -> Any:
            consumer.listener = _rebalance_listener(self)
            return consumer

        def _make_producer(self) -> Any:
            return _NoDeadLetters()

    worker = Worker(cfg, store=_Outage(store, outage) if outage else store)  # type: ignore[arg-type]
    worker.run(max_batches=40, idle_exit_s=0.2)
    assert sum(consumer.committed.values()) == 1_200  # committed = end offsets
    assert_exactly_once(store, events)
    assert worker.report.written == 1_200


def test_a_rebalance_between_two_polls_of_one_batch_loses_nothing(
    redis_server: EmbeddedRedis,
) -> None:
    # Poll 1 fetches offsets 0-99 of both partitions; poll 2 (topping the batch up) revokes,
    # reassigns and fetches 0-99 again from the committed offsets.
    _scripted_run(redis_server, rebalance_at={2}, outage=0)


def test_a_rebalance_inside_a_back_off_poll_loses_nothing(redis_server: EmbeddedRedis) -> None:
    # The first batch's write fails twice; the second back-off poll reassigns the partitions
    # un-paused and returns their records.
    _scripted_run(redis_server, rebalance_at={4}, outage=2)


# --------------------------------------------------------------------------- supervision
def test_a_dead_in_process_worker_turns_readiness_red_and_is_restarted(
    kafka_broker: EmbeddedKafka, redis_server: EmbeddedRedis
) -> None:
    from crossrec.inference.recommendations import RecommendationService
    from crossrec.stream.supervisor import WorkerSupervisor

    cfg = stream_config(kafka_broker, redis_server.url, poll_timeout_ms=200, max_backoff_s=2.0)
    cfg.stream.backoff_s = 1.5  # long enough to see readiness red before the restart
    cfg.serve.require_stream_worker = True
    store = RedisFeatureStore.from_config(cfg.feature_store)
    service = RecommendationService(cfg, store)
    workers: list[StreamWorker] = []

    def make_worker() -> StreamWorker:
        workers.append(StreamWorker(cfg, worker_index=len(workers)))
        return workers[-1]

    assert service.health().checks["stream_worker"].startswith("no heartbeat")
    supervisor = WorkerSupervisor(cfg, store=store, make_worker=make_worker, heartbeat_s=0.1)
    first, second = events_for(200), events_for(200, start=200)
    with supervisor:
        wait_for("readiness green", lambda: service.health().checks["stream_worker"] == "ok")
        produce(cfg, first)
        wait_for(
            "the first events committed", lambda: sum(workers[0].report.committed.values()) == 200
        )

        def broken(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("injected: the worker's client broke")

        workers[0]._process = broken  # type: ignore[method-assign]
        produce(cfg, second)
        wait_for("readiness red", lambda: service.health().checks["stream_worker"] != "ok")
        check = service.health().checks["stream_worker"]
        assert "down" in check
        assert "injected: the worker's client broke" in check
        assert service.health().status == "unavailable"
        wait_for("the restart", lambda: supervisor.restarts == 1 and supervisor.alive)
        wait_for("readiness green again", lambda: service.health().checks["stream_worker"] == "ok")
        # The new worker resumes from the committed offsets: nothing of the second batch lost.
        wait_for(
            "every event committed", lambda: sum(committed_offsets(cfg).values()) == 400, timeout=90
        )
    assert len(workers) == 2
    assert_exactly_once(store, first + second)
    # Stopped on purpose: the heartbeat says so, and readiness is red.
    assert "stopped" in service.health().checks["stream_worker"]
