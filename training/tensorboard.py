"""TensorBoard logging of a training run (``train.tensorboard: true``; ``pip install
'crossrec[tensorboard]'``): the driver writes each epoch's loss, validation NDCG@10 (per target
domain too) and seconds as the workers report them, under ``tensorboard/`` in the run folder
(one run per ``target/stage``). A run stored remotely logs to ``./tensorboard/NAME`` here.

Example:
    $ crossrec train --config run.yaml --set train.tensorboard=true
    $ tensorboard --logdir runs/NAME/tensorboard
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from crossrec.errors import ConfigError

logger = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
SCALARS = ("loss", "valid_ndcg@10", "seconds")


class TensorBoardLogger:
    """One ``SummaryWriter`` per ``target/stage``, fed the pipeline's epoch events."""

    def __init__(self, logdir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ConfigError(
                "train.tensorboard",
                "needs the tensorboard package: pip install 'crossrec[tensorboard]'",
            ) from exc
        self._writer_type = SummaryWriter
        self.logdir = logdir
        self._writers: dict[str, Any] = {}

    def event(self, event: dict[str, Any]) -> None:
        if event.get("event") != "epoch":
            return
        run = f"{event['target']}/{event['stage']}"
        writer = self._writers.get(run)
        if writer is None:
            writer = self._writers[run] = self._writer_type(str(self.logdir / run))
        step = int(event["epoch"])
        for key in SCALARS:
            if isinstance(event.get(key), int | float):
                writer.add_scalar(key, float(event[key]), step)
        for key, value in event.items():  # valid_ndcg@10[kitchen]: every target's own score
            if key.startswith("valid_ndcg@10[") and isinstance(value, int | float):
                writer.add_scalar(key, float(value), step)
        writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
