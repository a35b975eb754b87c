"""Hyper-parameter search (`crossrec tune`): Ray Tune trials of the existing training loop.

Each trial applies its sampled overrides to the input config, fits the model by name (a crossrec
variant or a baseline, through `crossrec.experiments.make_model`) on a split built once in the
driver, and is scored by the mean full-ranking validation NDCG@10 over the target domains. An
ASHA scheduler stops bad trials early. The best config is written as YAML that `crossrec train
--config` and `load_config` accept, every trial's params and score beside it.

Per-epoch reports: with **one** target domain, each epoch of the last configured training stage
(the one whose best epoch is kept) reports the best validation NDCG@10 so far, which is what the
trial would end with if stopped then, so ASHA compares trials after the same number of epochs on
the same scale. With **several** target domains the trainer fits them one after another with
their own early stopping: after N epochs two trials may be on different domains, whose NDCG
scales differ, and the mean over targets only exists at the end. Such trials (and the baselines,
which have no epoch callback) make one final report; ASHA then only ranks finished trials.

Ray is imported only inside functions (`import crossrec` stays light).
"""

from __future__ import annotations

import csv
import difflib
import json
import logging
import math
import os
import time
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel

from crossrec.config import RUNTIME_TRAIN_FIELDS, CrossRecConfig, with_overrides
from crossrec.errors import ConfigError, CrossRecError

if TYPE_CHECKING:
    from crossrec.data.splits import Split
    from crossrec.evaluation import EvaluationRow

logger = logging.getLogger(__name__)

METRIC = "valid_ndcg@10"
"""The score every trial reports: mean full-ranking validation NDCG@10 over the targets."""

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint")
TUNABLE_SECTIONS = ("model", "train", "adaptation", "encoder", "baselines")
MAX_T = 100_000
"""ASHA's ``max_t``: far above any epoch count, so trials end by the trainer's own caps and
early stopping, never by length."""

CROSSREC_SPACE: dict[str, dict[str, Any]] = {
    "train.lr": {"loguniform": [1e-4, 3e-3]},
    "model.dim": {"choice": [32, 64, 128]},
    "model.dropout": {"uniform": [0.0, 0.4]},
    "model.temperature": {"loguniform": [0.03, 0.2]},
    "train.num_negatives": {"choice": [256, 1024, 4096]},
    "train.max_epochs": {"choice": [10, 20, 40]},
    "model.id_embeddings": {"choice": [True, False]},
    "model.id_dropout": {"uniform": [0.0, 0.3]},
}
"""Default space of the crossrec variants (``crossrec-*``)."""

ADAPTATION_SPACE: dict[str, dict[str, Any]] = {"adaptation.weight": {"loguniform": [0.01, 1.0]}}
"""Added for the variants with a domain-alignment loss (``-dann``, ``-mmd``, ``-coral``)."""

SASREC_SPACE: dict[str, dict[str, Any]] = {
    "baselines.sasrec.lr": {"loguniform": [1e-4, 3e-3]},
    "baselines.sasrec.dim": {"choice": [32, 64, 128]},
    "baselines.sasrec.dropout": {"uniform": [0.1, 0.6]},
    "baselines.sasrec.num_layers": {"choice": [1, 2, 3]},
    "baselines.sasrec.max_epochs": {"choice": [50, 100, 200]},
}
"""Default space of the SASRec baselines (``sasrec``, ``sasrec-mixed``)."""

HISTORY_SPACE: dict[str, dict[str, Any]] = {"model.max_history": {"choice": [5, 10, 20, 50]}}
"""Default space of ``itemknn`` and ``text-zero-shot`` (their only setting)."""


def default_search_space(model: str) -> dict[str, dict[str, Any]]:
    """The default search space of ``model``'s family (empty when it has nothing to tune)."""
    if model.startswith("crossrec"):
        extra = ADAPTATION_SPACE if model.rsplit("-", 1)[-1] in ("dann", "mmd", "coral") else {}
        return {**CROSSREC_SPACE, **extra}
    if model.startswith("sasrec"):
        return dict(SASREC_SPACE)
    if model in ("itemknn", "text-zero-shot"):
        return dict(HISTORY_SPACE)
    return {}


# --------------------------------------------------------------------------- search space
@dataclass(frozen=True)
class ParamSpec:
    """One searched config field: ``kind`` is one of `DISTRIBUTIONS`, ``args`` its values or
    ``(low, high)`` bounds (``randint``: both inclusive)."""

    key: str
    kind: str
    args: tuple[Any, ...]

    def describe(self) -> str:
        """E.g. ``loguniform(0.0001, 0.003)``."""
        return f"{self.kind}({', '.join(json.dumps(a) for a in self.args)})"

    def domain(self) -> Any:
        """The Ray Tune sampling domain."""
        from ray import tune

        if self.kind == "choice":
            return tune.choice(list(self.args))
        low, high = self.args
        if self.kind == "uniform":
            return tune.uniform(low, high)
        if self.kind == "loguniform":
            return tune.loguniform(low, high)
        return tune.randint(low, high + 1)  # Ray's upper bound is exclusive


def _section_type(annotation: Any) -> type[BaseModel] | None:
    for t in (annotation, *get_args(annotation)):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return None


def _is_integer(annotation: Any) -> bool:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return bool(args) and all(a is int for a in args)
    return annotation is int


def _field(key: str) -> Any:
    """The pydantic field a search-space key names; a `ConfigError` naming the key otherwise."""
    where = f"tune.search_space.{key}"
    parts = key.split(".")
    section = parts[0]
    if section in ("data", "eval"):
        raise ConfigError(
            where,
            "data and eval settings define the validation cases every trial "
            "is scored on: they cannot be tuned",
        )
    if section not in TUNABLE_SECTIONS:
        known = ", ".join(TUNABLE_SECTIONS)
        reason = (
            "not a config section"
            if section not in CrossRecConfig.model_fields
            else ("does not change what training computes")
        )
        raise ConfigError(where, f"{section!r} {reason}; tunable sections: {known}")
    if len(parts) < 2:
        raise ConfigError(where, "is a section: name one of its fields (section.field)")
    if section == "train" and parts[1] in RUNTIME_TRAIN_FIELDS:
        raise ConfigError(
            where,
            "says where training runs, not what it computes: set it with "
            "--set, not in the search space",
        )
    model: type[BaseModel] = CrossRecConfig
    info: Any = None
    for depth, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            close = difflib.get_close_matches(part, list(fields), n=1)
            hint = f"; did you mean {'.'.join([*parts[:depth], close[0]])!r}?" if close else ""
            raise ConfigError(where, f"unknown config field{hint}")
        info = fields[part]
        sub = _section_type(info.annotation)
        if depth < len(parts) - 1 and sub is None:
            raise ConfigError(where, f"{'.'.join(parts[: depth + 1])} is not a section")
        if depth == len(parts) - 1 and sub is not None:
            raise ConfigError(where, "is a section: name one of its fields")
        if sub is not None:
            model = sub
    return info


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_number(value: Any) -> Any:
    """``"1e-4"`` as 1e-4: YAML reads exponents without a dot as strings."""
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                continue
    return value


def _parse_spec(key: str, spec: Any, annotation: Any) -> ParamSpec:
    where = f"tune.search_space.{key}"
    example = "e.g. {loguniform: [1e-4, 3e-3]} or {choice: [64, 128]}"
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise ConfigError(where, f"must be one distribution, {example}; got {spec!r}")
    ((kind, args),) = spec.items()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(
            where, f"unknown distribution {kind!r}; expected one of: {', '.join(DISTRIBUTIONS)}"
        )
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ConfigError(where, f"choice needs a non-empty list of values; got {args!r}")
        return ParamSpec(key, kind, tuple(args))
    if isinstance(args, list):
        args = [_as_number(a) for a in args]
    if not (isinstance(args, list) and len(args) == 2 and all(_number(a) for a in args)):
        raise ConfigError(where, f"{kind} needs [low, high] numbers; got {args!r}")
    low, high = args
    if kind == "randint" and not all(isinstance(a, int) for a in args):
        raise ConfigError(where, f"randint needs integer bounds; got {args!r}")
    if kind != "randint" and _is_integer(annotation):
        raise ConfigError(where, f"is an integer field: use randint or choice, not {kind}")
    if low > high or (low == high and kind != "randint"):
        raise ConfigError(where, f"{kind} needs low < high; got {args!r}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(where, f"loguniform needs low > 0; got {args!r}")
    return ParamSpec(key, kind, (low, high))


def parse_search_space(raw: Any, cfg: CrossRecConfig | None = None) -> dict[str, ParamSpec]:
    """Validates a search-space mapping ``{config key: {distribution: args}}``.

    Every key must be a field of a tunable section; every value (each choice, both bounds) must
    be valid for that field in ``cfg`` (default: the defaults).

    Raises:
        ConfigError: naming ``tune.search_space.<key>`` and what is wrong with it.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError("tune.search_space", f"must be a mapping of config keys; got {raw!r}")
    if not raw:
        raise ConfigError("tune.search_space", "is empty: name at least one config key")
    base = cfg or CrossRecConfig()
    space: dict[str, ParamSpec] = {}
    for key, spec in raw.items():
        if not isinstance(key, str) or not key.strip():
            raise ConfigError("tune.search_space", f"key {key!r} is not a config field path")
        param = _parse_spec(key, spec, _field(key).annotation)
        for value in param.args:
            try:
                with_overrides(base, [override(key, value)])
            except ConfigError as exc:
                raise ConfigError(
                    f"tune.search_space.{key}", f"value {value!r} is invalid: {exc.reason}"
                ) from None
        space[key] = param
    return space


def search_space_for(cfg: CrossRecConfig) -> dict[str, ParamSpec]:
    """``tune.search_space`` when set, else the default space of ``tune.model``'s family."""
    raw = cfg.tune.search_space
    if raw is None:
        raw = default_search_space(cfg.tune.model)
        if not raw:
            raise ConfigError(
                "tune.search_space",
                f"model {cfg.tune.model!r} has no default search space: set one, e.g. "
                "--set 'tune.search_space={train.lr: {loguniform: [1e-4, 3e-3]}}'",
            )
    return parse_search_space(raw, cfg)


def override(key: str, value: Any) -> str:
    """``key=value`` as `with_overrides` parses it back to the same value."""
    if hasattr(value, "item") and not isinstance(value, list | dict):
        value = value.item()  # numpy scalars from the samplers
    if isinstance(value, float) and math.isfinite(value):
        text = repr(value)
        if "e" in text and "." not in text.split("e")[0]:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"  # PyYAML reads 1e-05 as a string, 1.0e-05 as float
        return f"{key}={text}"
    return f"{key}={json.dumps(value)}"


def overrides_for(params: Mapping[str, Any]) -> list[str]:
    """A trial's sampled ``{key: value}`` as ``--set`` overrides."""
    return [override(k, v) for k, v in params.items()]


# --------------------------------------------------------------------------- trials
def _variants() -> Mapping[str, Any]:
    from crossrec.models.variants import VARIANTS

    return VARIANTS


def model_config(name: str, cfg: CrossRecConfig) -> CrossRecConfig:
    """``cfg`` with the settings of crossrec variant ``name`` (a baseline: ``cfg`` itself)."""
    if name in _variants():
        from crossrec.models.variants import variant_config

        return variant_config(name, cfg)
    return cfg


class EpochReporter:
    """Turns the trainer's per-epoch records into Tune reports (see the module docstring).

    Args:
        targets: the split's target domains; per-epoch reports only when there is one.
        final_stage: the last configured training stage; only its epochs are reported.
        report: called with each report's metrics (`ray.tune.report` in a trial).
    """

    def __init__(
        self,
        targets: Sequence[str],
        final_stage: str,
        report: Callable[[dict[str, Any]], None],
    ) -> None:
        self.targets = list(targets)
        # Several targets: per-epoch reports only from a joint run that scores them all each
        # epoch (the records carry `valid_ndcg@10[target]`); the mean of each one's best so far.
        self.per_epoch = True
        self.best_per_target: dict[str, float] = {}
        self.final_stage = final_stage
        self.report = report
        self.best = -math.inf
        self.epochs = 0

    def __call__(self, record: Mapping[str, Any]) -> None:
        if not self.per_epoch or record.get("stage") != self.final_stage:
            return
        if len(self.targets) > 1:
            raw = [record.get(f"{METRIC}[{t}]") for t in self.targets]
            scores = [float(v) for v in raw if v is not None]
            if len(scores) < len(raw) or not all(math.isfinite(v) for v in scores):
                return
            for t, v in zip(self.targets, scores, strict=True):
                self.best_per_target[t] = max(self.best_per_target.get(t, -math.inf), v)
            score: Any = sum(self.best_per_target.values()) / len(self.targets)
        else:
            score = record.get(METRIC)
        if score is None or not math.isfinite(float(score)):
            return
        self.best = max(self.best, float(score))
        self.epochs += 1
        self.report(
            {METRIC: self.best, "epoch": int(record.get("epoch", self.epochs)), "final": False}
        )

    def final(self, per_target: Mapping[str, float]) -> dict[str, Any]:
        """The last report: the mean over the targets, each target's score, ``final=True``."""
        scores = [v for v in per_target.values() if math.isfinite(v)]
        mean = sum(scores) / len(scores) if scores else float("nan")
        return {
            METRIC: mean,
            "final": True,
            "epoch": self.epochs,
            **{f"{METRIC}/{t}": v for t, v in per_target.items()},
        }


def target_scores(rows: Sequence[EvaluationRow]) -> dict[str, float]:
    """``{target domain: full-ranking NDCG@10 over all its cases}`` from evaluator rows."""
    return {
        r.domain: float(r.metrics["ndcg@10"])
        for r in rows
        if r.slice == "all" and r.protocol == "full"
    }


def run_trial(
    params: dict[str, Any],
    *,
    base: CrossRecConfig,
    split: Split,
    model_name: str,
    workdir: str | None = None,
) -> None:
    """One Tune trial: fit ``model_name`` with ``params`` applied to ``base``, report per
    epoch where that is sound, then the final validation score."""
    import torch
    from ray import tune

    from crossrec.evaluation import TargetDomainEvaluator
    from crossrec.experiments import make_model

    if workdir and os.path.isdir(workdir):
        os.chdir(workdir)  # Tune starts trials in their own folder; config paths are relative
    torch.set_num_threads(max(1, int(base.tune.cpus_per_trial)))
    cfg = model_config(model_name, with_overrides(base, overrides_for(params), origin="tune"))
    reporter = EpochReporter(split.target_domains, cfg.train.stages[-1], tune.report)
    kwargs: dict[str, Any] = {"on_epoch": reporter} if model_name in _variants() else {}
    model = make_model(model_name, cfg, **kwargs)
    model.fit(split)
    rows = TargetDomainEvaluator(split, cfg.eval).evaluate(model, "valid", protocols=["full"])
    tune.report(reporter.final(target_scores(rows)))


def _trial_dirname(trial: Any) -> str:
    return str(trial.trial_id)


def _show(params: Mapping[str, Any]) -> str:
    out = []
    for key, value in params.items():
        if hasattr(value, "item") and not isinstance(value, list | dict):
            value = value.item()
        out.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(out)


def _progress_callback(echo: Callable[[str], None], total: int) -> Any:
    """A Tune callback that prints one line per finished trial."""
    from ray import tune

    class _Progress(tune.Callback):
        def __init__(self) -> None:
            self.done = 0

        def _line(self, trial: Any, what: str) -> None:
            self.done += 1
            echo(f"[{self.done}/{total}] trial {trial.trial_id} {what}  {_show(trial.config)}")

        def on_trial_complete(
            self, iteration: int, trials: list[Any], trial: Any, **info: Any
        ) -> None:
            last = trial.last_result or {}
            score = last.get(METRIC)
            if score is None:
                self._line(trial, "ended without a score")
                return
            how = "done" if last.get("final") else f"stopped early after epoch {last.get('epoch')}"
            self._line(
                trial, f"{METRIC} {float(score):.4f} ({how}, {last.get('time_total_s', 0.0):.0f}s)"
            )

        def on_trial_error(
            self, iteration: int, trials: list[Any], trial: Any, **info: Any
        ) -> None:
            self._line(trial, "failed (see trials.json)")

    return _Progress()


# --------------------------------------------------------------------------- the search
@dataclass
class TrialRecord:
    """One trial's sampled params, status (complete, stopped, error, no result) and score."""

    trial_id: str
    status: str
    score: float
    params: dict[str, Any]
    targets: dict[str, float] = field(default_factory=dict)
    epochs: int = 0
    seconds: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        def clean(v: float) -> float | None:
            return v if math.isfinite(v) else None

        return {
            "trial_id": self.trial_id,
            "status": self.status,
            METRIC: clean(self.score),
            "params": self.params,
            "targets": {k: clean(v) for k, v in self.targets.items()},
            "epochs": self.epochs,
            "seconds": round(self.seconds, 2),
            "error": self.error,
        }


@dataclass
class TuneSummary:
    """What `run_tune` did: every trial (best first), the best one and the files written."""

    model: str
    trials: list[TrialRecord]
    best: TrialRecord
    best_config: CrossRecConfig
    best_path: Path
    trials_csv: Path
    trials_json: Path


def default_output(cfg: CrossRecConfig) -> Path:
    """``<train.storage_path or runs>/tune-<model>-<time>/best.yaml``."""
    storage = cfg.train.storage_path
    base = Path("runs") if "://" in storage else Path(storage)
    return base / f"tune-{cfg.tune.model}-{time.strftime('%Y%m%d-%H%M%S')}" / "best.yaml"


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, list | dict):
        return value.item()
    return value


def _records(grid: Any, keys: Sequence[str]) -> list[TrialRecord]:
    records = []
    for result in grid:
        metrics = dict(result.metrics or {})
        config = dict(result.config or {})
        score = metrics.get(METRIC)
        if result.error is not None:
            status = "error"
        elif score is None:
            status = "no result"
        else:
            status = "complete" if metrics.get("final") else "stopped"
        error = None
        if result.error is not None:
            lines = [ln for ln in str(result.error).splitlines() if ln.strip()]
            error = lines[-1] if lines else type(result.error).__name__
        prefix = f"{METRIC}/"
        records.append(
            TrialRecord(
                trial_id=str(metrics.get("trial_id") or Path(str(result.path)).name),
                status=status,
                score=float(score) if score is not None else float("nan"),
                params={k: _plain(config.get(k)) for k in keys},
                targets={
                    k[len(prefix) :]: float(v) for k, v in metrics.items() if k.startswith(prefix)
                },
                epochs=int(metrics.get("epoch") or 0),
                seconds=float(metrics.get("time_total_s") or 0.0),
                error=error,
            )
        )
    records.sort(key=lambda r: -r.score if math.isfinite(r.score) else math.inf)
    return records


def _write_trials(
    records: list[TrialRecord], keys: Sequence[str], csv_path: Path, json_path: Path
) -> None:
    targets = sorted({t for r in records for t in r.targets})
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "trial_id",
                "status",
                METRIC,
                *keys,
                *(f"{METRIC}/{t}" for t in targets),
                "epochs",
                "seconds",
                "error",
            ]
        )
        for r in records:
            writer.writerow(
                [
                    r.trial_id,
                    r.status,
                    "" if math.isnan(r.score) else r.score,
                    *(
                        json.dumps(r.params.get(k))
                        if isinstance(r.params.get(k), list)
                        else r.params.get(k)
                        for k in keys
                    ),
                    *(r.targets.get(t, "") for t in targets),
                    r.epochs,
                    round(r.seconds, 2),
                    r.error or "",
                ]
            )
    json_path.write_text(json.dumps([r.to_dict() for r in records], indent=2) + "\n")


def run_tune(
    cfg: CrossRecConfig,
    *,
    output: Path | None = None,
    echo: Callable[[str], None] = logger.info,
    log_to_driver: bool = False,
) -> TuneSummary:
    """Runs the search ``cfg.tune`` describes and writes the best config and the trials table.

    Args:
        cfg: the input config; its ``tune`` section says which model, how many trials, etc.
        output: the best config's YAML path (default `default_output`); ``trials.csv`` and
            ``trials.json`` are written beside it.
        echo: receives progress lines (one per finished trial) and the result.
        log_to_driver: show the trials' own logs.

    Raises:
        ConfigError: unknown model, bad search space, a trial larger than the local Ray.
        CrossRecError: no trial produced a score.
    """
    from crossrec.data.loaders import load_dataset
    from crossrec.data.splits import make_split
    from crossrec.experiments import all_model_names, target_domains_for
    from crossrec.ray_runtime import ray_session

    t = cfg.tune
    known = all_model_names()
    if t.model not in known:
        raise ConfigError("tune.model", f"{t.model!r} is not one of: {', '.join(known)}")
    space = search_space_for(cfg)
    trial_cfg = model_config(t.model, cfg)  # a variant that does not apply here fails now
    best_path = Path(output) if output is not None else default_output(cfg)
    best_path.parent.mkdir(parents=True, exist_ok=True)

    dataset = load_dataset(cfg.data)
    split = make_split(dataset, cfg.eval, target_domains_for(dataset, cfg))
    if len(split.target_domains) == 1:
        per_epoch = "per epoch"
    elif trial_cfg.train.stages == ["joint"] and t.model in _variants():
        per_epoch = "per epoch (the mean of each target's best so far), and at the end"
    else:
        per_epoch = "at the end (several targets, fitted one after another)"
    echo(
        f"tuning {t.model} on {dataset.name} (targets: {', '.join(split.target_domains)}): "
        f"{t.num_samples} trials, ASHA grace_period={t.grace_period} "
        f"reduction_factor={t.reduction_factor}, {METRIC} reported {per_epoch}"
    )
    for param in space.values():
        echo(f"  {param.key}: {param.describe()}")

    with ray_session(cfg.train.ray_address, log_to_driver=log_to_driver) as resources:
        if cfg.train.ray_address is None:
            for name, need in (("CPU", t.cpus_per_trial), ("GPU", t.gpus_per_trial)):
                have = float(resources.get(name, 0.0))
                if need > have:
                    raise ConfigError(
                        f"tune.{name.lower()}s_per_trial",
                        f"{need:g} {name}s per trial, but Ray has {have:g}",
                    )
        grid = _search(cfg, space, split, best_path.parent, echo)

    keys = list(space)
    records = _records(grid, keys)
    trials_csv = best_path.parent / "trials.csv"
    trials_json = best_path.parent / "trials.json"
    _write_trials(records, keys, trials_csv, trials_json)
    scored = [r for r in records if math.isfinite(r.score)]
    if not scored:
        raise CrossRecError(f"no trial of {t.model} produced a score; see {trials_json}")
    best = scored[0]
    best_config = model_config(
        t.model, with_overrides(cfg, overrides_for(best.params), origin="tune best")
    )
    header = (
        f"# crossrec tune --model {t.model}: best of {len(records)} trials, {METRIC} "
        f"{best.score:.4f} (trial {best.trial_id}, {best.status})\n"
        f"# overrides: {' '.join(overrides_for(best.params))}\n"
    )
    # Secrets are left out (null): set them again where the config is used.
    body = yaml.safe_dump(best_config.public_dump(), sort_keys=False)
    best_path.write_text(header + body, encoding="utf-8")
    echo(
        f"best {METRIC} {best.score:.4f} (trial {best.trial_id}, {best.status}): "
        f"{_show(best.params)}"
    )
    echo(f"wrote {best_path} ({len(records)} trials in {trials_csv.name}, {trials_json.name})")
    return TuneSummary(t.model, records, best, best_config, best_path, trials_csv, trials_json)


def _search(
    cfg: CrossRecConfig,
    space: Mapping[str, ParamSpec],
    split: Split,
    folder: Path,
    echo: Callable[[str], None],
) -> Any:
    """Runs the Tuner; returns its ResultGrid."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    t = cfg.tune
    trainable = tune.with_parameters(
        run_trial, base=cfg, split=split, model_name=t.model, workdir=os.getcwd()
    )  # the split (with its dataset) goes into Ray's object store once, not once per trial
    resources = {"cpu": t.cpus_per_trial, "gpu": t.gpus_per_trial}
    scheduler = ASHAScheduler(
        time_attr="training_iteration",
        max_t=MAX_T,
        grace_period=t.grace_period,
        reduction_factor=t.reduction_factor,
    )
    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space={key: param.domain() for key, param in space.items()},
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="max",
            scheduler=scheduler,
            num_samples=t.num_samples,
            search_alg=BasicVariantGenerator(random_state=t.seed),
            max_concurrent_trials=t.max_concurrent_trials,
            time_budget_s=t.time_budget_s,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name="ray-tune",
            storage_path=str(folder.resolve()),
            verbose=0,
            callbacks=[_progress_callback(echo, t.num_samples)],
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    quiet = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # verbose=0 then prints nothing: the lines are ours
    tune_logger = logging.getLogger("ray.tune")
    level = tune_logger.level
    tune_logger.setLevel(max(level, logging.WARNING))
    try:
        return tuner.fit()
    finally:
        tune_logger.setLevel(level)
        if quiet is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = quiet
