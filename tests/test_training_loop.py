"""The training loop's distributed hooks without Ray: resumable stage checkpoints, sharded
validation, run storage and fault-injection parsing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crossrec.config import CrossRecConfig, with_overrides
from crossrec.data.splits import Split
from crossrec.errors import ConfigError, CrossRecError
from crossrec.evaluation import TargetDomainEvaluator
from crossrec.models.crossrec_model import CrossRecModel
from crossrec.trainer import CrossRecTrainer, StageRun, StageState, TrainContext
from crossrec.trainer.checkpoint import read_stage_manifest, save_stage

FAST = [
    "train.max_epochs=4",
    "train.patience=4",
    "train.batch_size=64",
    "train.ranker_epochs=0",
    "train.stages=[adapt]",
    "model.dim=32",
]


class Interrupted(Exception):
    pass


class CheckpointingContext(TrainContext):
    """Writes a stage checkpoint after every epoch; stops the run after ``stop_after``."""

    def __init__(self, root: Path, stop_after: int | None = None, resume_from: Path | None = None):
        self.root = root
        self.stop_after = stop_after
        self.resume_from = resume_from
        self.trainer: CrossRecTrainer | None = None
        self.saved: list[Path] = []

    def resume(self, stage: str) -> Path | None:
        return self.resume_from

    def end_epoch(self, run: StageRun, record: dict[str, float]) -> None:
        assert self.trainer is not None
        self.saved.append(
            save_stage(self.root / f"epoch-{run.state.epoch}", self.trainer, run, record)
        )
        if self.stop_after is not None and run.state.epoch >= self.stop_after:
            raise Interrupted


def _trainer(split: Split, cfg: CrossRecConfig) -> CrossRecTrainer:
    torch.manual_seed(cfg.train.seed)
    vectors = torch.randn(split.dataset.num_items, 24)
    model = CrossRecModel.for_dataset(split.dataset, cfg, text_vectors=vectors)
    return CrossRecTrainer(model, split, cfg, "films")


def _one_epoch(
    split: Split, cfg: CrossRecConfig, root: Path
) -> tuple[CrossRecTrainer, CheckpointingContext]:
    """A trainer after one checkpointed epoch of ``adapt``."""
    trainer = _trainer(split, with_overrides(cfg, ["train.max_epochs=1"]))
    ctx = CheckpointingContext(root)
    ctx.trainer = trainer
    trainer.run_stage("adapt", ctx)
    return trainer, ctx


@pytest.fixture
def cfg(small_config: CrossRecConfig) -> CrossRecConfig:
    return with_overrides(small_config, FAST)


def test_interrupted_stage_resumes_where_it_stopped(
    small_split: Split, cfg: CrossRecConfig, tmp_path: Path
) -> None:
    whole = _trainer(small_split, cfg)
    full_report = whole.run_stage("adapt")

    first = _trainer(small_split, cfg)
    ctx = CheckpointingContext(tmp_path / "a", stop_after=2)
    ctx.trainer = first
    with pytest.raises(Interrupted):
        first.run_stage("adapt", ctx)
    manifest = read_stage_manifest(ctx.saved[-1])
    assert manifest["epoch"] == 2
    assert manifest["stage"] == "adapt"
    assert manifest["config"]["train"]["batch_size"] == 64
    assert "crossrec_version" in manifest

    second = _trainer(small_split, cfg)
    resumed = CheckpointingContext(tmp_path / "b", resume_from=ctx.saved[-1])
    resumed.trainer = second
    report = second.run_stage("adapt", resumed)
    # Only epochs 3.. ran again, and the run ends where the uninterrupted one did.
    assert [int(h["epoch"]) for h in report.history] == list(range(1, full_report.epochs + 1))
    assert [p.name for p in resumed.saved] == [f"epoch-{e}" for e in range(3, report.epochs + 1)]
    assert report.best_valid_ndcg == pytest.approx(full_report.best_valid_ndcg, abs=1e-6)
    for name, param in whole.model.named_parameters():
        torch.testing.assert_close(param, dict(second.model.named_parameters())[name])


def test_a_plateau_drops_the_learning_rate_from_the_best_weights(
    small_split: Split, cfg: CrossRecConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = with_overrides(
        cfg,
        ["train.max_epochs=8", "train.patience=1", "train.lr_drops=1", "train.lr_drop_factor=0.5"],
    )
    trainer = _trainer(small_split, cfg)
    # Validation scores scripted so epoch 1 stays the best: epoch 2 is a plateau (drop), epoch 3
    # another one (no drops left: stop).
    scores = iter([0.5, 0.4, 0.3, 0.2])
    monkeypatch.setattr(trainer, "validate", lambda ctx=None, target=None: next(scores))
    lrs: list[float] = []
    weights: list[dict[str, torch.Tensor]] = []

    class Watch(TrainContext):
        def end_epoch(self, run: StageRun, record: dict[str, float]) -> None:
            lrs.append(run.optimizer.param_groups[0]["lr"])
            weights.append({n: p.detach().clone() for n, p in trainer.model.named_parameters()})

    report = trainer.run_stage("adapt", Watch())
    assert report.epochs == 3
    assert report.best_epoch == 1
    assert [h.get("lr_drop") for h in report.history] == [None, 1.0, None]
    assert lrs == pytest.approx([cfg.train.lr, cfg.train.lr * 0.5, cfg.train.lr * 0.5])
    # The drop went back to epoch 1's weights before epoch 3 trained on.
    for name, tensor in weights[0].items():
        if dict(trainer.model.named_parameters())[name].requires_grad:
            torch.testing.assert_close(weights[1][name], tensor)


def test_stage_checkpoint_model_is_a_loadable_checkpoint(
    small_split: Split, cfg: CrossRecConfig, tmp_path: Path
) -> None:
    trainer, ctx = _one_epoch(small_split, cfg, tmp_path)
    loaded = CrossRecModel.from_pretrained(ctx.saved[-1] / "model")
    assert loaded.stage == "adapt"
    assert "adapt_valid_ndcg@10" in loaded.metrics
    for name, tensor in trainer.model.state_dict().items():
        torch.testing.assert_close(tensor, loaded.state_dict()[name])


def test_resuming_the_wrong_stage_is_refused(
    small_split: Split, cfg: CrossRecConfig, tmp_path: Path
) -> None:
    trainer, ctx = _one_epoch(small_split, cfg, tmp_path)
    with pytest.raises(CrossRecError, match="stage 'adapt'"):
        trainer.start_stage("pretrain", resume_from=ctx.saved[-1])


def test_stage_state_round_trips_non_finite_numbers() -> None:
    state = StageState("pretrain", epoch=3, history=[{"epoch": 1.0, "loss": 2.5}])
    again = StageState.from_json(state.to_json())
    assert again.best_loss == float("inf")
    assert again.best_valid_ndcg != again.best_valid_ndcg  # NaN
    assert again.history == state.history
    assert again.epoch == 3


def test_validation_shards_add_up_to_the_whole(small_split: Split, cfg: CrossRecConfig) -> None:
    trainer = _trainer(small_split, cfg)
    trainer.model.eval()
    evaluator = TargetDomainEvaluator.for_model_selection(small_split)
    whole = evaluator.ndcg_at(trainer.view, 10, "valid", ["films"])
    parts = [
        evaluator.ndcg_sum_at(trainer.view, 10, "valid", ["films"], shard=(i, 3)) for i in range(3)
    ]
    total = sum(p[0] for p in parts)
    count = sum(p[1] for p in parts)
    assert count == sum(1 for c in small_split.valid if c.domain == "films")
    assert total / count == pytest.approx(whole)


def test_importing_crossrec_does_not_import_ray() -> None:
    code = (
        "import sys, crossrec, crossrec.cli, crossrec.trainer, crossrec.trainer.checkpoint, "
        "crossrec.experiments; print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_run_storage_round_trips_json_and_folders(tmp_path: Path) -> None:
    from training.storage import RunStorage

    storage = RunStorage(str(tmp_path / "runs"), "nightly")
    assert storage.read_json("run.json") is None
    storage.write_json("stages/films/adapt.json", {"epoch": 3})
    assert storage.read_json("stages/films/adapt.json") == {"epoch": 3}
    src = tmp_path / "src"
    src.mkdir()
    (src / "weights.bin").write_bytes(b"\x00\x01")
    storage.upload(src, "models/films")
    assert storage.exists("models/films/weights.bin")
    assert storage.download("models/films", tmp_path / "copy")
    assert (tmp_path / "copy" / "weights.bin").read_bytes() == b"\x00\x01"
    assert not storage.download("models/books", tmp_path / "none")
    assert storage.uri("models") == f"{tmp_path / 'runs'}/nightly/models"


@pytest.mark.parametrize("name", ["", "a/b", ".."])
def test_run_names_must_be_plain_folder_names(tmp_path: Path, name: str) -> None:
    from training.storage import RunStorage

    with pytest.raises(ConfigError, match="--name"):
        RunStorage(str(tmp_path), name)


@pytest.mark.parametrize("spec", ["adapt", "adapt:x", "adapt:1:2:3"])
def test_fault_spec_must_name_stage_and_epoch(tmp_path: Path, spec: str) -> None:
    from training.loop import FaultSpec

    with pytest.raises(ConfigError, match="CROSSREC_INJECT_FAULT"):
        FaultSpec(spec, str(tmp_path))
