"""Derive an "every user in every domain" release from a dataset, as table files.

    python benchmarks/derive_overlap.py --dataset amazon-food-kitchen --out /tmp/fk-overlap
    python benchmarks/quality.py --data /tmp/fk-overlap --format table \\
        --set data.table.columns.timestamp=null --set data.table.columns.order=order \\
        --set data.table.columns.description=description \\
        --set data.table.columns.categories=categories --set data.table.columns.brand=brand

A check that the shipped defaults generalise beyond the one real release we tune on: the
derived release keeps only the users with at least ``--min-per-domain`` items in *every* domain
(a population of overlapping users with short sequences, like several public cross-domain
releases), drops the source's own split (the table loader's leave-one-out protocol applies:
validation = each user's second-last item of a domain, test = the last) and keeps every item's
text fields. Nothing is chosen on it. The files are derived from data whose terms forbid
redistribution: write them outside the repository (``--out`` refuses a folder inside it).

Writes ``interactions.csv`` (``user_id, item_id, domain, order``) and ``items.csv``
(``item_id, domain, title, description, categories, brand``; categories joined by ``|``).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from quality import DATASETS, build_config  # noqa: E402

from crossrec.data.dataset import CrossDomainDataset  # noqa: E402
from crossrec.data.loaders import load_dataset  # noqa: E402
from crossrec.errors import CrossRecError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# `data.table.columns` that read the derived files back (printed with the command to run).
COLUMNS = {
    "timestamp": None,
    "order": "order",
    "description": "description",
    "categories": "categories",
    "brand": "brand",
}


def write_overlap_release(
    dataset: CrossDomainDataset, out: Path, min_per_domain: int = 3
) -> dict[str, int]:
    """Writes the users with ``min_per_domain`` or more items in every domain (their whole
    time-ordered sequences) and the items they touch as table files under ``out``; returns the
    counts written."""
    domain_of = dataset.item_domain
    out.mkdir(parents=True, exist_ok=True)
    used: set[int] = set()
    users = rows = 0
    with open(out / "interactions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["user_id", "item_id", "domain", "order"])
        for user, seq in dataset.iter_sequences():
            counts = np.bincount(domain_of[seq], minlength=len(dataset.domains))
            if (counts < min_per_domain).any():
                continue
            users += 1
            for k, g in enumerate(seq.tolist()):
                item = dataset.items[g]
                used.add(g)
                writer.writerow([user, item.item_id, item.domain, k])
                rows += 1
    with open(out / "items.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["item_id", "domain", "title", "description", "categories", "brand"])
        for g in sorted(used):
            item = dataset.items[g]
            writer.writerow(
                [
                    item.item_id,
                    item.domain,
                    item.title,
                    item.description or "",
                    "|".join(item.categories),
                    item.brand or "",
                ]
            )
    return {"users": users, "interactions": rows, "items": len(used)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("CROSSREC_DATA_DIR", "../shared/data")),
        help="folder holding the real datasets (default $CROSSREC_DATA_DIR or ../shared/data)",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="folder to write (outside the repo)"
    )
    parser.add_argument("--min-per-domain", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if out == REPO or REPO in out.parents:
        print(
            f"error: --out {args.out}: inside the repository; derived data stays out of it",
            file=sys.stderr,
        )
        return 2
    if args.min_per_domain < 1:
        print("error: --min-per-domain must be at least 1", file=sys.stderr)
        return 2
    folder = DATASETS[args.dataset][0]
    path = None
    if folder is not None:
        path = args.data_dir / folder
        if not path.is_dir():
            print(
                f"skipping {args.dataset}: no data at {path} (set --data-dir or CROSSREC_DATA_DIR)"
            )
            return 0
    try:
        cfg = build_config(args.dataset, False, args.overrides)
        dataset = load_dataset(cfg.data, path)
    except CrossRecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if len(dataset.domains) < 2:
        print(f"error: {args.dataset} has one domain; nothing to overlap", file=sys.stderr)
        return 2
    counts = write_overlap_release(dataset, out, args.min_per_domain)
    print(
        f"wrote {out}: {counts['users']:,} users with >= {args.min_per_domain} items in each of "
        f"{', '.join(dataset.domains)}; {counts['interactions']:,} interactions, "
        f"{counts['items']:,} items"
    )
    sets = " ".join(
        f"--set data.table.columns.{k}={'null' if v is None else v}" for k, v in COLUMNS.items()
    )
    print(f"run: python benchmarks/quality.py --data {out} --format table {sets}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
