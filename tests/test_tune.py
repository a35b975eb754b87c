"""`crossrec tune`: search-space parsing, the per-epoch reports ASHA sees, and the command end to
end on a local Ray (a cheap baseline and a crossrec variant on a tiny synthetic world)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from crossrec.cli import app
from crossrec.config import CrossRecConfig, load_config, with_overrides
from crossrec.errors import ConfigError
from crossrec.tuning import (
    METRIC,
    EpochReporter,
    default_search_space,
    override,
    parse_search_space,
    search_space_for,
)
from tests.conftest import init_local_ray

runner = CliRunner()


@pytest.mark.parametrize(
    ("space", "message"),
    [
        (
            {"train.lrr": {"loguniform": [1e-4, 1e-3]}},
            "train.lrr: unknown config field; did you mean 'train.lr'",
        ),
        ({"data.format": {"choice": ["movielens"]}}, "data.format: data and eval settings"),
        ({"serve.port": {"choice": [8000]}}, "serve.port: 'serve' does not change"),
        ({"train.num_workers": {"choice": [1, 2]}}, "train.num_workers: says where training runs"),
        ({"model": {"choice": [1]}}, "search_space.model: is a section"),
        ({"train.lr": {"normal": [0, 1]}}, "train.lr: unknown distribution 'normal'"),
        ({"train.lr": {"loguniform": [0, 1e-3]}}, "train.lr: loguniform needs low > 0"),
        ({"train.lr": {"uniform": [1e-3, 1e-4]}}, "train.lr: uniform needs low < high"),
        ({"train.lr": {"uniform": [1e-3]}}, "train.lr: uniform needs [low, high] numbers"),
        ({"model.dim": {"uniform": [16, 64]}}, "model.dim: is an integer field"),
        ({"model.dim": {"choice": [4, 64]}}, "model.dim: value 4 is invalid"),
        ({"model.dim": {"choice": []}}, "model.dim: choice needs a non-empty list"),
        ({"model.dim": {"choice": [64], "uniform": [1, 2]}}, "model.dim: must be one distribution"),
        ({}, "tune.search_space: is empty"),
    ],
)
def test_bad_search_spaces_are_rejected_naming_the_key(space: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_search_space(space)
    assert message in str(info.value)
    assert str(info.value).startswith("tune.search_space")


def test_search_spaces_parse_and_overrides_round_trip() -> None:
    space = parse_search_space(
        {
            "train.lr": {"loguniform": ["1e-4", 3e-3]},
            "model.max_history": {"randint": [5, 50]},
            "model.id_embeddings": {"choice": [True, False]},
        }
    )
    assert space["train.lr"].args == (1e-4, 3e-3)  # YAML's "1e-4" string is read as a number
    for model in (
        "crossrec-transfer",
        "crossrec-transfer-dann",
        "sasrec",
        "sasrec-mixed",
        "itemknn",
        "text-zero-shot",
    ):
        cfg = with_overrides(CrossRecConfig(), [f"tune.model={model}"])
        assert set(search_space_for(cfg)) == set(default_search_space(model))
    with pytest.raises(ConfigError, match="'popularity' has no default search space"):
        search_space_for(with_overrides(CrossRecConfig(), ["tune.model=popularity"]))
    cfg = with_overrides(
        CrossRecConfig(),
        [
            override("train.lr", 1e-05),
            override("encoder.template_fields", ["title"]),
            override("model.id_embeddings", False),
        ],
    )
    assert cfg.train.lr == 1e-05
    assert cfg.encoder.template_fields == ["title"]
    assert cfg.model.id_embeddings is False


def test_epoch_reports_are_the_running_best_of_the_last_stage_with_one_target() -> None:
    reports: list[dict[str, Any]] = []
    one = EpochReporter(["films"], "joint", reports.append)
    for stage, epoch, score in [
        ("pretrain", 1, 0.5),
        ("joint", 1, 0.1),
        ("joint", 2, 0.3),
        ("joint", 3, 0.2),
    ]:
        one({"stage": stage, "target": "films", "epoch": epoch, "loss": 1.0, METRIC: score})
    one({"stage": "joint", "target": "films", "epoch": 4, "loss": 1.0})  # no validation cases
    assert [r[METRIC] for r in reports] == [0.1, 0.3, 0.3]
    assert one.final({"films": 0.3}) == {
        METRIC: 0.3,
        "final": True,
        "epoch": 3,
        f"{METRIC}/films": 0.3,
    }

    reports.clear()
    several = EpochReporter(["books", "films"], "joint", reports.append)
    several({"stage": "joint", "target": "books", "epoch": 1, "loss": 1.0, METRIC: 0.4})
    assert reports == []  # one target's score alone: not comparable with the mean
    # One joint run scores every target each epoch: the mean of each target's best so far.
    for epoch, books, films in [(1, 0.4, 0.1), (2, 0.2, 0.3)]:
        several(
            {
                "stage": "joint",
                "target": "books",
                "epoch": epoch,
                "loss": 1.0,
                METRIC: books,
                f"{METRIC}[books]": books,
                f"{METRIC}[films]": films,
            }
        )
    assert [r[METRIC] for r in reports] == pytest.approx([0.25, 0.35])
    assert several.final({"books": 0.4, "films": 0.2})[METRIC] == pytest.approx(0.3)


# --------------------------------------------------------------------------- end to end
CONFIG = {
    "data": {"synthetic": {"num_users": 150, "items_per_domain": [120, 80]}},
    "train": {"max_epochs": 2, "patience": 2, "batch_size": 64, "ranker_epochs": 0},
    "eval": {"protocols": ["full"]},
    "tune": {"cpus_per_trial": 1, "max_concurrent_trials": 2},
}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    import ray

    init_local_ray()
    try:
        yield
    finally:
        ray.shutdown()


def _tune(tmp_path: Path, model: str, *extra: str) -> tuple[Path, list[dict[str, Any]]]:
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    best = tmp_path / model / "best.yaml"
    args = [
        "tune",
        "--config",
        str(config),
        "--model",
        model,
        "--samples",
        "2",
        "--time-budget",
        "600",
        "--output",
        str(best),
        *extra,
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"best {METRIC}" in result.output
    assert result.output.count("] trial ") == 2  # one line per finished trial
    return best, json.loads((best.parent / "trials.json").read_text())


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "extra"),
    [
        ("itemknn", []),  # the default space of its family
        (
            "crossrec-transfer",
            [
                "--set",
                "tune.search_space={train.lr: {loguniform: [1.0e-3, "
                "3.0e-3]}, model.dim: {choice: [16, 32]}}",
            ],
        ),
    ],
)
def test_tune_writes_a_loadable_best_config_and_every_trial(
    local_ray: None, tmp_path: Path, model: str, extra: list[str]
) -> None:
    best_path, trials = _tune(tmp_path, model, *extra)
    assert len(trials) == 2
    assert all(math.isfinite(t[METRIC]) for t in trials)
    with (best_path.parent / "trials.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    assert all(math.isfinite(float(r[METRIC])) for r in rows)

    best = max(trials, key=lambda t: t[METRIC])
    cfg = load_config(best_path)
    assert cfg.tune.model == model
    assert cfg.data.synthetic.num_users == 150  # the input config ...
    for key, value in best["params"].items():  # ... with the best trial's overrides
        section, *path = key.split(".")
        node: Any = getattr(cfg, section)
        for part in path:
            node = getattr(node, part)
        assert node == pytest.approx(value), key
    if model == "crossrec-transfer":
        assert set(best["params"]) == {"train.lr", "model.dim"}
        assert cfg.train.max_epochs == 2


def test_tune_command_rejects_a_bad_search_space_before_starting_ray() -> None:
    result = runner.invoke(app, ["tune", "--set", "tune.search_space={train.lrr: {choice: [1]}}"])
    assert result.exit_code == 2
    assert "tune.search_space.train.lrr: unknown config field" in result.output
    help_text = runner.invoke(app, ["tune", "--help"]).output
    for option in ("--model", "--samples", "--time-budget", "--output", "--set", "--config"):
        assert option in help_text
