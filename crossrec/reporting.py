"""Readable tables of evaluation rows."""

from __future__ import annotations

from collections.abc import Sequence

from crossrec.evaluation import EvaluationRow


def _label(protocol: str, num_negatives: int) -> str:
    return "full ranking" if protocol == "full" else f"sampled ({num_negatives} negatives)"


def models_table(
    rows: Sequence[EvaluationRow],
    ks: Sequence[int],
    *,
    slice_name: str = "all",
    num_negatives: int = 999,
    metrics: Sequence[str] = ("recall", "ndcg", "mrr"),
) -> str:
    """Markdown: one line per model, one column group per (domain, protocol) of ``slice_name``."""
    groups: list[tuple[str, str]] = []
    for r in rows:
        if r.slice == slice_name and (r.domain, r.protocol) not in groups:
            groups.append((r.domain, r.protocol))
    models: list[str] = []
    for r in rows:
        if r.model not in models:
            models.append(r.model)
    by_key = {(r.model, r.domain, r.protocol): r for r in rows if r.slice == slice_name}
    header = ["model"]
    for domain, protocol in groups:
        tag = f"{domain} {'full' if protocol == 'full' else 'sampled'}"
        header += [f"{tag} {m}@{k}" for k in ks for m in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model in models:
        cells = [model]
        for domain, protocol in groups:
            row = by_key.get((model, domain, protocol))
            for k in ks:
                for m in metrics:
                    value = None if row is None else row.metrics.get(f"{m}@{k}")
                    cells.append("-" if value is None else f"{value:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    cases = {(r.domain, r.protocol): r.num_cases for r in rows if r.slice == slice_name}
    notes = ", ".join(f"{d} {_label(p, num_negatives)}: {cases[(d, p)]} cases" for d, p in groups)
    return f"slice={slice_name}; {notes}\n\n" + "\n".join(lines)
