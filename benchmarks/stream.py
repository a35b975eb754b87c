"""Stream throughput and freshness on embedded services (a real redis-server and the
Kafka-protocol broker on loopback).

    python benchmarks/stream.py [--quick] [--json FILE] [--events N] [--probes N] [--set a.b=c]

* **events/s per worker**: N events are produced first; one `StreamWorker` then consumes them
  (validate -> Redis pipeline -> commit). The rate counts from its first batch to its last
  commit, so joining the group is left out. No model is published in this phase, so the rate
  is ingestion alone.
* **freshness**: a model version (the synthetic world's catalogue; untrained weights cost the
  same to run as trained ones) is published and a worker runs; each probe sends one event for a
  user and waits for that user's stored vector to include it. Produce-to-vector latency, p50 and
  p99, in milliseconds.

JSON: ``{"events_per_s_per_worker": ..., "freshness_ms": {"p50": ..., "p99": ...}, "events": N}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossrec.config import CrossRecConfig, load_config
from crossrec.data.loaders import load_dataset
from crossrec.errors import CrossRecError
from crossrec.feature_store import open_feature_store
from crossrec.models.crossrec_model import CrossRecModel
from crossrec.registry import publish_model
from crossrec.stream.events import Event, EventProducer
from crossrec.stream.services import stream_services
from crossrec.stream.worker import StreamWorker


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise CrossRecError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.002)


def _start(worker: StreamWorker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return thread


def throughput(cfg: CrossRecConfig, n: int, domains: list[str]) -> dict[str, float]:
    now = time.time()
    rng = random.Random(0)
    with EventProducer(cfg.stream) as producer:
        for i in range(n):
            producer.send(
                Event(
                    event_id=f"tp-{i}",
                    user_id=f"u{rng.randrange(5000)}",
                    item_id=f"i{rng.randrange(2000)}",
                    domain=rng.choice(domains),
                    event_type="view",
                    timestamp=now - 60 + i * 1e-4,
                )
            )
    cfg.stream.group_id = "bench-throughput"
    worker = StreamWorker(cfg)
    thread = _start(worker)
    try:
        _wait(lambda: worker.report.records > 0, 120, "the first batch")
        t0, first = time.perf_counter(), worker.report.records
        _wait(lambda: sum(worker.report.committed.values()) >= n, 600, f"{n:,} events committed")
        seconds = time.perf_counter() - t0
    finally:
        worker.stop()
        thread.join(60)
    return {
        "events_per_s_per_worker": (n - first) / seconds,
        "seconds": seconds,
        "written": worker.report.written,
        "batches": worker.report.batches,
    }


def freshness(
    cfg: CrossRecConfig, probes: int, workdir: Path, domains: list[str]
) -> dict[str, float]:
    dataset = load_dataset(cfg.data)
    torch.manual_seed(0)
    model = CrossRecModel.for_dataset(
        dataset, cfg, text_vectors=torch.randn(dataset.num_items, 384)
    )
    model.target_domain = dataset.domains[-1]
    model.save_pretrained(workdir / "version" / model.target_domain)
    store = open_feature_store(cfg.feature_store)
    publish_model(store, workdir / "version")
    items = [(it.domain, it.item_id) for it in dataset.items]
    cfg.stream.group_id = "bench-freshness"
    worker = StreamWorker(cfg)
    thread = _start(worker)
    latencies: list[float] = []
    rng = random.Random(1)
    try:
        with EventProducer(cfg.stream, linger_ms=0) as producer:
            # Warm-up: group join, model load, first vector.
            warm = Event(
                event_id="warm",
                user_id="warm",
                item_id=items[0][1],
                domain=items[0][0],
                event_type="view",
                timestamp=time.time(),
            )
            producer.send(warm)
            producer.flush()
            _wait(
                lambda: store.user_vector("warm", model.target_domain) is not None,
                120,
                "the warm-up vector",
            )
            for p in range(probes):
                user = f"probe-{rng.randrange(200)}"
                before = store.user_vector(user, model.target_domain)
                seq = -1 if before is None else before.seq
                domain, item = rng.choice(items)
                sent = time.perf_counter()
                producer.send(
                    Event(
                        event_id=f"probe-{p}",
                        user_id=user,
                        item_id=item,
                        domain=domain,
                        event_type="click",
                        timestamp=time.time(),
                    )
                )
                producer.flush()

                def fresh(user: str = user, seq: int = seq) -> bool:
                    vec = store.user_vector(user, model.target_domain)
                    return vec is not None and vec.seq > seq

                _wait(fresh, 30, f"probe {p}'s vector")
                latencies.append((time.perf_counter() - sent) * 1000.0)
    finally:
        worker.stop()
        thread.join(60)
        store.close()
    arr = np.asarray(latencies)
    return {
        "p50": float(np.percentile(arr, 50)),
        "p99": float(np.percentile(arr, 99)),
        "max": float(arr.max()),
        "probes": len(latencies),
    }


def table(result: dict[str, Any]) -> str:
    f = result["freshness_ms"]
    lines = [
        "| measure | value |",
        "|---|---|",
        f"| events produced | {result['events']:,} |",
        f"| events/s per worker (validate, Redis pipeline, commit) | "
        f"{result['events_per_s_per_worker']:,.0f} |",
        f"| freshness p50, produce -> user vector (ms) | {f['p50']:.1f} |",
        f"| freshness p99 (ms) | {f['p99']:.1f} |",
        f"| freshness max (ms) | {f['max']:.1f} |",
    ]
    return "\n".join(lines)


def load_charts() -> Any:
    """``benchmarks/charts.py``, beside this script (imported only when a chart is drawn)."""
    import importlib

    sys.path.insert(0, str(Path(__file__).parent))
    return importlib.import_module("charts")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20k events, 100 probes.")
    parser.add_argument("--events", type=int, help="Events for the throughput phase.")
    parser.add_argument("--probes", type=int, help="Freshness probes.")
    parser.add_argument("--json", type=Path, help="Write the result to this JSON file.")
    parser.add_argument(
        "--batch-sizes",
        help="Throughput at each of these stream.batch_size "
        "values too (comma-separated), e.g. 100,500,2000.",
    )
    parser.add_argument("--plot", type=Path, help="Draw throughput against batch size (PNG).")
    parser.add_argument("--set", action="append", default=[], help="Config override a.b=c.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.ERROR)
    n = args.events or (20_000 if args.quick else 100_000)
    probes = args.probes or (100 if args.quick else 500)
    try:
        cfg = load_config(
            None,
            [
                "stream.bootstrap_servers=null",
                "feature_store.url=null",
                "data.synthetic.num_users=600",
                *args.set,
            ],
        )
    except CrossRecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    domains = list(cfg.data.synthetic.domains)
    cfg.stream.domains = domains
    with (
        tempfile.TemporaryDirectory(prefix="crossrec-stream-bench-") as tmp,
        stream_services(cfg) as services,
    ):
        run_cfg = services.cfg
        print(
            f"throughput: {n:,} events, 1 worker, batch_size={run_cfg.stream.batch_size}",
            flush=True,
        )
        tp = throughput(run_cfg.model_copy(deep=True), n, domains)
        print(f"  {tp['events_per_s_per_worker']:,.0f} events/s", flush=True)
        by_batch = [
            {
                "batch_size": run_cfg.stream.batch_size,
                "events_per_s_per_worker": tp["events_per_s_per_worker"],
            }
        ]
        for size in [int(b) for b in (args.batch_sizes or "").split(",") if b.strip()]:
            if size == run_cfg.stream.batch_size:
                continue
            # Each size on its own topic and keys: a fresh backlog of new events, as above.
            sized = run_cfg.model_copy(deep=True)
            sized.stream.batch_size = size
            sized.stream.topic = f"{run_cfg.stream.topic}-batch-{size}"
            sized.feature_store.key_prefix = f"{run_cfg.feature_store.key_prefix}-batch-{size}"
            if services.kafka is not None:
                services.kafka.create_topic(sized.stream.topic, run_cfg.stream.partitions)
            rate = throughput(sized, n, domains)["events_per_s_per_worker"]
            by_batch.append({"batch_size": size, "events_per_s_per_worker": rate})
            print(f"  batch_size={size}: {rate:,.0f} events/s", flush=True)
        print(f"freshness: {probes} probes, updates.mode={run_cfg.stream.updates.mode}", flush=True)
        fr = freshness(run_cfg.model_copy(deep=True), probes, Path(tmp), domains)
    result = {
        "events_per_s_per_worker": tp["events_per_s_per_worker"],
        "freshness_ms": {"p50": fr["p50"], "p99": fr["p99"], "max": fr["max"]},
        "events": n,
        "probes": fr["probes"],
        "batch_size": cfg.stream.batch_size,
        "by_batch_size": sorted(by_batch, key=lambda r: r["batch_size"]),
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    if args.plot:
        load_charts().stream_chart(result["by_batch_size"], args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
