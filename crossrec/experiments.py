"""Fit-and-evaluate runs shared by the CLI, the demo and the benchmarks."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from crossrec.baselines import make_baseline
from crossrec.config import CrossRecConfig
from crossrec.data.dataset import CrossDomainDataset
from crossrec.data.splits import Split, make_split
from crossrec.evaluation import EvaluationRow, TargetDomainEvaluator

logger = logging.getLogger(__name__)


@dataclass
class BaselineRun:
    """The rows of every evaluated model and the time each took (fit + evaluation)."""

    split: Split
    rows: list[EvaluationRow] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def target_domains_for(dataset: CrossDomainDataset, cfg: CrossRecConfig) -> list[str]:
    """``data.target_domains``, else the last domain of the synthetic world, else every domain."""
    if cfg.data.target_domains:
        return list(cfg.data.target_domains)
    if cfg.data.format == "synthetic":
        return [dataset.domains[-1]]
    return list(dataset.domains)


def run_baselines(
    cfg: CrossRecConfig,
    names: Sequence[str],
    dataset: CrossDomainDataset,
    *,
    split: Split | None = None,
    protocols: Sequence[str] | None = None,
    on_model_done: Callable[[str, list[EvaluationRow], float], None] | None = None,
) -> BaselineRun:
    """Fits each baseline on the split's training data and evaluates it on the test cases."""
    split = split or make_split(dataset, cfg.eval, target_domains_for(dataset, cfg))
    evaluator = TargetDomainEvaluator(split, cfg.eval)
    run = BaselineRun(split)
    for name in names:
        start = time.perf_counter()
        model = make_baseline(name, cfg)
        logger.info("fitting model=%s dataset=%s", name, dataset.name)
        model.fit(split)
        rows = evaluator.evaluate(model, "test", protocols=protocols)
        elapsed = time.perf_counter() - start
        for row in rows:
            row.seconds = round(elapsed, 2)
        run.rows.extend(rows)
        run.seconds[name] = elapsed
        if on_model_done is not None:
            on_model_done(name, rows, elapsed)
    return run
