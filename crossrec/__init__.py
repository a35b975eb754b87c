"""crossrec: cross-domain recommendation through language.

The public Python API (see the README's "Python quickstart"):

    >>> import crossrec
    >>> cfg = crossrec.load_config("configs/food-kitchen-transfer.yaml")
    >>> result = crossrec.train(cfg, output="runs/fk")          # in-process PyTorch loop
    >>> model = crossrec.CrossRecModel.from_pretrained("runs/fk/food")
    >>> model.recommend([("kitchen", "B000Q8ZSRM")], k=10)

Importing ``crossrec`` stays light: every name below is imported on first use, so no torch, Ray
or transformers until a part that needs them is touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from crossrec.errors import CrossRecError

__version__ = "0.1.0"

# Public name -> (module, attribute), imported on first access.
_LAZY: dict[str, tuple[str, str]] = {
    "CrossRecConfig": ("crossrec.config", "CrossRecConfig"),
    "load_config": ("crossrec.config", "load_config"),
    "load_dataset": ("crossrec.data.loaders", "load_dataset"),
    "make_split": ("crossrec.data.splits", "make_split"),
    "CrossRecModel": ("crossrec.models.crossrec_model", "CrossRecModel"),
    "Recommendation": ("crossrec.models.crossrec_model", "Recommendation"),
    "train": ("crossrec.experiments", "train_crossrec"),
    "load_checkpoints": ("crossrec.experiments", "load_checkpoints"),
    "evaluate_checkpoint": ("crossrec.experiments", "evaluate_checkpoint"),
}

__all__ = [
    "CrossRecConfig",
    "CrossRecError",
    "CrossRecModel",
    "Recommendation",
    "__version__",
    "evaluate_checkpoint",
    "load_checkpoints",
    "load_config",
    "load_dataset",
    "make_split",
    "train",
]

if TYPE_CHECKING:
    from crossrec.config import CrossRecConfig as CrossRecConfig
    from crossrec.config import load_config as load_config
    from crossrec.data.loaders import load_dataset as load_dataset
    from crossrec.data.splits import make_split as make_split
    from crossrec.experiments import evaluate_checkpoint as evaluate_checkpoint
    from crossrec.experiments import load_checkpoints as load_checkpoints
    from crossrec.experiments import train_crossrec as train
    from crossrec.models.crossrec_model import CrossRecModel as CrossRecModel
    from crossrec.models.crossrec_model import Recommendation as Recommendation


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'crossrec' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
