"""Charts of the benchmarks' results (``--plot FILE``): matplotlib with the headless ``Agg``
backend, an optional extra (``pip install 'crossrec[plots]'``).

* `quality_chart`: grouped bars of NDCG@10 per model (bars) and target domain (groups).
* `serving_chart`: p50 / p99 latency and QPS against concurrent clients, per mode.
* `stream_chart`: events/s per worker against the consumer's batch size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise SystemExit("--plot needs matplotlib: pip install 'crossrec[plots]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def quality_chart(
    rows: Sequence[dict[str, Any]],
    path: Path,
    *,
    metric: str = "ndcg@10",
    protocol: str = "full",
    slice_name: str = "all",
    title: str = "",
) -> Path:
    """Grouped bars of ``metric`` per model and domain from the benchmark's JSON rows."""
    plt = _pyplot()
    chosen = [r for r in rows if r["protocol"] == protocol and r["slice"] == slice_name]
    if not chosen:
        raise ValueError(f"no rows with protocol={protocol!r} and slice={slice_name!r} to plot")
    models = list(dict.fromkeys(r["model"] for r in chosen))
    domains = list(dict.fromkeys(r["domain"] for r in chosen))
    value = {(r["model"], r["domain"]): r["metrics"].get(metric, 0.0) for r in chosen}
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(models) * len(domains)), 3.8), dpi=100)
    for i, model in enumerate(models):
        xs = [d + (i - (len(models) - 1) / 2) * width for d in range(len(domains))]
        ax.bar(xs, [value.get((model, dom), 0.0) for dom in domains], width, label=model)
    ax.set_xticks(range(len(domains)), domains)
    ax.set_ylabel(f"{metric} ({protocol} ranking)")
    ax.set_title(title or f"{metric} per model and domain")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, plt, path)


def serving_chart(rows: Sequence[dict[str, Any]], path: Path, *, title: str = "") -> Path:
    """Latency (p50, p99) and QPS against clients, one line per mode."""
    plt = _pyplot()
    fig, (lat, qps) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["clients"])
        clients = [r["clients"] for r in mine]
        lat.plot(clients, [r["p50_ms"] for r in mine], marker="o", label=f"{mode} p50")
        lat.plot(
            clients, [r["p99_ms"] for r in mine], marker="x", linestyle="--", label=f"{mode} p99"
        )
        qps.plot(clients, [r["qps"] for r in mine], marker="o", label=mode)
    for ax, label in ((lat, "latency (ms)"), (qps, "requests / s")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or "user recommendations: latency and throughput")
    return _save(fig, plt, path)


def stream_chart(rows: Sequence[dict[str, Any]], path: Path, *, title: str = "") -> Path:
    """Events/s per worker against the consumer's batch size."""
    plt = _pyplot()
    mine = sorted(rows, key=lambda r: r["batch_size"])
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    ax.plot(
        [r["batch_size"] for r in mine], [r["events_per_s_per_worker"] for r in mine], marker="o"
    )
    ax.set_xscale("log")
    ax.set_xlabel("stream.batch_size (events per poll and Redis pipeline)")
    ax.set_ylabel("events / s (one worker)")
    ax.set_title(title or "stream throughput against batch size")
    ax.grid(alpha=0.3)
    return _save(fig, plt, path)


def _save(fig: Any, plt: Any, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
