"""A scripted session through the real stream path, for the demo: events for one user go
through the (embedded) Kafka-protocol broker, a consumer worker, the Redis feature store and the
update trigger, and the user's stored state is shown after each step."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from crossrec.config import CrossRecConfig
from crossrec.data.dataset import CrossDomainDataset
from crossrec.errors import CrossRecError
from crossrec.feature_store.redis_store import RedisFeatureStore
from crossrec.models.bundle import ModelBundle
from crossrec.stream.events import Event, EventProducer
from crossrec.stream.runner import publish_model
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


def run_stream_session(
    cfg: CrossRecConfig,
    dataset: CrossDomainDataset,
    models_dir: str | Path,
    echo: Callable[[str], None] = print,
    k: int = 5,
) -> dict[str, int]:
    """Streams a scripted session and prints the user's state and recommendations."""
    bundle = ModelBundle.load(models_dir)
    target = sorted(bundle.models)[0]
    model = bundle.models[target]
    source = next(d for d in dataset.domains if d != target)
    real_user = _pick_user(dataset, source, target)
    seq = dataset.user_sequence(real_user)
    by_domain: dict[str, list[int]] = {source: [], target: []}
    for g in seq.tolist():
        domain = dataset.items[g].domain
        if domain in by_domain:
            by_domain[domain].append(g)
    books, films = by_domain[source][:6], by_domain[target]
    shown, held_out = films[:2], set(films[2:])
    user = "demo-user"

    cfg = cfg.model_copy(deep=True)
    cfg.stream.domains = list(dataset.domains)
    cfg.stream.group_id = "crossrec-demo"
    cfg.feature_store.key_prefix = f"crossrec-demo-{int(time.time())}"
    with stream_services(cfg) as services:
        cfg = services.cfg
        for line in services.describe():
            echo(f"       {line}")
        store = RedisFeatureStore.from_config(cfg.feature_store)
        pointer = publish_model(store, models_dir)
        echo(f"       published model version {pointer.version}")
        worker = StreamWorker(cfg)
        thread = threading.Thread(target=worker.run, daemon=True, name="demo-stream-worker")
        thread.start()
        counter = {"n": 0}
        try:
            with EventProducer(cfg.stream, linger_ms=0) as producer:

                def send(items: list[int], kind: str) -> float:
                    sent = time.perf_counter()
                    for g in items:
                        it = dataset.items[g]
                        counter["n"] += 1
                        producer.send(Event(event_id=f"demo-{counter['n']}", user_id=user,
                                            item_id=it.item_id, domain=it.domain, event_type=kind,
                                            timestamp=time.time()))  # fmt: skip
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
                    seen = {model.key_index[(h.domain, h.item_id)] for h in history
                            if (h.domain, h.item_id) in model.key_index}  # fmt: skip
                    ids = model.domain_items(target)
                    scores = model.item_matrix(target) @ torch.from_numpy(vec.vector)
                    scores[torch.isin(ids, torch.tensor(sorted(seen), dtype=ids.dtype))] = float(
                        "-inf"
                    )
                    top = ids[scores.topk(k).indices].tolist()
                    for rank, g in enumerate(top, start=1):
                        mark = "  <- in their later history" if g in held_out else ""
                        echo(f"         {rank}. {dataset.items[g].title}{mark}")

                echo(f"       user {user} replays {real_user}'s first {len(books)} {source} "
                     f"(no {target} yet: cross-domain cold start)")  # fmt: skip
                show(f"{len(books)} {source} events", send(books, "view"))
                echo(f"       then {len(shown)} {target}: "
                     + "; ".join(dataset.items[g].title for g in shown))  # fmt: skip
                show(f"{len(shown)} {target} events", send(shown, "purchase"))
                producer.send_raw(b'{"event_id": "demo-bad", "user_id": 7}', key=b"demo")
                producer.flush()
            deadline = time.monotonic() + 60
            while worker.report.dead_letters < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            echo(f"       a malformed event went to {cfg.stream.dead_letter_topic} "
                 f"({worker.report.dead_letters} dead letter)")  # fmt: skip
            top_pop = store.popularity(target, 3)
            echo("       popular in " + target + " now: " + ", ".join(
                dataset.items[dataset.item_index[(target, i)]].title for i, _ in top_pop
            ))  # fmt: skip
        finally:
            worker.stop()
            thread.join(60)
            store.close()
    return {"events": counter["n"], "dead_letters": worker.report.dead_letters}
