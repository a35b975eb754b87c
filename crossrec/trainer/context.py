"""Where the loop runs (`TrainContext`: one process, or a Ray Train worker) and the
training windows it iterates (`WindowBatches`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

if TYPE_CHECKING:
    from crossrec.trainer.loop import StageRun


def _windows(
    sequences: Sequence[np.ndarray], max_len: int, keep: Callable[[np.ndarray], bool]
) -> tuple[list[np.ndarray], list[bool]]:
    """Windows of at most ``max_len + 1`` items; the flag says whether a window starts its
    sequence (only then does its first item have a known, empty, history)."""
    windows: list[np.ndarray] = []
    starts: list[bool] = []
    for seq in sequences:
        end = seq.size
        while end > 0:
            begin = max(0, end - max_len - 1)
            w = seq[begin:end]
            if keep(w if begin == 0 else w[1:]):
                windows.append(w)
                starts.append(begin == 0)
            end -= max_len
            if begin == 0:
                break
    return windows, starts


class TrainContext:
    """Where the training loop runs. This one is a single process; Ray Train workers use a
    subclass (``training.loop.RayTrainContext``) that wraps the model in DDP, shards the batches
    and the validation cases, reduces metrics and reports checkpoints.

    The loop sees ``world_size`` workers; ``train.batch_size`` is the global batch, so each
    worker's batch is ``ceil(batch_size / world_size)`` and an epoch has the same number of
    optimizer steps however many workers there are.
    """

    world_size: int = 1
    rank: int = 0
    device: torch.device = torch.device("cpu")

    def wrap_model(self, module: nn.Module) -> nn.Module:
        """The module the loop calls forward/backward on (DDP under Ray Train)."""
        return module

    def wrap_loader(self, loader: DataLoader[dict[str, torch.Tensor]]) -> Iterable[Any]:
        """The batches this worker trains on (its shard under Ray Train)."""
        return loader

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over workers."""
        return values

    def resume(self, stage: str) -> Path | None:
        """A stage checkpoint directory to resume from (the latest one of an interrupted run)."""
        return None

    def end_epoch(self, run: StageRun, record: dict[str, float]) -> None:
        """Called by every worker after each epoch (Ray Train reports and checkpoints here)."""

    def fault_point(self, stage: str, epoch: int, step: int, steps: int) -> None:
        """Called before every step; fault injection lives here (off unless configured)."""

    @property
    def is_chief(self) -> bool:
        return self.rank == 0


class WindowBatches(Dataset[dict[str, torch.Tensor]]):
    """One epoch's batches of training windows, collated to padded tensors (a map-style
    dataset of whole batches, so a distributed sampler hands each worker whole batches)."""

    def __init__(
        self, windows: Sequence[np.ndarray], starts: Sequence[bool], batches: Sequence[np.ndarray]
    ) -> None:
        self.windows = windows
        self.starts = starts
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rows = [self.windows[i] for i in self.batches[index]]
        n_max = max(r.size for r in rows)
        hist = torch.zeros(len(rows), max(1, n_max - 1), dtype=torch.long)
        targets = torch.full((len(rows), n_max), -1, dtype=torch.long)
        lengths = torch.zeros(len(rows), dtype=torch.long)
        for b, r in enumerate(rows):
            hist[b, : r.size - 1] = torch.from_numpy(r[:-1])
            targets[b, : r.size] = torch.from_numpy(r)
            lengths[b] = r.size - 1
        not_start = torch.tensor([not self.starts[i] for i in self.batches[index]])
        return {"hist": hist, "targets": targets, "lengths": lengths, "not_start": not_start}
