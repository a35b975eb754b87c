"""The stage pipeline on a local Ray: 2 CPU workers (gloo) against the single-process loop,
loadable checkpoints, a worker killed mid-stage, and a driver interrupted and rerun."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from crossrec.cli import app
from crossrec.config import CrossRecConfig, load_config
from crossrec.models.crossrec_model import CrossRecModel
from crossrec.trainer.estimator import CrossRecRecommender
from tests.conftest import init_local_ray

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONFIG = {
    "data": {"synthetic": {"num_users": 400, "items_per_domain": [200, 150]}},
    # The two-stage option exercises the pipeline's stage hand-over, reuse and resume.
    "train": {
        "stages": ["pretrain", "adapt"],
        "pretrain_max_epochs": 4,
        "max_epochs": 8,
        "patience": 8,
        "batch_size": 64,
        "ranker_epochs": 1,
        "num_workers": 2,
        "max_failures": 1,
    },
    "encoder": {"ray_min_items": 0, "ray_actors": 2},
    "eval": {"protocols": ["full"]},
    # Secrets a deployment's config file would hold: none may reach a file or a log line.
    "serve": {"api_key": "write-key-SECRET1"},
    "feature_store": {
        "password": "redis-SECRET4",
        "url": "redis://crossrec:url-SECRET5@127.0.0.1:6390/0",
    },
}
SECRETS = ("write-key-SECRET1", "redis-SECRET4", "url-SECRET5")


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    import ray

    init_local_ray()
    try:
        yield str(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs")


def _config(storage: Path, tmp: Path, **train: Any) -> tuple[CrossRecConfig, Path]:
    data = {**CONFIG, "train": {**CONFIG["train"], **train, "storage_path": str(storage)}}
    path = tmp / "train.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path), path


def _train(cfg: CrossRecConfig, name: str) -> tuple[Any, list[dict[str, Any]]]:
    from training.pipeline import run_training

    events: list[dict[str, Any]] = []
    return run_training(cfg, name=name, on_event=events.append), events


@pytest.fixture(scope="module")
def two_workers(
    ray_address: str, storage: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Any, list[dict[str, Any]]]:
    import logging

    cfg, _ = _config(storage, tmp_path_factory.mktemp("two"), tensorboard=True)
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect(logging.DEBUG)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        run, events = _train(cfg, "two-workers")
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
    LOG_LINES.extend(lines)
    return run, events


LOG_LINES: list[str] = []  # the two-worker run's driver log (every level)


def test_no_secret_in_a_run_folder_its_log_or_the_ray_workers_logs(
    two_workers: tuple[Any, list[dict[str, Any]]], storage: Path
) -> None:
    import ray

    assert LOG_LINES  # the driver logged the run
    assert not [line for line in LOG_LINES if any(s in line for s in SECRETS)]
    files = [p for p in (storage / "two-workers").rglob("*") if p.is_file()]
    assert files
    for path in files:
        text = path.read_bytes().decode("latin-1")
        assert not [s for s in SECRETS if s in text], path
    # The Ray Train workers' own logs (this session's): their arguments and log lines.
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    logs = [p for p in (session / "logs").rglob("*") if p.is_file()]
    assert logs
    for path in logs:
        text = path.read_bytes().decode("latin-1")
        assert not [s for s in SECRETS if s in text], path


def _adapt(run: Any) -> Any:
    return next(s for s in run.stages if s.stage == "adapt" and s.target == "films")


def test_two_workers_match_the_single_process_loop(
    two_workers: tuple[Any, list[dict[str, Any]]], storage: Path, tmp_path: Path
) -> None:
    run, events = two_workers
    cfg, _ = _config(storage, tmp_path)
    single = CrossRecRecommender(cfg, reuse_pretraining=False)
    single.fit(run.split)
    single_ndcg = next(r for r in single.reports["films"] if r.stage == "adapt").best_valid_ndcg
    distributed_ndcg = _adapt(run).best_valid_ndcg
    # Tolerance: two standard errors of the difference of two runs' mean NDCG@10 over the
    # validation cases (per-case NDCG lies in [0, 1], so its standard deviation is <= 0.5).
    n_valid = sum(1 for c in run.split.valid if c.domain == "films")
    tolerance = 2 * math.sqrt(2) * 0.5 / math.sqrt(n_valid)
    assert abs(distributed_ndcg - single_ndcg) <= tolerance, (distributed_ndcg, single_ndcg)
    # The same optimizer steps on the same batches: the training losses agree closely (only
    # dropout and sampled negatives differ per worker), epoch by epoch.
    single_losses = [h["loss"] for h in single.reports["films"][0].history]
    dist_losses = [
        e["loss"] for e in events if e.get("event") == "epoch" and e["stage"] == "pretrain"
    ]
    assert len(dist_losses) == len(single_losses)
    for ours, theirs in zip(dist_losses, single_losses, strict=True):
        assert abs(ours - theirs) <= 0.02 * theirs, (dist_losses, single_losses)
    epochs = [e for e in events if e.get("event") == "epoch"]
    assert {int(e["world_size"]) for e in epochs} == {2}
    assert [s.stage for s in run.stages] == ["pretrain", "adapt"]


def test_distributed_checkpoints_load_in_evaluate_and_serving(
    two_workers: tuple[Any, list[dict[str, Any]]], storage: Path
) -> None:
    run, _ = two_workers
    models = storage / "two-workers" / "models"
    result = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(models)])
    assert result.exit_code == 0, result.output
    assert "| crossrec-checkpoint | films | full | all |" in result.output
    final = CrossRecModel.from_pretrained(models / "films")
    assert final.stage == "evaluate"
    assert "test_full_ndcg@10" in final.metrics
    assert "adapt_valid_ndcg@10" in final.metrics
    # The kept adapt checkpoint is the best epoch, and it is a complete model checkpoint.
    kept = Path(_adapt(run).checkpoint)
    stage = yaml.safe_load((kept / "stage.json").read_text())
    assert stage["stage"] == "adapt"
    assert stage["epoch"] == _adapt(run).best_epoch
    assert stage["crossrec_version"]
    assert stage["config"]["train"]["num_workers"] == 2
    model = CrossRecModel.from_pretrained(kept / "model")
    assert model.target_domain == "films"
    assert model.stage == "adapt"


def test_the_run_draws_its_training_curves(
    two_workers: tuple[Any, list[dict[str, Any]]], storage: Path
) -> None:
    run, events = two_workers
    png = storage / "two-workers" / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 5_000  # a drawn figure, not an empty canvas
    assert any("training curves:" in str(e.get("message", "")) for e in events)
    # What it was drawn from: one point per epoch of every stage, in order.
    for stage in run.stages:
        assert [int(h["epoch"]) for h in stage.history] == list(range(1, stage.epochs + 1))
        assert all(math.isfinite(h["loss"]) for h in stage.history)
    assert any("valid_ndcg@10" in h for s in run.stages for h in s.history)
    # train.tensorboard: the same points as TensorBoard scalars, one run per target/stage.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for stage in run.stages:
        board = EventAccumulator(
            str(storage / "two-workers" / "tensorboard" / stage.target / stage.stage)
        ).Reload()
        loss = board.Scalars("loss")
        assert [e.step for e in loss] == list(range(1, stage.epochs + 1))
        assert [e.value for e in loss] == pytest.approx([h["loss"] for h in stage.history])
    assert any("TensorBoard: tensorboard --logdir" in str(e.get("message", "")) for e in events)


def test_a_worker_that_dies_is_replaced_and_the_stage_resumes(
    two_workers: tuple[Any, list[dict[str, Any]]],
    storage: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CROSSREC_INJECT_FAULT", "adapt:3:1")
    cfg, _ = _config(storage, tmp_path)
    run, events = _train(cfg, "faulty")
    assert (storage / "faulty" / "stages" / "films" / ".fault-injected-adapt-3-1").is_file()
    resumed = [e for e in events if e.get("event") == "resumed"]
    assert resumed, "the restarted worker group did not resume from a checkpoint"
    assert resumed[0]["stage"] == "adapt"
    assert resumed[0]["epoch"] >= 1
    adapt = _adapt(run)
    assert [int(h["epoch"]) for h in adapt.history] == list(range(1, adapt.epochs + 1))
    # Resuming is exact: the run ends where the run without a failure did.
    reference = _adapt(two_workers[0])
    assert adapt.best_valid_ndcg == pytest.approx(reference.best_valid_ndcg, abs=1e-4)
    assert (storage / "faulty" / "models" / "films" / "manifest.json").is_file()


def test_an_interrupted_driver_resumes_without_redoing_epochs(
    ray_address: str, storage: Path, tmp_path: Path
) -> None:
    cfg, path = _config(storage, tmp_path, max_epochs=20, patience=20)
    command = [
        sys.executable,
        "-m",
        "crossrec.cli",
        "train",
        "--config",
        str(path),
        "--name",
        "interrupted",
        "--address",
        ray_address,
    ]
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    adapt_dir = storage / "interrupted" / "stages" / "films" / "adapt"
    deadline = time.monotonic() + 300
    # Interrupt once Ray Train has recorded an adapt checkpoint (its snapshot file lists it).
    while time.monotonic() < deadline and first.poll() is None:
        if (adapt_dir / "checkpoint_manager_snapshot.json").is_file():
            break
        time.sleep(0.2)
    assert first.poll() is None, (tmp_path / "first.log").read_text()
    first.send_signal(signal.SIGINT)
    try:
        first.wait(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    log.close()
    assert first.returncode != 0
    assert not (storage / "interrupted" / "stages" / "films" / "adapt.json").exists()

    run, events = _train(cfg, "interrupted")
    resumed = [e for e in events if e.get("event") == "resumed"]
    assert len(resumed) == 1, events
    done = resumed[0]["epoch"]
    assert 1 <= done < 20
    rerun_epochs = [
        int(e["epoch"]) for e in events if e.get("event") == "epoch" and e["stage"] == "adapt"
    ]
    assert rerun_epochs == list(range(done + 1, 21))
    assert {"stage": "pretrain", "target": "films", "event": "stage_reused"} in events
    adapt = _adapt(run)
    assert [int(h["epoch"]) for h in adapt.history] == list(range(1, 21))
