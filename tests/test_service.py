"""`RecommendationService` without Ray or HTTP, on a real redis-server: stored vs recomputed
user vectors, items shared between replicas through the feature store, and version swaps."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from crossrec.config import CrossRecConfig
from crossrec.data.dataset import CrossDomainDataset
from crossrec.data.events import Event
from crossrec.embedded import EmbeddedRedis
from crossrec.errors import RequestError, ServiceUnavailableError
from crossrec.feature_store.redis_store import RedisFeatureStore
from crossrec.inference.recommendations import RecommendationService
from crossrec.inference.schemas import SimilarItemsRequest
from crossrec.models.crossrec_model import CrossRecModel
from crossrec.registry import publish_model
from crossrec.stream.updates import UserVectorUpdater
from tests.conftest import SMALL_WORLD, unique

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def version(small_world: CrossDomainDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = CrossRecConfig()
    cfg.data.synthetic = SMALL_WORLD
    torch.manual_seed(0)
    model = CrossRecModel.for_dataset(small_world, cfg, text_vectors=torch.randn(400, 384))
    model.target_domain = "films"
    root = tmp_path_factory.mktemp("service-version")
    model.save_pretrained(root / "films")
    return root


@pytest.fixture
def cfg(redis_server: EmbeddedRedis) -> CrossRecConfig:
    cfg = CrossRecConfig()
    cfg.feature_store.url = redis_server.url
    cfg.feature_store.key_prefix = unique("service")
    return cfg


def _service(cfg: CrossRecConfig, version: Path) -> RecommendationService:
    service = RecommendationService(cfg, RedisFeatureStore.from_config(cfg.feature_store))
    service.swap(service.load_version(str(version)))
    return service


def test_a_stored_vector_is_used_only_while_it_is_current(
    cfg: CrossRecConfig, version: Path, small_world: CrossDomainDataset
) -> None:
    service = _service(cfg, version)
    store = service.store
    with pytest.raises(RequestError, match="no events stored for user 'u-1'"):
        service.recommend_user("u-1", "films")
    now = time.time()
    books = [it for it in small_world.items if it.domain == "books"][:5]
    store.write_events(
        [
            Event(
                event_id=f"s-{n}",
                user_id="u-1",
                item_id=it.item_id,
                domain="books",
                event_type="view",
                timestamp=now - 10 + n,
            )
            for n, it in enumerate(books)
        ]
    )
    computed = service.recommend_user("u-1", "films", k=10)
    assert computed.user_vector == "computed"
    publish_model(store, version)
    assert UserVectorUpdater(store, cfg).run_once().vectors == 1
    stored = service.recommend_user("u-1", "films", k=10)
    assert stored.user_vector == "stored"
    assert [i.item_id for i in stored.items] == [i.item_id for i in computed.items]
    # A newer event makes the stored vector stale: serving recomputes until the trigger runs.
    store.write_events(
        [
            Event(
                event_id="s-new",
                user_id="u-1",
                item_id=books[0].item_id,
                domain="books",
                event_type="view",
                timestamp=now,
            )
        ]
    )
    assert service.recommend_user("u-1", "films").user_vector == "computed"


def test_vectors_of_an_older_version_are_recomputed_on_first_read(
    cfg: CrossRecConfig, version: Path, small_world: CrossDomainDataset, tmp_path: Path
) -> None:
    """After a new version is promoted, a stored vector made by the old one is not used: the
    request computes the user's vector with the new version and marks the user, and the update
    trigger (following the pointer) stores a vector by the new version for the next requests."""
    torch.manual_seed(1)
    other = CrossRecModel.for_dataset(small_world, cfg, text_vectors=torch.randn(400, 384))
    other.target_domain = "films"
    other.save_pretrained(tmp_path / "v2" / "films")
    store = RedisFeatureStore.from_config(cfg.feature_store)
    v1 = publish_model(store, version)
    books = [it for it in small_world.items if it.domain == "books"][:4]
    store.write_events(
        [
            Event(
                event_id=f"lazy-{n}",
                user_id="u-lazy",
                item_id=it.item_id,
                domain="books",
                event_type="view",
                timestamp=time.time() - 9 + n,
            )
            for n, it in enumerate(books)
        ]
    )
    updater = UserVectorUpdater(store, cfg)
    assert updater.run_once().vectors == 1
    stored = store.user_vector("u-lazy", "films")
    assert stored is not None
    assert stored.model_version == v1.version
    v2 = publish_model(store, tmp_path / "v2")
    service = _service(cfg, tmp_path / "v2")
    first = service.recommend_user("u-lazy", "films", k=10)
    assert first.user_vector == "computed"
    assert first.model_version == v2.version
    assert "u-lazy" in {u for u, _ in store.dirty_users(100)}
    updater.refresh_model(force=True)
    assert updater.run_once().vectors == 1
    again = store.user_vector("u-lazy", "films")
    assert again is not None
    assert again.model_version == v2.version
    second = service.recommend_user("u-lazy", "films", k=10)
    assert second.user_vector == "stored"
    assert [i.item_id for i in second.items] == [i.item_id for i in first.items]
    store.close()


def test_items_added_on_one_replica_reach_the_others_and_new_versions(
    cfg: CrossRecConfig, version: Path
) -> None:
    a, b = _service(cfg, version), _service(cfg, version)
    text_vector = np.random.default_rng(0).standard_normal(384).astype(np.float32)
    added = a.upsert_item("films", "fresh-1", "A Brand New Film", text_vector)
    assert added.created
    query = SimilarItemsRequest(domain="films", item={"domain": "films", "item_id": "fresh-1"})
    assert a.similar_items(query).items
    with pytest.raises(RequestError, match="no item 'fresh-1'"):
        b.similar_items(query)
    assert b.sync_new_items() == 1
    assert b.model.catalogue("films").size == a.model.catalogue("films").size == 161
    # Same ranking on both replicas.
    anchor = SimilarItemsRequest(domain="films", item={"domain": "films", "item_id": "f00003"})
    assert [i.item_id for i in a.similar_items(anchor).items] == [
        i.item_id for i in b.similar_items(anchor).items
    ]
    # A version loaded later (a swap, a new replica) replays the queue.
    c = _service(cfg, version)
    assert c.model.item_gid("films", "fresh-1") is not None
    # Re-texting changes the item in place, everywhere.
    again = a.upsert_item("films", "fresh-1", "A Renamed Film", text_vector * -1)
    assert not again.created
    b.sync_new_items()
    gid = b.model.item_gid("films", "fresh-1")
    assert gid is not None
    assert b.model.model_for("films").item_tower.texts[gid] == "A Renamed Film"


def test_requests_finish_on_the_version_they_started_with(
    cfg: CrossRecConfig, version: Path
) -> None:
    service = RecommendationService(cfg, RedisFeatureStore.from_config(cfg.feature_store))
    with pytest.raises(ServiceUnavailableError, match="no model version loaded"):
        service.info()
    first = service.load_version(str(version))
    service.swap(first)
    catalogue = service.model.catalogue("films")
    second = service.load_version(str(version), follows_pointer=False)
    assert service.swap(second) == first.version
    # The old snapshot stays whole for a request that still holds it.
    assert catalogue.size == 160
    assert service.info().follows_pointer is False
    with pytest.raises(RequestError, match="k must be between 1 and 200, got 0"):
        service.check_k(0)


def test_the_api_runs_without_ray(cfg: CrossRecConfig, version: Path) -> None:
    """`create_api` over `LocalBackend`: the same app in any ASGI server, encoding with the
    version's own encoder in the process."""
    from fastapi.testclient import TestClient

    from serving.api import create_api
    from serving.local import LocalBackend

    cfg.serve.api_key = "local-key"
    backend = LocalBackend(_service(cfg, version))
    with TestClient(create_api(backend, cfg)) as client:
        info = client.get("/v1/model")
        assert info.status_code == 200
        assert info.headers["X-Model-Version"] == info.json()["model_version"]
        body = {"domain": "films", "query": "a voyage to the stars", "k": 3}
        reply = client.post("/v1/recommendations", json=body)
        assert reply.status_code == 200
        assert len(reply.json()["items"]) == 3
        item = {"title": "Local Film"}
        assert client.put("/v1/items/films/local-1", json=item).status_code == 401
        added = client.put("/v1/items/films/local-1", json=item, headers={"X-API-Key": "local-key"})
        assert added.status_code == 201
        assert client.get("/v1/model").json()["domains"]["films"] == 161
    backend.close()


def test_credentials_by_default_and_only_by_explicit_choice_none(
    cfg: CrossRecConfig,
    version: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from fastapi.testclient import TestClient

    from crossrec.errors import CrossRecError
    from serving.api import create_api
    from serving.auth import API_KEY_ENV, READ_API_KEY_ENV, with_local_key
    from serving.local import LocalBackend

    monkeypatch.delenv(API_KEY_ENV, raising=False)
    monkeypatch.delenv(READ_API_KEY_ENV, raising=False)
    backend = LocalBackend(_service(cfg, version))
    # auth 'key' (the default) and no key anywhere: the app refuses to exist.
    assert cfg.serve.auth == "key"
    with pytest.raises(
        CrossRecError, match=r"no API key is set: set serve.api_key or \$CROSSREC_API_KEY"
    ):
        create_api(backend, cfg)
    # A local run generates one (crossrec serve / demo print it once).
    keyed, generated = with_local_key(cfg)
    assert generated is not None
    assert len(generated) >= 32
    assert keyed.serve.api_key == generated
    assert cfg.serve.api_key is None  # the caller's config is left alone
    assert with_local_key(keyed) == (keyed, None)
    keyed.serve.read_api_key = "reader"
    item = {"title": "Keyed Film"}
    with TestClient(create_api(backend, keyed)) as client:
        path = "/v1/users/nobody/recommendations?domain=films"
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"X-API-Key": "nope"}).status_code == 403
        assert client.get(path, headers={"X-API-Key": "reader"}).status_code == 404  # let in
        assert client.get(path, headers={"X-API-Key": generated}).status_code == 404
        reply = client.put("/v1/items/films/k-1", json=item, headers={"X-API-Key": "reader"})
        assert reply.status_code == 403  # the read key writes nothing
        assert client.put("/v1/items/films/k-1", json=item).status_code == 401
        assert client.get("/v1/model").json()["domains"]["films"] == 160  # nothing was added
        assert (
            client.post(
                "/v1/recommendations", json={"domain": "films", "query": "stars", "k": 2}
            ).status_code
            == 200
        )
    # auth 'none' is an explicit choice: everything is open, and the app says so at start.
    open_cfg = cfg.model_copy(deep=True)
    open_cfg.serve.auth = "none"
    with caplog.at_level("WARNING", logger="serving.auth"):
        app = create_api(backend, open_cfg)
    assert "serve.auth is 'none'" in caplog.text
    with TestClient(app) as client:
        assert client.put("/v1/items/films/open-1", json=item).status_code == 201
        assert client.get("/v1/users/nobody/recommendations?domain=films").status_code == 404
    backend.close()


def test_a_chunked_body_over_the_limit_gets_413(cfg: CrossRecConfig, version: Path) -> None:
    from fastapi.testclient import TestClient

    from serving.api import create_api
    from serving.local import LocalBackend

    cfg.serve.api_key, cfg.serve.max_body_bytes = "k", 4096
    backend = LocalBackend(_service(cfg, version))

    def chunks() -> Iterator[bytes]:  # no Content-Length: the body streams in
        yield b'{"domain": "films", "query": "'
        for _ in range(64):
            yield b"x" * 256
        yield b'", "k": 3}'

    with TestClient(create_api(backend, cfg)) as client:
        reply = client.post(
            "/v1/recommendations", content=chunks(), headers={"content-type": "application/json"}
        )
        assert reply.status_code == 413, reply.text
        assert reply.json()["error"]["code"] == "body_too_large"
        assert "serve.max_body_bytes=4096" in reply.json()["error"]["message"]
        small = client.post("/v1/recommendations", json={"domain": "films", "query": "x", "k": 1})
        assert small.status_code == 200
    backend.close()


def test_hostile_requests_get_a_clear_4xx_and_errors_keep_their_internals(
    cfg: CrossRecConfig,
    version: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Metacharacter and 10 kB ids, deep nesting and oversized bodies each get a 4xx naming
    what was wrong; an unexpected failure answers 500 without its exception text, which stays
    in the replica's log under the reference the client gets."""
    from urllib.parse import quote

    from fastapi.testclient import TestClient

    from serving.api import create_api
    from serving.local import LocalBackend

    cfg.serve.api_key, cfg.serve.max_body_bytes = "k", 64 * 1024
    key = {"X-API-Key": "k"}
    service = _service(cfg, version)
    backend = LocalBackend(service)
    with TestClient(create_api(backend, cfg), raise_server_exceptions=False) as client:
        before = client.get("/v1/model").json()["domains"]["films"]
        for user in ("a{b}:*", "new\nline", "x" * 10_000):
            reply = client.get(
                f"/v1/users/{quote(user, safe='')}/recommendations",
                params={"domain": "films"},
                headers=key,
            )
            assert reply.status_code in (404, 422), (user[:20], reply.text)
            assert reply.json()["error"]["field"] == "user_id"  # unknown, or refused by form
        long_id = client.put("/v1/items/films/" + "y" * 10_000, json={"title": "t"}, headers=key)
        assert long_id.status_code == 422
        assert "item_id" in long_id.json()["error"]["message"]
        deep = b"[" * 20_000 + b'"x"' + b"]" * 20_000
        nested = client.post(
            "/v1/recommendations",
            content=b'{"domain": "films", "k": 3, "query": ' + deep + b"}",
            headers={"content-type": "application/json"},
        )
        assert nested.status_code == 400, nested.text
        assert nested.json()["error"]["code"] == "malformed_json"
        assert "nested deeper" in nested.json()["error"]["message"]
        big = client.post("/v1/events", json={"events": [{"x": "y" * 1024}] * 100}, headers=key)
        assert big.status_code == 413
        assert big.json()["error"]["code"] == "body_too_large"
        assert client.get("/v1/model").json()["domains"]["films"] == before  # nothing written

        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("internal detail /srv/secret-path")

        monkeypatch.setattr(service, "info", broken)
        with caplog.at_level("ERROR", logger="serving.api"):
            reply = client.get("/v1/model")
        assert reply.status_code == 500
        message = reply.json()["error"]["message"]
        assert "secret-path" not in message
        reference = message.split("reference ")[1].split()[0]
        assert reference in caplog.text
        assert "secret-path" in caplog.text
    backend.close()
