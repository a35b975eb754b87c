"""A scripted session through the real stream and serving paths, for the demo: the trained
model is served on Ray Serve; events for one user go through the (embedded) Kafka-protocol
broker, a consumer worker, the Redis feature store and the update trigger; after each step the
user's recommendations are asked from the HTTP API. A cold-start query and a new item added
through the API show serving from text alone."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crossrec.config import CrossRecConfig
from crossrec.data.dataset import CrossDomainDataset
from crossrec.embedded import free_port
from crossrec.errors import CrossRecError
from crossrec.feature_store import open_feature_store
from crossrec.models.bundle import checkpoint_dirs
from crossrec.models.crossrec_model import MANIFEST_FILE
from crossrec.registry import publish_model
from crossrec.stream.events import Event, EventProducer
from crossrec.stream.services import stream_services
from crossrec.stream.worker import StreamWorker


def _pick_user(dataset: CrossDomainDataset, source: str, target: str) -> str:
    """A user with a long source history and some target history (the demo's protagonist)."""
    s, t = dataset.domain_index[source], dataset.domain_index[target]
    best, best_key = dataset.user_ids[0], (-1, -1)
    for user, seq in dataset.iter_sequences():
        doms = dataset.item_domain[seq]
        key = (int((doms == t).sum() >= 4), int((doms == s).sum()))
        if key > best_key:
            best, best_key = user, key
    return best


def call_api(
    url: str, method: str, path: str, body: Any = None, key: str | None = None
) -> tuple[int, Any]:
    """One JSON request to the API (stdlib only, with the API ``key`` when given); returns the
    status and the decoded body."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json"} if data is not None else {}
    if key is not None:
        headers["X-API-Key"] = key
    request = urllib.request.Request(url + path, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:  # noqa: S310
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _cold_start_texts(dataset: CrossDomainDataset, target: str) -> tuple[str, dict[str, Any], str]:
    """A text query, a new item and a near-duplicate of its title for the cold-start steps:
    fixed ones for the synthetic world, made from a catalogue title for real data."""
    if dataset.name.startswith("synthetic"):
        item = {"title": "Starship Nebula: The Last Voyage", "categories": ["Sci-Fi Adventure"]}
        return "a voyage to the stars aboard a starship", item, "The Last Voyage of the Starship"
    offset = int(dataset.offsets[dataset.domain_index[target]])
    model_item = dataset.items[offset]
    title = model_item.title or model_item.item_id
    item = {"title": f"{title} (new edition)", "categories": list(model_item.categories)}
    return title, item, f"{title}, new edition"


def _keep_serving(
    url: str,
    target: str,
    query: str,
    exit_after_s: float | None,
    echo: Callable[[str], None],
    key: str | None = None,
) -> None:
    """Keeps the API up until Ctrl-C / SIGTERM or ``exit_after_s``."""
    from crossrec.stream.runner import stop_on_signals

    until = "Ctrl-C stops it" if exit_after_s is None else f"for {exit_after_s:g}s"
    echo(f"       the API stays up at {url} ({until}); try:")
    auth = f"-H 'X-API-Key: {key}' " if key else ""
    echo(f"         curl {auth}'{url}/v1/users/demo-user/recommendations?domain={target}&k=5'")
    body = json.dumps({"domain": target, "query": query, "k": 5})
    echo(
        f"         curl -X POST {url}/v1/recommendations -H 'content-type: application/json' "
        f"-d '{body}'"
    )
    echo(f"         open {url}/docs for every endpoint")
    stop = threading.Event()
    deadline = None if exit_after_s is None else time.monotonic() + exit_after_s
    with stop_on_signals(stop.set):
        while not stop.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            stop.wait(0.5 if left is None else min(0.5, left))
    echo("       stopping: Serve, the stream worker, the broker and redis-server")


def run_stream_session(
    cfg: CrossRecConfig,
    dataset: CrossDomainDataset,
    models_dir: str | Path,
    echo: Callable[[str], None] = print,
    k: int = 5,
    online_step: str | None = None,
    exit_after_s: float | None = 0.0,
) -> dict[str, float]:
    """Serves the model, streams a scripted session and prints the user's recommendations as
    the API answers them; with ``online_step`` (its header line) the drift episode follows
    (`crossrec.apps.episode`). Then the API stays up for ``exit_after_s`` seconds (None:
    until Ctrl-C / SIGTERM) with the stream worker still consuming."""
    name, checkpoint = sorted(checkpoint_dirs(models_dir).items())[0]
    target = json.loads((checkpoint / MANIFEST_FILE).read_text()).get("target_domain") or name
    source = next((d for d in dataset.domains if d != target), target)
    real_user = _pick_user(dataset, source, target)
    seq = dataset.user_sequence(real_user)
    by_domain: dict[str, list[int]] = {source: [], target: []}
    for g in seq.tolist():
        domain = dataset.items[g].domain
        if domain in by_domain:
            by_domain[domain].append(g)
    books, films = by_domain[source][:6], by_domain[target]
    if source == target:  # one domain only: the first steps replay target items
        books, films = films[:4], films[4:]
    shown, held_out = films[:2], {dataset.items[g].item_id for g in films[2:]}
    user = "demo-user"

    cfg = cfg.model_copy(deep=True)
    cfg.stream.domains = list(dataset.domains)
    cfg.stream.group_id = "crossrec-demo"
    cfg.feature_store.key_prefix = f"crossrec-demo-{int(time.time())}"
    with stream_services(cfg) as services:
        cfg = services.cfg
        for line in services.describe():
            echo(f"       {line}")
        store = open_feature_store(cfg.feature_store)
        pointer = publish_model(store, models_dir)
        echo(f"       published model version {pointer.version}")
        worker = StreamWorker(cfg)
        thread = threading.Thread(target=worker.run, daemon=True, name="demo-stream-worker")
        thread.start()
        counter = {"n": 0}
        figures: dict[str, float] = {}
        from serving.auth import configured_key, describe_key, with_local_key
        from serving.launcher import serve_app

        cfg.serve.port = free_port()
        cfg, generated = with_local_key(cfg)
        key = configured_key(cfg.serve) if cfg.serve.auth == "key" else None

        def api(method: str, path: str, body: Any = None) -> tuple[int, Any]:
            return call_api(url, method, path, body, key)

        echo("       starting Ray Serve: encoder + recommender deployments ...")
        try:
            with (
                serve_app(cfg, models_dir) as url,
                EventProducer(cfg.stream, linger_ms=0) as producer,
            ):
                echo(f"       serving at {url} (OpenAPI at {url}/docs)")
                from crossrec.ray_runtime import metrics_url

                if (metrics := metrics_url()) is not None:
                    echo(f"       metrics (Prometheus, every replica's): {metrics}")
                if generated is not None:
                    for line in describe_key(url, generated, target):
                        echo(f"       {line}")

                def send(items: list[int], kind: str) -> float:
                    sent = time.perf_counter()
                    for g in items:
                        it = dataset.items[g]
                        counter["n"] += 1
                        producer.send(
                            Event(
                                event_id=f"demo-{counter['n']}",
                                user_id=user,
                                item_id=it.item_id,
                                domain=it.domain,
                                event_type=kind,
                                timestamp=time.time(),
                            )
                        )
                    producer.flush()
                    return sent

                def show(step: str, sent: float) -> None:
                    deadline = time.monotonic() + 120
                    while True:
                        vec = store.user_vector(user, target)
                        if vec is not None and vec.seq >= counter["n"]:
                            break
                        if time.monotonic() > deadline:
                            raise CrossRecError("the demo user's vector was not updated in 120 s")
                        time.sleep(0.01)
                    fresh_ms = (time.perf_counter() - sent) * 1000
                    _, history = store.histories([user], dataset.domains)[user]
                    echo(
                        f"       after {step}: {len(history)} events stored, vector by "
                        f"{vec.model_version}, fresh {fresh_ms:.0f} ms after the send"
                    )
                    status, body = api(
                        "GET", f"/v1/users/{user}/recommendations?domain={target}&k={k}"
                    )
                    if status != 200:
                        raise CrossRecError(f"the API answered {status}: {body}")
                    echo(
                        f"       GET /v1/users/{user}/recommendations?domain={target} "
                        f"(model {body['model_version']}, user vector "
                        f"{body['user_vector']}):"
                    )
                    for rank, item in enumerate(body["items"], start=1):
                        mark = "  <- in their later history" if item["item_id"] in held_out else ""
                        echo(f"         {rank}. {item['text']}{mark}")

                path = f"/v1/users/{user}/recommendations?domain={target}"
                status, _ = api("GET", path)
                echo(f"       before any event: {user} is unknown to the API ({status})")
                query, new_item, similar_text = _cold_start_texts(dataset, target)
                status, body = api(
                    "POST", "/v1/recommendations", {"domain": target, "query": query, "k": 3}
                )
                echo(f"       cold start from text alone, query {query!r}:")
                for rank, item in enumerate(body["items"], start=1):
                    echo(f"         {rank}. {item['text']}")
                echo(
                    f"       user {user} replays {real_user}'s first {len(books)} {source} "
                    f"(no {target} yet: cross-domain cold start)"
                )
                show(f"{len(books)} {source} events", send(books, "view"))
                echo(
                    f"       then {len(shown)} {target}: "
                    + "; ".join(dataset.items[g].title for g in shown)
                )
                show(f"{len(shown)} {target} events", send(shown, "purchase"))
                status, body = api("PUT", f"/v1/items/{target}/demo-new-1", new_item)
                echo(
                    f"       new item through the API: PUT /v1/items/{target}/demo-new-1 "
                    f"-> {status} ({body.get('text')})"
                )
                similar = {"domain": target, "k": 3, "text": similar_text}
                status, body = api("POST", "/v1/similar-items", similar)
                echo(
                    f"       similar to {similar_text!r}: "
                    + "; ".join(f"{i['text']} ({i['item_id']})" for i in body["items"])
                )
                producer.send_raw(b'{"event_id": "demo-bad", "user_id": 7}', key=b"demo")
                producer.flush()
                deadline = time.monotonic() + 60
                while worker.report.dead_letters < 1 and time.monotonic() < deadline:
                    time.sleep(0.05)
                echo(
                    f"       a malformed event went to {cfg.stream.dead_letter_topic} "
                    f"({worker.report.dead_letters} dead letter)"
                )
                top_pop = store.popularity(target, 3)
                echo(
                    "       popular in "
                    + target
                    + " now: "
                    + ", ".join(
                        dataset.items[dataset.item_index[(target, i)]].title for i, _ in top_pop
                    )
                )
                if online_step is not None:
                    from crossrec.apps.episode import run_drift_episode

                    echo(online_step)
                    figures = run_drift_episode(
                        cfg,
                        dataset,
                        store,
                        producer,
                        api,
                        target,
                        Path(models_dir).parent / "registry",
                        echo,
                    )
                if exit_after_s is None or exit_after_s > 0:
                    _keep_serving(url, target, query, exit_after_s, echo, key)
        finally:
            worker.stop()
            thread.join(60)
            store.close()
    return {"events": counter["n"], "dead_letters": worker.report.dead_letters, **figures}
