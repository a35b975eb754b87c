"""Recommendation quality of every available model on one dataset.

    python benchmarks/quality.py --dataset amazon-food-kitchen [--data-dir DIR] [--quick]
        [--cold-items] [--json FILE]
    python benchmarks/quality.py --data PATH --format F [--set data.table.columns...=...]

Datasets: ``amazon-food-kitchen`` (the LLMCDSR Food-Kitchen release; domains ``food`` and
``kitchen``, its own user-level split), ``ml-100k`` (MovieLens 100K, leave-one-out) and
``synthetic`` (the embedded world). Real data is read from ``--data-dir``, default
``$CROSSREC_DATA_DIR`` or ``../shared/data``; when it is missing the dataset is skipped with a
message (exit code 0). ``--data PATH --format F`` runs the same table on any release a loader
reads (your own data; the format's options with ``--set``), with the shipped defaults.
``--quick`` shrinks the work (fewer SASRec epochs; ml-100k and synthetic
on fewer users) to finish in under 3 minutes on 2 cores. ``--cold-items`` turns on
``eval.cold_item_split``: a seeded share of each target domain's items leaves training, so the
``cold-items`` slice gets hundreds of cases (tune it with ``--set eval.cold_item_split_*=...``).

Prints one markdown table per slice (rows = models; columns = metrics per domain and protocol)
and writes JSON rows ``{model, domain, protocol, slice, num_cases, metrics, seconds}`` where
``seconds`` is the model's fit + evaluation time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from crossrec.baselines import BASELINES
from crossrec.config import CrossRecConfig, load_config, with_overrides
from crossrec.data.loaders import load_dataset
from crossrec.errors import CrossRecError
from crossrec.evaluation import EvaluationRow
from crossrec.experiments import all_model_names, run_models
from crossrec.reporting import models_table

DATASETS = {
    "amazon-food-kitchen": ("amazon-food-kitchen", "llmcdsr", ["food", "kitchen"]),
    "ml-100k": ("ml-100k", "movielens", None),
    "synthetic": (None, "synthetic", None),
}


def build_config(name: str | None, quick: bool, extra: list[str] | None = None) -> CrossRecConfig:
    """The benchmark's config of a named dataset, or (``name`` None) of ``--data`` whose format
    and options come in ``extra``."""
    folder, fmt, domains = DATASETS[name] if name else (None, None, None)
    overrides = [f"data.format={fmt}"] if fmt else []
    if domains:
        overrides.append(f"data.domain_names=[{', '.join(domains)}]")
    if quick:
        overrides += ["train.max_epochs=3", "train.patience=2"]
        # The SASRec baselines have their own budget (at least 10 epochs): --quick bounds it too.
        overrides += [
            "baselines.sasrec.max_epochs=3",
            "baselines.sasrec.min_epochs=1",
            "baselines.sasrec.patience=2",
        ]
        if name == "synthetic":
            overrides.append("data.synthetic.num_users=600")
    return load_config(None, [*overrides, *(extra or [])])


# LoRA trains the encoder end to end: on a CPU it is bounded so the table finishes.
LORA_CPU_BOUNDS = [
    "train.pretrain_max_epochs=1",
    "train.max_epochs=2",
    "train.max_steps_per_epoch=40",
    "train.batch_size=64",
    "train.num_negatives=128",
]
QUICK_CROSSREC = ["train.pretrain_max_epochs=2", "train.max_epochs=3"]


def model_config(name: str, cfg: CrossRecConfig, quick: bool) -> CrossRecConfig:
    """Per-model adjustments: CPU bounds for LoRA, fewer epochs with --quick."""
    extra: list[str] = []
    if name == "crossrec-transfer-lora" and not torch.cuda.is_available():
        extra += LORA_CPU_BOUNDS
    if quick and name.startswith("crossrec"):
        extra += QUICK_CROSSREC
    return with_overrides(cfg, extra, origin=f"benchmark settings for {name}") if extra else cfg


def load_charts() -> Any:
    """``benchmarks/charts.py``, beside this script (imported only when a chart is drawn)."""
    import importlib

    sys.path.insert(0, str(Path(__file__).parent))
    return importlib.import_module("charts")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--dataset", choices=sorted(DATASETS))
    which.add_argument(
        "--data", type=Path, help="any release a loader reads (with --format), instead of --dataset"
    )
    parser.add_argument("--format", help="the loader of --data (data.format), e.g. table, amazon")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("CROSSREC_DATA_DIR", "../shared/data")),
        help="folder holding the real datasets (default $CROSSREC_DATA_DIR or ../shared/data)",
    )
    parser.add_argument("--quick", action="store_true", help="finish in under 3 minutes")
    parser.add_argument("--json", type=Path, help="write result rows here")
    parser.add_argument("--plot", type=Path, help="draw NDCG@10 per model and domain (PNG)")
    parser.add_argument(
        "--cold-items",
        action="store_true",
        help="hold a seeded share of each target domain's items out of training "
        "(eval.cold_item_split=true) for a large cold-items slice",
    )
    parser.add_argument(
        "--models",
        default=None,
        help="comma-separated models (default: all; with --quick: baselines, "
        "crossrec-target-only and crossrec-transfer)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="config override section.field=value (repeatable), applied last",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    if (args.data is None) != (args.format is None):
        print("error: --data and --format go together", file=sys.stderr)
        return 2
    if args.data is not None:
        if not args.data.exists():
            print(f"error: --data {args.data}: not found", file=sys.stderr)
            return 2
        args.dataset = args.data.name
        folder, path = None, args.data
        args.overrides = [f"data.format={args.format}", *args.overrides]
    else:
        folder, _, _ = DATASETS[args.dataset]
        path = None
    if folder is not None:
        path = args.data_dir / folder
        if not path.is_dir():
            print(
                f"skipping {args.dataset}: no data at {path} (set --data-dir or CROSSREC_DATA_DIR)"
            )
            return 0
    try:
        extra = ["eval.cold_item_split=true"] if args.cold_items else []
        base = None if args.data is not None else args.dataset
        cfg = build_config(base, args.quick, [*extra, *args.overrides])
    except CrossRecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.models:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
    elif args.quick:
        models = [*BASELINES, "crossrec-target-only", "crossrec-transfer"]
    else:
        models = all_model_names()
    unknown = [m for m in models if m not in all_model_names()]
    if unknown:
        print(f"error: unknown model(s) {unknown}; known: {all_model_names()}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    done_rows: list[dict[str, object]] = []

    def model_done(name: str, rows: list[EvaluationRow], seconds: float) -> None:
        print(f"{name}: {seconds:.1f}s", file=sys.stderr)
        # Rows are written as each model finishes, so an interrupted run keeps what it measured.
        done_rows.extend(r.to_dict() for r in rows)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(done_rows, indent=2))

    try:
        dataset = load_dataset(cfg.data, path)
        encoder = None
        if any(m.startswith("crossrec") for m in models):
            from crossrec.encoders.text_encoder import TextEncoder

            encoder = TextEncoder.from_config(cfg.encoder)
        run = run_models(
            cfg,
            models,
            dataset,
            on_model_done=model_done,
            config_for=lambda name, c: model_config(name, c, args.quick),
            validation=True,
            encoder=encoder,
        )
    except CrossRecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - started
    print(f"## {args.dataset}: {dataset.num_users:,} users, {dataset.num_items:,} items")
    summary = run.split.summary()
    print(f"protocol: {run.split.protocol}; split: {json.dumps(summary['test'])}")
    if args.cold_items:
        print(f"cold items held out of training: {json.dumps(summary['cold_items_per_domain'])}")
    print()
    m, t = cfg.model, cfg.train
    print(
        f"crossrec settings: stages={t.stages} dim={m.dim} layers={m.num_layers} "
        f"heads={m.num_heads} dropout={m.dropout} max_history={m.max_history} "
        f"similarity={m.similarity} temperature={m.temperature} (learned={m.learn_temperature}) "
        f"text_part={m.text_part} id_embeddings={m.id_embeddings} id_dropout={m.id_dropout} "
        f"loss={t.loss} full_softmax_max_items={t.full_softmax_max_items} "
        f"negatives={t.num_negatives} lr={t.lr} batch={t.batch_size} max_epochs={t.max_epochs} "
        f"patience={t.patience} ranker={m.ranker} ranker_holdout={t.ranker_holdout} "
        f"({t.ranker_holdout_unit})"
    )
    print(f"baseline settings: sasrec / sasrec-mixed: {cfg.baselines.sasrec.model_dump()}")
    print(f"overrides: {args.overrides or 'none'}")
    if "crossrec-transfer-lora" in models and not torch.cuda.is_available():
        print(f"crossrec-transfer-lora on CPU is bounded: {' '.join(LORA_CPU_BOUNDS)}")
    print()
    for slice_name in ("all", "cold-users", "cold-items", "valid"):
        if any(r.slice == slice_name for r in run.rows):
            print(f"### slice: {slice_name}\n")
            print(models_table(run.rows, cfg.eval.ks, slice_name=slice_name))
            print()
    print("| model | seconds (fit + eval) |\n|---|---|")
    for name, seconds in run.seconds.items():
        print(f"| {name} | {seconds:.1f} |")
    print(f"\nwall time: {wall:.1f}s")
    if args.json:
        print(f"wrote {args.json}")
    if args.plot:
        rows = [r.to_dict() for r in run.rows]
        load_charts().quality_chart(rows, args.plot, title=f"{args.dataset}: NDCG@10 (test)")
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
