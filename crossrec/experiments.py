"""Fit-and-evaluate runs shared by the CLI, the demo and the benchmarks."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossrec.baselines import BASELINES, make_baseline
from crossrec.config import CrossRecConfig
from crossrec.data.dataset import CrossDomainDataset
from crossrec.data.splits import Split, make_split
from crossrec.evaluation import EvaluationRow, TargetDomainEvaluator
from crossrec.recommender import Recommender

logger = logging.getLogger(__name__)


def all_model_names() -> list[str]:
    """Every model the benchmarks and `crossrec evaluate` know: baselines, then variants."""
    from crossrec.models.variants import VARIANTS

    return [*BASELINES, *VARIANTS]


def make_model(name: str, cfg: CrossRecConfig, **crossrec_kwargs: object) -> Recommender:
    """A baseline or a crossrec variant (``crossrec-transfer``, ...) by name."""
    if name in BASELINES:
        return make_baseline(name, cfg)
    from crossrec.models.variants import variant_config
    from crossrec.trainer.estimator import CrossRecRecommender

    return CrossRecRecommender(variant_config(name, cfg), name=name, **crossrec_kwargs)  # type: ignore[arg-type]


@dataclass
class ModelRun:
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


def run_models(
    cfg: CrossRecConfig,
    names: Sequence[str],
    dataset: CrossDomainDataset,
    *,
    split: Split | None = None,
    protocols: Sequence[str] | None = None,
    on_model_done: Callable[[str, list[EvaluationRow], float], None] | None = None,
    config_for: Callable[[str, CrossRecConfig], CrossRecConfig] | None = None,
    validation: bool = False,
    **crossrec_kwargs: object,
) -> ModelRun:
    """Fits each model on the split's training data and evaluates it on the test cases.

    ``config_for(name, cfg)`` may adjust the config per model (e.g. CPU bounds for LoRA).
    With ``validation``, each model is also scored on the validation cases (full ranking, rows
    with slice ``valid``), and a model that re-ranks is scored there by retrieval only too
    (``NAME (retrieval only)``): what defaults are chosen on."""
    split = split or make_split(dataset, cfg.eval, target_domains_for(dataset, cfg))
    evaluator = TargetDomainEvaluator(split, cfg.eval)
    run = ModelRun(split)
    for name in names:
        start = time.perf_counter()
        model_cfg = config_for(name, cfg) if config_for is not None else cfg
        model = make_model(name, model_cfg, **crossrec_kwargs)
        logger.info("fitting model=%s dataset=%s", name, dataset.name)
        model.fit(split)
        rows = evaluator.evaluate(model, "test", protocols=protocols)
        if validation and split.valid:
            rows += _validation_rows(evaluator, model, name)
        elapsed = time.perf_counter() - start
        for row in rows:
            row.seconds = round(elapsed, 2)
        run.rows.extend(rows)
        run.seconds[name] = elapsed
        if on_model_done is not None:
            on_model_done(name, rows, elapsed)
    return run


def _validation_rows(
    evaluator: TargetDomainEvaluator, model: Recommender, name: str
) -> list[EvaluationRow]:
    rows = evaluator.evaluate(model, "valid", protocols=["full"], model_name=name, slices=["all"])
    if getattr(model, "rank", False):
        model.rank = False  # type: ignore[attr-defined]
        try:
            rows += evaluator.evaluate(
                model,
                "valid",
                protocols=["full"],
                model_name=f"{name} (retrieval only)",
                slices=["all"],
            )
        finally:
            model.rank = True  # type: ignore[attr-defined]
    for row in rows:
        row.slice = "valid"
    return rows


@dataclass
class TrainResult:
    """A trained crossrec model per target domain, its test rows and where it was saved."""

    split: Split
    recommender: Any
    rows: list[EvaluationRow]
    checkpoints: dict[str, Path]


def train_crossrec(
    cfg: CrossRecConfig,
    output: str | Path | None = None,
    *,
    name: str = "crossrec",
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Loads the configured data, trains the cross-domain model for each target domain, evaluates
    it on the test cases and saves one checkpoint per target domain under ``output/<domain>``."""
    from crossrec.data.loaders import load_dataset
    from crossrec.trainer.estimator import CrossRecRecommender

    output = Path(output) if output is not None else None
    dataset = load_dataset(cfg.data)
    split = make_split(dataset, cfg.eval, target_domains_for(dataset, cfg))
    recommender = CrossRecRecommender(cfg, name=name, on_epoch=on_epoch)
    recommender.fit(split)
    rows = TargetDomainEvaluator(split, cfg.eval).evaluate(recommender, "test")
    checkpoints: dict[str, Path] = {}
    for target, model in recommender.models.items():
        for row in rows:
            if row.domain == target and row.slice == "all":
                model.metrics.update(
                    {f"test_{row.protocol}_{k}": v for k, v in row.metrics.items()}
                )
        if output is not None:
            checkpoints[target] = model.save_pretrained(output / target)
    return TrainResult(split, recommender, rows, checkpoints)


def load_checkpoints(path: Path) -> dict[str, Any]:
    """``{target domain: CrossRecModel}`` from a checkpoint directory or a parent of several."""
    from crossrec.errors import CrossRecError
    from crossrec.models.crossrec_model import MANIFEST_FILE, CrossRecModel

    if (path / MANIFEST_FILE).is_file():
        dirs = [path]
    else:
        dirs = sorted(p for p in path.glob("*") if (p / MANIFEST_FILE).is_file())
    if not dirs:
        raise CrossRecError(f"no crossrec checkpoint in {path} (expected {MANIFEST_FILE})")
    models = {}
    for directory in dirs:
        model = CrossRecModel.from_pretrained(directory)
        models[model.target_domain or directory.name] = model
    return models


class CheckpointRecommender(Recommender):
    """Serves loaded checkpoints to the evaluator (one per target domain)."""

    name = "crossrec-checkpoint"

    def __init__(self, models: dict[str, Any], rank: bool | None = None) -> None:
        self.models = models
        self.rank = rank

    def fit(self, split: Split) -> None:
        pass  # already trained

    def score(self, cases: Any, domain: str) -> Any:
        from crossrec.models.view import ModelView

        model = self.models[domain]
        # By default a model with a hybrid ranker is scored through it (what it was trained for).
        rank = self.rank if self.rank is not None else model.hybrid is not None
        view = ModelView(model, target_only=model.cfg.train.target_only, rank=rank)
        return view.score(cases, domain)


def evaluate_checkpoint(
    path: Path, protocols: Sequence[str] | None = None, *, rank: bool | None = None
) -> tuple[list[EvaluationRow], CrossRecConfig]:
    """Evaluates saved checkpoints on the test split of the data their config names."""
    from crossrec.data.loaders import load_dataset
    from crossrec.errors import CrossRecError

    models = load_checkpoints(path)
    cfg = next(iter(models.values())).cfg
    dataset = load_dataset(cfg.data)
    keys = [(it.domain, it.item_id) for it in dataset.items]
    for target, model in models.items():
        if model.item_keys[: len(keys)] != keys:
            raise CrossRecError(
                f"checkpoint for {target!r} was trained on another item catalogue than "
                f"{cfg.data.format} data at {cfg.data.path}"
            )
    # Rebuild exactly the training split (its cold-start draws depend on the target list).
    first = next(iter(models.values()))
    split = make_split(dataset, cfg.eval, first.split_targets or sorted(models))
    split.target_domains = [d for d in split.target_domains if d in models]
    rows = TargetDomainEvaluator(split, cfg.eval).evaluate(
        CheckpointRecommender(models, rank=rank), "test", protocols=protocols
    )
    return rows, cfg


def recommend(
    models: dict[str, Any],
    domain: str,
    *,
    history: Sequence[tuple[str, str]] = (),
    query: str | None = None,
    k: int = 10,
    exclude_seen: bool = True,
) -> list[Any]:
    """Top-``k`` items of ``domain`` from the checkpoint of that domain (see
    :meth:`CrossRecModel.recommend`)."""
    from crossrec.errors import CrossRecError

    if domain not in models:
        raise CrossRecError(f"no checkpoint for domain {domain!r}; have: {', '.join(models)}")
    return models[domain].recommend(
        history, query=query, domain=domain, k=k, exclude_seen=exclude_seen
    )
