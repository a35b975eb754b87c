"""Serving latency and throughput: the recommendation endpoint on Ray Serve, and the same
recommender logic called in-process, under closed-loop load.

    python benchmarks/serving.py [--quick] [--json FILE] [--clients 1,8,32] [--seconds S]
                                 [--set a.b=c]

A model version over the synthetic world's catalogue is published to an embedded redis-server
(untrained weights cost the same to run as trained ones), a known user gets 20 events and a
stored vector (the steady state the stream keeps), and C client threads each send a request,
wait for the answer, and send the next one, for S seconds after a warm-up:

* ``serve``: ``GET /v1/users/{user}/recommendations?domain=films&k=10`` over HTTP (keep-alive
  connections) through the Serve proxy to the recommender replica, which reads the user's state
  from Redis on every request.
* ``in_process``: `RecommendationService.recommend_user` called directly by the client threads
  (the same Redis read and ranking, no HTTP, no Serve).

Prints p50/p95/p99 latency and QPS per mode and client count, and the serve / in-process p50
ratio. JSON: ``{"rows": [{"mode", "clients", "requests", "p50_ms", "p95_ms", "p99_ms",
"qps"}, ...]}``. The clients run on the same machine as the server, so on a small machine they
take CPU from it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch

from crossrec.config import CrossRecConfig, load_config
from crossrec.data.events import Event
from crossrec.data.loaders import load_dataset
from crossrec.embedded import free_port
from crossrec.errors import CrossRecError
from crossrec.feature_store import open_feature_store
from crossrec.inference.recommendations import RecommendationService
from crossrec.models.crossrec_model import CrossRecModel
from crossrec.registry import publish_model
from crossrec.stream.services import stream_services
from crossrec.stream.updates import UserVectorUpdater

USER = "bench-user"
# Run as a script, this file's folder comes first on sys.path and its name would shadow the
# `serving` package.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def summarize(samples: list[float], seconds: float) -> dict[str, float]:
    flat = np.asarray(samples) * 1000
    if flat.size == 0:
        raise CrossRecError("no request finished inside the measuring window")
    return {
        "requests": int(flat.size),
        "p50_ms": round(float(np.percentile(flat, 50)), 2),
        "p95_ms": round(float(np.percentile(flat, 95)), 2),
        "p99_ms": round(float(np.percentile(flat, 99)), 2),
        "qps": round(flat.size / seconds, 1),
    }


def closed_loop_threads(
    call: Callable[[], object], clients: int, seconds: float, warmup_s: float
) -> dict[str, float]:
    """``clients`` threads call in a loop; latencies after the warm-up are kept."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    measure_from = time.perf_counter() + warmup_s
    stop_at = measure_from + seconds

    def run(slot: int) -> None:
        try:
            mine = latencies[slot]
            for _ in range(10_000_000):
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                call()
                if t0 >= measure_from:
                    mine.append(time.perf_counter() - t0)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + warmup_s + 120)
    if errors:
        raise CrossRecError(f"a client failed: {errors[0]!r}") from errors[0]
    return summarize([x for lane in latencies for x in lane], seconds)


def closed_loop_http(
    url: str, clients: int, seconds: float, warmup_s: float, key: str = ""
) -> dict[str, float]:
    """``clients`` keep-alive HTTP/1.1 connections, each sending the next request when the
    last answer is in, driven by one asyncio loop (a light client: on a 2-core machine every
    cycle the client spends is taken from the server)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = f"{parts.path}/v1/users/{USER}/recommendations?domain=films&k=10"
    auth = f"X-API-Key: {key}\r\n" if key else ""
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}\r\n".encode()

    async def client(samples: list[float], measure_from: float, stop_at: float) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for _ in range(10_000_000):
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length)
                if status != 200:
                    raise CrossRecError(f"HTTP {status}: {body[:200]!r}")
                if t0 >= measure_from:
                    samples.append(time.perf_counter() - t0)
        finally:
            writer.close()

    async def run() -> list[float]:
        samples: list[float] = []
        measure_from = time.perf_counter() + warmup_s
        stop_at = measure_from + seconds
        await asyncio.gather(*(client(samples, measure_from, stop_at) for _ in range(clients)))
        return samples

    return summarize(asyncio.run(run()), seconds)


def prepare(cfg: CrossRecConfig, root: Path) -> Path:
    """A model version over the synthetic catalogue, a user with 20 events and a stored
    vector; returns the version's directory."""
    dataset = load_dataset(cfg.data)
    torch.manual_seed(0)
    model = CrossRecModel.for_dataset(dataset, cfg)
    model.target_domain = dataset.domains[-1]
    if cfg.model.ranker == "hybrid":
        # What training attaches: co-visitation counts and the hybrid ranker (untrained here).
        from crossrec.models.hybrid import FEATURES, CoVisitation, HybridRanker

        sequences = [dataset.user_sequence(u) for u in range(dataset.num_users)]
        model.covis = CoVisitation.from_sequences(sequences, model.num_items)
        model.hybrid = HybridRanker(len(FEATURES), cfg.model.hybrid_hidden)
    version = root / "version"
    model.save_pretrained(version / model.target_domain)
    store = open_feature_store(cfg.feature_store)
    try:
        publish_model(store, version)
        now = time.time()
        events = [
            Event(
                event_id=f"bench-{n}",
                user_id=USER,
                item_id=it.item_id,
                domain=it.domain,
                event_type="view",
                timestamp=now - 100 + n,
            )
            for n, it in enumerate(dataset.items[:: max(1, dataset.num_items // 20)][:20])
        ]
        store.write_events(events)
        report = UserVectorUpdater(store, cfg).run_once()
        if report.vectors < 1:
            raise CrossRecError("the benchmark user's vector was not stored")
    finally:
        store.close()
    return version


def load_charts() -> Any:
    """``benchmarks/charts.py``, beside this script (imported only when a chart is drawn)."""
    import importlib

    sys.path.insert(0, str(Path(__file__).parent))
    return importlib.import_module("charts")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s per level instead of 10 s.")
    parser.add_argument("--json", type=Path, help="Also write the rows to this file.")
    parser.add_argument("--plot", type=Path, help="Draw latency and QPS against clients (PNG).")
    parser.add_argument("--clients", default="1,8,32", help="Client counts (comma-separated).")
    parser.add_argument("--seconds", type=float, help="Measuring time per level.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="a.b=c")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    warmup = 1.0 if args.quick else 2.0
    levels = [int(c) for c in args.clients.split(",")]
    # The tuned layout for a 2-core machine: HAProxy ingress, two recommender replicas (half a
    # CPU each) beside the encoder. `--set` overrides it (e.g. serve.haproxy=false).
    tuned = ["serve.haproxy=true", "serve.recommender.num_replicas=2"]
    cfg = load_config(None, overrides=tuned + args.overrides)
    print(
        f"serve settings: haproxy={cfg.serve.haproxy} recommender replicas="
        f"{cfg.serve.recommender.num_replicas} x {cfg.serve.recommender.num_cpus} CPU, "
        f"torch threads {cfg.serve.recommender.torch_threads}",
        flush=True,
    )
    cfg.serve.port = free_port()
    # The key check is part of what is measured: user-keyed reads need a key by default.
    from serving.auth import configured_key, with_local_key

    cfg, _ = with_local_key(cfg)
    key = configured_key(cfg.serve) or ""
    cfg.feature_store.key_prefix = f"bench-serving-{int(time.time())}"
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, stream_services(cfg) as services:
        cfg = services.cfg
        version = prepare(cfg, Path(tmp))

        # In-process: the replica's logic without HTTP or Serve.
        torch.set_num_threads(cfg.serve.recommender.torch_threads or torch.get_num_threads())
        store = open_feature_store(cfg.feature_store)
        service = RecommendationService(cfg, store)
        service.swap(service.load_version(str(version)))
        first = service.recommend_user(USER, "films", k=10)
        if first.user_vector != "stored":
            raise CrossRecError("the in-process path did not read the stored user vector")
        for clients in levels:
            row: dict[str, Any] = {"mode": "in_process", "clients": clients}
            row.update(
                closed_loop_threads(
                    lambda: service.recommend_user(USER, "films", k=10), clients, seconds, warmup
                )
            )
            rows.append(row)
            print(f"in_process clients={clients}: {row}", flush=True)
        store.close()

        from serving.launcher import serve_app

        with serve_app(cfg, version) as url:
            for clients in levels:
                row = {
                    "mode": "serve",
                    "clients": clients,
                    "haproxy": cfg.serve.haproxy,
                    "replicas": cfg.serve.recommender.num_replicas,
                }
                row.update(closed_loop_http(url, clients, seconds, warmup, key))
                rows.append(row)
                print(f"serve clients={clients}: {row}", flush=True)

    print()
    print(
        f"{'mode':<11} {'clients':>7} {'requests':>9} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'QPS':>8}"
    )
    for r in rows:
        print(
            f"{r['mode']:<11} {r['clients']:>7} {r['requests']:>9} {r['p50_ms']:>8.2f} "
            f"{r['p95_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['qps']:>8.1f}"
        )
    print()
    for clients in levels:
        s = next(r for r in rows if r["mode"] == "serve" and r["clients"] == clients)
        p = next(r for r in rows if r["mode"] == "in_process" and r["clients"] == clients)
        print(
            f"clients={clients}: serve/in-process p50 {s['p50_ms'] / p['p50_ms']:.1f}x, "
            f"QPS {s['qps'] / p['qps']:.2f}x"
        )
    eight = next((r for r in rows if r["mode"] == "serve" and r["clients"] == 8), None)
    if eight is not None:
        print(
            f"goal at 8 clients: p50 <= 15 ms ({eight['p50_ms']:.1f}), "
            f"p99 <= 50 ms ({eight['p99_ms']:.1f})"
        )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        load_charts().serving_chart(rows, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
