"""Online-learning round cost on an embedded redis-server: how long one gated round takes as
the number of new samples grows (the part of the update cadence that is not the stream).

    python benchmarks/online.py [--sizes 250,1000,4000] [--json FILE] [--set a.b=c]

A model version over the synthetic catalogue is made current (untrained weights cost the same
to run as trained ones); the world's users' sequences become samples (every position: history
-> next item). The first ones fill the buffer as replay material and the regression set; then,
for each size N, N new samples are appended and one round runs in this process: scoring both
versions on the holdout and regression sets, ``online.steps`` fine-tune steps, saving,
registering and promoting when the gate passes. Prints one row per size.

JSON: ``{"rows": [{"new_samples", "replay", "holdout", "round_s", "train_s", "accepted"}]}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from crossrec.config import load_config
from crossrec.data.loaders import load_dataset
from crossrec.errors import CrossRecError
from crossrec.feature_store import open_feature_store
from crossrec.feature_store.samples import Sample
from crossrec.models.crossrec_model import CrossRecModel
from crossrec.online.learner import OnlineLearner
from crossrec.registry import publish_model
from crossrec.stream.services import stream_services


def world_samples(dataset: Any, context_length: int) -> list[Sample]:
    """Every position of every user's sequence as a sample, users interleaved."""
    out = []
    for user, seq in dataset.iter_sequences():
        keys = [(dataset.items[g].domain, dataset.items[g].item_id) for g in seq.tolist()]
        for n in range(1, len(keys)):
            out.append(
                Sample(
                    f"{user}-{n}",
                    user,
                    keys[n][0],
                    keys[n][1],
                    float(n),
                    tuple(keys[:n][-context_length:]),
                )
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="250,1000,4000", help="New samples per round.")
    parser.add_argument("--json", type=Path, help="Also write the rows to this file.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="a.b=c")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sizes = [int(s) for s in args.sizes.split(",")]
    cfg = load_config(None, overrides=args.overrides)
    cfg.feature_store.key_prefix = f"bench-online-{int(time.time())}"
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, stream_services(cfg) as services:
        cfg = services.cfg
        cfg.registry.root = str(Path(tmp) / "registry")
        dataset = load_dataset(cfg.data)
        torch.manual_seed(0)
        model = CrossRecModel.for_dataset(dataset, cfg)
        target = dataset.domains[-1]
        model.target_domain = target
        model.save_pretrained(Path(tmp) / "version" / target)
        samples = world_samples(dataset, cfg.online.context_length)
        replay = cfg.online.regression_size + max(sizes)
        needed = replay + sum(sizes)
        if len(samples) < needed:
            raise CrossRecError(
                f"the world has {len(samples):,} samples; the sizes need "
                f"{needed:,} (more data.synthetic.num_users)"
            )
        store = open_feature_store(cfg.feature_store)
        try:
            publish_model(store, Path(tmp) / "version")
            learner = OnlineLearner(cfg, store)
            learner.buffer.append(samples[:replay])
            learner.regression_set()  # freezes the oldest regression_size samples
            learner.skip_backlog()
            start = replay
            for size in sizes:
                learner.buffer.append(samples[start : start + size])
                start += size
                outcome = learner.run_round(force=True)
                if outcome is None:
                    raise CrossRecError(f"no round ran for {size} samples")
                window = outcome.data_window
                row = {
                    "new_samples": window["new_samples"] + window["holdout_samples"],
                    "replay": window["replay_samples"],
                    "holdout": window["holdout_samples"],
                    "round_s": outcome.seconds["round"],
                    "train_s": outcome.seconds["train"],
                    "accepted": outcome.accepted,
                }
                rows.append(row)
                print(f"round: {row}", flush=True)
        finally:
            store.close()
    print()
    print(
        f"steps={cfg.online.steps} batch={cfg.online.batch_size} finetune={cfg.online.finetune} "
        f"items={dataset.num_items:,} torch threads={torch.get_num_threads()}"
    )
    print("| new samples | replay | holdout | round s | candidate s (load, score, train, save) |")
    # (after the first round, "new" includes the previous round's holdout, trained on now)
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['new_samples']:,} | {r['replay']:,} | {r['holdout']:,} | "
            f"{r['round_s']:.2f} | {r['train_s']:.2f} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
