"""`train_loop_per_worker`: the single-process training loop of `crossrec.trainer`, run on every
Ray Train worker.

Each worker builds the same model from the run's config, the split and the item vectors (shared
through Ray's object store), and runs `CrossRecTrainer.run_stage` with a `RayTrainContext`:

* the stage's loss module is wrapped in DDP by ``ray.train.torch.prepare_model`` (gloo on CPU,
  NCCL on GPU) and placed on ``ray.train.torch.get_device()``;
* each epoch's batches go through ``prepare_data_loader``: a ``DistributedSampler`` hands every
  worker every ``world_size``-th batch, and ``train.batch_size`` stays the global batch;
* validation is sharded: each worker scores every ``world_size``-th validation case and the
  NDCG sums are all-reduced, so every worker takes the same early-stopping decision;
* after every epoch every worker calls ``ray.train.report`` with the epoch's metrics; rank 0
  attaches the stage checkpoint (`crossrec.trainer.checkpoint`), and a restarted or rerun stage
  resumes from the latest one (``ray.train.get_checkpoint``).
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from crossrec.config import CrossRecConfig
from crossrec.models.crossrec_model import CrossRecModel
from crossrec.trainer import CrossRecTrainer, StageRun, TrainContext
from crossrec.trainer.checkpoint import load_model_weights, save_stage

logger = logging.getLogger(__name__)

FAULT_ENV = "CROSSREC_INJECT_FAULT"


class FaultSpec:
    """``STAGE:EPOCH[:RANK]``: that worker exits halfway through that epoch, once per run (a
    marker file under the run's storage remembers that it fired)."""

    def __init__(self, spec: str, marker_dir: str) -> None:
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not parts[1].isdigit():
            from crossrec.errors import ConfigError

            raise ConfigError(FAULT_ENV, f"expected STAGE:EPOCH[:RANK], got {spec!r}")
        self.stage = parts[0]
        self.epoch = int(parts[1])
        self.rank = int(parts[2]) if len(parts) == 3 else 0
        self.marker = Path(marker_dir) / f".fault-injected-{self.stage}-{self.epoch}-{self.rank}"

    def fire_if_due(self, stage: str, epoch: int, rank: int, step: int, steps: int) -> None:
        due = (stage, epoch, rank) == (self.stage, self.epoch, self.rank) and step == steps // 2
        if due and not self.marker.exists():
            # Ray Train's controller collects reports every health-check interval (2 s by
            # default); wait that long, as a worker dying halfway through a real (longer) epoch
            # would, so the previous epoch's checkpoint is registered before the crash.
            interval = float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2"))
            time.sleep(2 * interval + 0.5)
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            self.marker.write_text(f"worker rank={rank} exited at {stage} epoch {epoch}\n")
            logger.error("fault injection: rank=%d exits at stage=%s epoch=%d", rank, stage, epoch)
            os._exit(17)


class RayTrainContext(TrainContext):
    """The Ray Train side of `TrainContext` (see the module docstring)."""

    def __init__(self, config: dict[str, Any]) -> None:
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.device = ray.train.torch.get_device()
        self.config = config
        self.trainer: CrossRecTrainer | None = None
        self.progress = config.get("progress")
        fault = config.get("fault")
        self.fault = FaultSpec(fault, config["fault_marker_dir"]) if fault else None
        self._resume_dir: Path | None = None
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is not None:
            self._resume_dir = Path(tempfile.mkdtemp(prefix="crossrec-resume-"))
            checkpoint.to_directory(str(self._resume_dir))

    def wrap_model(self, module: nn.Module) -> nn.Module:
        if self.world_size == 1:
            return module
        import ray.train.torch
        from torch.nn.parallel import DistributedDataParallel

        # Item tables (text vectors) are buffers that never change during a stage: no need to
        # broadcast them every step. Some parameters (e.g. another domain's query) get no
        # gradient in a step.
        kwargs: dict[str, Any] = {"find_unused_parameters": True}
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
            kwargs["forward_sync_buffers"] = False
        else:
            kwargs["broadcast_buffers"] = False
        wrapped: nn.Module = ray.train.torch.prepare_model(
            module, move_to_device=False, parallel_strategy_kwargs=kwargs
        )
        return wrapped

    def wrap_loader(self, loader: DataLoader[dict[str, torch.Tensor]]) -> Iterable[Any]:
        import ray.train.torch

        prepared: Iterable[Any] = ray.train.torch.prepare_data_loader(loader)
        return prepared

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        if self.world_size == 1:
            return values
        import torch.distributed as dist

        device = self.device if dist.get_backend() == "nccl" else torch.device("cpu")
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return [float(v) for v in tensor.cpu().tolist()]

    def resume(self, stage: str) -> Path | None:
        return self._resume_dir

    def fault_point(self, stage: str, epoch: int, step: int, steps: int) -> None:
        if self.fault is not None:
            self.fault.fire_if_due(stage, epoch, self.rank, step, steps)

    def notify(self, event: dict[str, Any]) -> None:
        """Sends an event to the driver's progress display (rank 0 only; best effort)."""
        if self.progress is None or not self.is_chief:
            return
        try:
            self.progress.put_nowait(event)
        except Exception:  # noqa: BLE001 - the display must never stop training
            logger.warning("progress queue unavailable", exc_info=True)

    def end_epoch(self, run: StageRun, record: dict[str, float]) -> None:
        import ray.train

        assert self.trainer is not None
        metrics: dict[str, Any] = {
            "stage": run.stage,
            "target": self.trainer.target,
            **record,
            "finished": run.state.finished,
            "world_size": self.world_size,
        }
        self.notify({"event": "epoch", **metrics})
        with tempfile.TemporaryDirectory(prefix="crossrec-ckpt-") as tmp:
            checkpoint = None
            if self.is_chief:
                save_stage(
                    Path(tmp),
                    self.trainer,
                    run,
                    record,
                    extra={"run_name": self.config["run_name"], "world_size": self.world_size},
                )
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)

    def cleanup(self) -> None:
        if self._resume_dir is not None:
            shutil.rmtree(self._resume_dir, ignore_errors=True)


def _resolve(value: Any) -> Any:
    import ray

    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs one stage (``config["stage"]``) for one target domain on this worker.

    Config keys: ``cfg`` (the crossrec config as JSON), ``stage``, ``target``, ``split`` and
    ``text_vectors`` (values or object refs), ``init_checkpoint`` (the previous stage's kept
    checkpoint, a ``ray.train.Checkpoint`` or None), ``run_name``, ``progress`` (a
    ``ray.util.queue.Queue`` or None), ``fault`` / ``fault_marker_dir`` (fault injection).
    """
    cfg = CrossRecConfig.model_validate(config["cfg"])
    split = _resolve(config["split"])
    vectors = _resolve(config["text_vectors"])
    stage, target = config["stage"], config["target"]
    ctx = RayTrainContext(config)
    torch.manual_seed(cfg.train.seed)
    model = CrossRecModel.for_dataset(split.dataset, cfg, text_vectors=vectors)
    model.to_device(ctx.device)
    trainer = CrossRecTrainer(model, split, cfg, target)
    ctx.trainer = trainer
    try:
        resume = ctx.resume(stage)
        if resume is not None:
            from crossrec.trainer.checkpoint import read_stage_manifest

            epoch = read_stage_manifest(resume)["epoch"]
            ctx.notify({"event": "resumed", "stage": stage, "target": target, "epoch": epoch})
        elif config.get("init_checkpoint") is not None:
            with config["init_checkpoint"].as_directory() as directory:
                load_model_weights(Path(directory), trainer)
                _carry_metrics(Path(directory), model)
        report = trainer.run_stage(stage, ctx)
        logger.info(
            "stage=%s target=%s rank=%d done epochs=%d best_epoch=%d best_valid_ndcg@10=%.4f",
            stage,
            target,
            ctx.rank,
            report.epochs,
            report.best_epoch,
            report.best_valid_ndcg,
        )
    finally:
        ctx.cleanup()


def _carry_metrics(directory: Path, model: CrossRecModel) -> None:
    """Keeps the previous stages' metrics in the model's manifest."""
    import json

    manifest = json.loads((directory / "model" / "manifest.json").read_text())
    model.metrics.update(manifest.get("metrics", {}))
