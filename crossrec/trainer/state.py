"""What a training stage reports and what it saves to resume: `StageReport`, `StageState`
and the JSON helpers of their records."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


EpochCallback = Callable[[dict[str, Any]], None]


@dataclass
class StageReport:
    """What one stage did: epochs run, the best validation NDCG@10 and where it was reached."""

    stage: str
    domains: list[str]
    epochs: int = 0
    best_epoch: int = 0
    best_valid_ndcg: float = float("nan")
    samples: int = 0
    seconds: float = 0.0
    train_seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class StageState:
    """Where a stage's loop stands: saved in every checkpoint, so a restarted run resumes after
    the last finished epoch with the same early-stopping state."""

    stage: str
    epoch: int = 0
    best_epoch: int = 0
    best_valid_ndcg: float = float("nan")
    best_loss: float = float("inf")
    bad_epochs: int = 0
    lr_drops: int = 0
    samples: int = 0
    train_seconds: float = 0.0
    finished: bool = False
    history: list[dict[str, float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = json_safe(self.__dict__)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StageState:
        return cls(**{k: _from_json_number(v) for k, v in data.items()})


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (JSON has no NaN / infinity) written as a string,
    in nested dicts and lists too."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def _from_json_number(value: Any) -> Any:
    if value in ("nan", "inf", "-inf"):
        return float(value)
    return value
