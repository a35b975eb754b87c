"""Readable tables of evaluation rows."""

from __future__ import annotations

from collections.abc import Sequence

from crossrec.evaluation import EvaluationRow


def _label(protocol: str, num_negatives: int) -> str:
    return "full ranking" if protocol == "full" else f"sampled, {num_negatives} negatives"


def models_table(
    rows: Sequence[EvaluationRow],
    ks: Sequence[int],
    *,
    slice_name: str = "all",
    num_negatives: int = 999,
    metrics: Sequence[str] = ("recall", "ndcg", "mrr"),
) -> str:
    """Markdown tables of one slice, one per (domain, protocol): a line per model, a column per
    metric."""
    groups: list[tuple[str, str]] = []
    models: list[str] = []
    by_key: dict[tuple[str, str, str], EvaluationRow] = {}
    for r in rows:
        if r.slice != slice_name:
            continue
        if (r.domain, r.protocol) not in groups:
            groups.append((r.domain, r.protocol))
        if r.model not in models:
            models.append(r.model)
        by_key[(r.model, r.domain, r.protocol)] = r
    columns = [f"{m}@{k}" for k in ks for m in metrics]
    blocks = []
    for domain, protocol in groups:
        cases = next(
            r.num_cases for r in by_key.values() if (r.domain, r.protocol) == (domain, protocol)
        )
        lines = [
            f"{domain}, {_label(protocol, num_negatives)}, slice {slice_name} ({cases} cases)",
            "",
            "| model | " + " | ".join(columns) + " |",
            "|---|" + "---|" * len(columns),
        ]
        for model in models:
            row = by_key.get((model, domain, protocol))
            cells = [
                "-" if row is None or c not in row.metrics else f"{row.metrics[c]:.4f}"
                for c in columns
            ]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
