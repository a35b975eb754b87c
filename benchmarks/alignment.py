"""Domain alignment: does each `adaptation.method` shrink the source-target gap, and at what cost?

    python benchmarks/alignment.py [--quick] [--json FILE] [--set a.b=c]

Trains the default recipe on the synthetic world (target ``films``, source ``books``) once per
row: no alignment, then ``mmd``, ``coral`` and ``dann`` at ``adaptation.weight`` 0.1, 1 and 10.
Each row reports the gap between held-out source and target item representations (what the
alignment losses act on) with `measure_domain_gap`: the MMD, the CORAL distance and the held-out
accuracy of a *fresh* discriminator trained afterwards (0.5 = the domains cannot be told apart),
and the validation NDCG@10 of the target (full ranking, retrieval only), so alignment and its
cost read side by side. ``dann_loss`` is the last epoch's loss of DANN's own discriminator
(0.69 = chance).

JSON: ``{"rows": [{"method", "weight", "mmd", "coral", "probe_accuracy", "valid_ndcg@10",
"dann_loss", "seconds"}, ...]}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from crossrec.config import CrossRecConfig, SyntheticConfig, with_overrides
from crossrec.data.splits import Split, make_split
from crossrec.data.synthetic import generate_world
from crossrec.encoders.text_encoder import TextEncoder
from crossrec.errors import CrossRecError
from crossrec.evaluation import TargetDomainEvaluator
from crossrec.trainer import measure_domain_gap
from crossrec.trainer.estimator import CrossRecRecommender

ROWS = [("none", 0.0)] + [
    (method, weight) for method in ("mmd", "coral", "dann") for weight in (0.1, 1.0, 10.0)
]


def build_config(quick: bool, extra: list[str]) -> CrossRecConfig:
    cfg = CrossRecConfig()
    cfg.data.synthetic = SyntheticConfig(
        seed=11, num_users=400 if quick else 700, items_per_domain=[300, 200]
    )
    overrides = [
        "train.max_epochs=" + ("3" if quick else "6"),
        "train.patience=3",
        "train.batch_size=64",
        "train.ranker_epochs=0",
        "eval.protocols=[full]",
    ]
    return with_overrides(cfg, [*overrides, *extra])


def measure(
    cfg: CrossRecConfig, split: Split, method: str, weight: float, encoder: TextEncoder
) -> dict[str, Any]:
    row_cfg = with_overrides(cfg, [f"adaptation.method={method}", f"adaptation.weight={weight}"])
    start = time.perf_counter()
    rec = CrossRecRecommender(row_cfg, encoder=encoder)
    rec.fit(split)
    gap = measure_domain_gap(rec.models["films"], ["books"], "films")
    rows = TargetDomainEvaluator(split, row_cfg.eval).evaluate(rec, "valid", protocols=["full"])
    ndcg = next(r.metrics["ndcg@10"] for r in rows if r.slice == "all")
    history = rec.reports["films"][-1].history
    return {
        "method": method,
        "weight": weight,
        "mmd": round(gap["mmd"], 4),
        "coral": float(f"{gap['coral']:.3g}"),
        "probe_accuracy": round(gap["discriminator_accuracy"], 3),
        "valid_ndcg@10": round(ndcg, 4),
        "dann_loss": round(history[-1]["dann_loss"], 3) if method == "dann" else None,
        "seconds": round(time.perf_counter() - start, 1),
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| method | weight | MMD | CORAL | fresh probe accuracy | valid NDCG@10 | DANN loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        dann = "" if r["dann_loss"] is None else r["dann_loss"]
        lines.append(
            f"| {r['method']} | {r['weight']} | {r['mmd']} | {r['coral']} | "
            f"{r['probe_accuracy']} | {r['valid_ndcg@10']} | {dann} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="A smaller world, fewer epochs.")
    parser.add_argument("--json", type=Path, help="Write the rows to this JSON file.")
    parser.add_argument("--set", action="append", default=[], help="Config override a.b=c.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        cfg = build_config(args.quick, args.set)
    except (CrossRecError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    encoder = TextEncoder.from_config(cfg.encoder)
    assert cfg.data.synthetic is not None
    split = make_split(generate_world(cfg.data.synthetic), cfg.eval, ["films"])  # one world
    rows: list[dict[str, Any]] = []
    for method, weight in ROWS:
        rows.append(measure(cfg, split, method, weight, encoder))
        print(json.dumps(rows[-1]), flush=True)
        if args.json:
            args.json.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
