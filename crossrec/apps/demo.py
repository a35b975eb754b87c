"""`crossrec demo`: the whole pipeline on embedded defaults, narrated step by step.

Today: synthetic world -> split -> baselines -> the cross-domain model trained on Ray Train
(2 CPU workers on a local Ray: joint training over every domain, the hybrid ranker, evaluate) ->
evaluation table -> the model served on Ray Serve, and a scripted session of user events streamed
through the embedded Kafka-protocol broker and Redis, with the user's recommendations asked from
the HTTP API before and after, a cold-start query and a new item added through the API ->
a drift episode: a topic becomes popular, online learning fine-tunes, the gate promotes, serving
follows, a corrupted update is rejected, and a rollback restores the previous version.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crossrec.baselines import BASELINES
from crossrec.config import CrossRecConfig
from crossrec.data.loaders import load_dataset
from crossrec.data.splits import make_split
from crossrec.evaluation import EvaluationRow
from crossrec.experiments import run_models, target_domains_for
from crossrec.models.variants import variant_config
from crossrec.reporting import models_table


def run_demo(
    cfg: CrossRecConfig,
    echo: Callable[[str], None] = print,
    *,
    exit_after_s: float | None = 0.0,
) -> list[EvaluationRow]:
    """Runs the demo and returns the evaluation rows. At the end the API stays up for
    ``exit_after_s`` seconds (None: until Ctrl-C / SIGTERM)."""
    started = time.perf_counter()
    total = 7
    echo(f"[1/{total}] loading data: format={cfg.data.format}")
    dataset = load_dataset(cfg.data)
    stats = dataset.stats()
    for name, d in stats["domains"].items():
        echo(
            f"       {name}: {d['users']:,} users, {d['items']:,} items, "
            f"{d['interactions']:,} interactions"
        )
    echo(f"       overlapping users: {stats['overlapping_users']:,}")

    echo(f"[2/{total}] splitting: leave-one-out per target-domain user, cold-start slices")
    split = make_split(dataset, cfg.eval, target_domains_for(dataset, cfg))
    summary = split.summary()
    echo(f"       target domains: {', '.join(split.target_domains)}; test cases: {summary['test']}")

    echo(f"[3/{total}] fitting and evaluating baselines: {', '.join(BASELINES)}")

    def done(name: str, rows: list[EvaluationRow], seconds: float) -> None:
        headline = next(
            (r for r in rows if r.protocol == "full" and r.slice == "all"),
            rows[0] if rows else None,
        )
        score = "" if headline is None else f" ndcg@10={headline.metrics['ndcg@10']:.4f}"
        echo(f"       {name}: {seconds:.1f}s{score}")

    run = run_models(cfg, BASELINES, dataset, split=split, on_model_done=done)

    targets = ", ".join(split.target_domains)
    sources = ", ".join(
        cfg.adaptation.source_domains
        or [d for d in dataset.domains if d not in split.target_domains]
    )
    sources = sources or "the other domains"  # every domain is a target: each learns from the rest
    if list(cfg.train.stages) == ["joint"]:
        recipe = f"one joint model over {', '.join(dataset.domains)}, kept per target {targets}"
    else:
        recipe = f"{' -> '.join(cfg.train.stages)}: from {sources} to {targets}"
    echo(
        f"[4/{total}] training crossrec-transfer on Ray Train ({cfg.train.num_workers} workers): "
        f"{recipe}"
    )
    rows, models_dir = _train_on_ray(cfg, echo)
    run.rows.extend(rows)

    echo(f"[5/{total}] results (test cases)")
    for slice_name in ("all", "cold-users", "cold-items"):
        if any(r.slice == slice_name for r in run.rows):
            echo("")
            echo(
                models_table(
                    [r for r in run.rows if r.protocol == "full"],
                    cfg.eval.ks,
                    slice_name=slice_name,
                    num_negatives=cfg.eval.num_negatives,
                    metrics=("recall", "ndcg"),
                )
            )
    echo("")
    echo(
        f"[6/{total}] serving and streaming: Ray Serve API; embedded Kafka-protocol broker -> "
        "consumer worker -> embedded Redis -> user vector -> next request"
    )
    from crossrec.apps.session import run_stream_session

    run_stream_session(
        cfg,
        dataset,
        models_dir,
        echo,
        online_step=f"[7/{total}] online learning: preferences shift; streamed events become "
        "samples; a fine-tune round as a Ray task; the gate; promotion; serving follows",
        exit_after_s=exit_after_s,
    )
    echo("")
    echo(f"demo finished in {time.perf_counter() - started:.1f}s")
    return run.rows


def _train_on_ray(
    cfg: CrossRecConfig, echo: Callable[[str], None]
) -> tuple[list[EvaluationRow], str]:
    """Trains crossrec-transfer through the Ray Train stage pipeline (a new run each time)."""
    from training.pipeline import describe_event, run_training

    def event(item: dict[str, Any]) -> None:
        echo(f"       {describe_event(item)}")

    name = "demo-" + time.strftime("%Y%m%d-%H%M%S")
    trained = run_training(variant_config("crossrec-transfer", cfg), name=name, on_event=event)
    for target, uri in trained.models.items():
        echo(f"       model for {target}: {uri}")
    rows = []
    for row in trained.rows:
        row.model = "crossrec-transfer"
        rows.append(row)
    models_dir = str(Path(next(iter(trained.models.values()))).parent)
    return rows, models_dir
