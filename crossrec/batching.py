"""Batching helpers shared by the sequence models' training loops."""

from __future__ import annotations

from typing import Any

import numpy as np


def length_bucketed_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Shuffled batches of similar-length sequences, so little compute goes to padding.

    Sequences are shuffled, cut into pools of 50 batches, sorted by length within a pool,
    batched, and the batches shuffled again: each epoch sees a different random order.
    """
    order = rng.permutation(lengths.size)
    pool = batch_size * 50
    batches: list[np.ndarray] = []
    for start in range(0, order.size, pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, chunk.size, batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def describe_epoch(record: dict[str, Any]) -> str:
    """One progress line for a training epoch record (stage, epoch, loss, validation, time)."""
    valid = record.get("valid_ndcg@10")
    shown = "" if valid is None else f" valid ndcg@10={valid:.4f}"
    return (
        f"{record['stage']}[{record['target']}] epoch {int(record['epoch'])}: "
        f"loss={record['loss']:.4f}{shown} ({record['seconds']:.1f}s)"
    )
