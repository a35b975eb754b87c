"""Stage checkpoints: what a training stage writes after every epoch and resumes from.

A stage checkpoint is a directory::

    model/              the model at this epoch (``CrossRecModel.save_pretrained``: weights,
                        items, manifest with config, crossrec version, stage and metrics), so
                        ``crossrec evaluate --checkpoint`` and serving load it as it is
    trainer_state.pt    optimizer state, the DANN discriminator, the best weights so far
    stage.json          crossrec version, run, target, stage, epoch, this epoch's metrics, the
                        loop's `StageState` and the whole config

Nothing here imports Ray: Ray Train moves these directories to and from its storage.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file

from crossrec import __version__
from crossrec.errors import CrossRecError

if TYPE_CHECKING:
    from crossrec.trainer.loop import CrossRecTrainer, StageRun

logger = logging.getLogger(__name__)

MODEL_DIR = "model"
TRAINER_STATE_FILE = "trainer_state.pt"
STAGE_FILE = "stage.json"


def save_stage(
    directory: Path,
    trainer: CrossRecTrainer,
    run: StageRun,
    metrics: dict[str, float],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Writes the stage checkpoint of ``run`` after its latest epoch into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    model = trainer.model
    model.stage = run.stage
    model.metrics = {**model.metrics, **{f"{run.stage}_{k}": v for k, v in metrics.items()}}
    model.save_pretrained(directory / MODEL_DIR)
    state: dict[str, Any] = {"optimizer": run.optimizer.state_dict()}
    if run.discriminator is not None:
        state["discriminator"] = run.discriminator.state_dict()
    if run.best_state is not None:
        state["best_state"] = {k: v.detach().cpu() for k, v in run.best_state.items()}
    torch.save(state, directory / TRAINER_STATE_FILE)
    manifest = {
        "crossrec_version": __version__,
        "kind": "crossrec-stage-checkpoint",
        "stage": run.stage,
        "target_domain": trainer.target,
        "epoch": run.state.epoch,
        "metrics": metrics,
        "state": run.state.to_json(),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config": trainer.cfg.public_dump(),
        **(extra or {}),
    }
    (directory / STAGE_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return directory


def read_stage_manifest(directory: Path) -> dict[str, Any]:
    path = directory / STAGE_FILE
    if not path.is_file():
        raise CrossRecError(f"{directory} is not a crossrec stage checkpoint (no {STAGE_FILE})")
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest


def load_model_weights(directory: Path, trainer: CrossRecTrainer) -> None:
    """Loads the ``model/`` weights of a stage checkpoint into the trainer's model."""
    source = directory / MODEL_DIR
    trainer.model.load_weights(load_file(str(source / "model.safetensors")), source)


def restore_stage(directory: Path, trainer: CrossRecTrainer, run: StageRun) -> None:
    """Restores model weights, optimizer, discriminator, best weights and loop state."""
    from crossrec.trainer.state import StageState

    manifest = read_stage_manifest(directory)
    if manifest["stage"] != run.stage or manifest["target_domain"] != trainer.target:
        raise CrossRecError(
            f"checkpoint {directory} is for stage {manifest['stage']!r} of target "
            f"{manifest['target_domain']!r}, not stage {run.stage!r} of {trainer.target!r}"
        )
    load_model_weights(directory, trainer)
    device = trainer.model.device
    state = torch.load(directory / TRAINER_STATE_FILE, map_location=device, weights_only=True)
    run.optimizer.load_state_dict(state["optimizer"])
    if run.discriminator is not None and "discriminator" in state:
        run.discriminator.load_state_dict(state["discriminator"])
    if "best_state" in state:
        run.best_state = {k: v.to(device) for k, v in state["best_state"].items()}
    run.state = StageState.from_json(manifest["state"])
