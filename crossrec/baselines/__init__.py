"""Baselines reported beside every crossrec model.

* ``popularity`` — per-domain interaction counts.
* ``itemknn`` — cosine item co-occurrence over all domains.
* ``sasrec`` — an ID-based causal Transformer (SASRec) trained on the target domain only.
* ``sasrec-mixed`` — the same SASRec over every user's merged cross-domain sequence (one shared
  ID space), with a per-domain softmax: the standard cross-domain sequential baseline.
* ``text-zero-shot`` — frozen text encoder; user = mean of their recent item vectors.
"""

from __future__ import annotations

import importlib

from crossrec.config import CrossRecConfig
from crossrec.recommender import Recommender

# name -> "module:Class"; each class builds itself with `Class.from_config(cfg)`. Imported on
# first use (the SASRec and text baselines pull in torch and the encoder).
_REGISTRY: dict[str, str] = {}


def register_baseline(name: str, target: str) -> None:
    """Adds a baseline: ``target`` is ``"module:Class"`` of a `Recommender` with a
    ``from_config(cfg)`` classmethod. A name may be registered once."""
    if name in _REGISTRY:
        raise ValueError(f"baseline {name!r} is already registered ({_REGISTRY[name]})")
    _REGISTRY[name] = target


register_baseline("popularity", "crossrec.baselines.popularity:PopularityRecommender")
register_baseline("itemknn", "crossrec.baselines.itemknn:ItemKNNRecommender")
register_baseline("sasrec", "crossrec.baselines.sasrec:SASRecRecommender")
register_baseline("sasrec-mixed", "crossrec.baselines.sasrec:MixedSASRecRecommender")
register_baseline("text-zero-shot", "crossrec.baselines.text_zero_shot:TextZeroShotRecommender")

BASELINES = tuple(_REGISTRY)


def make_baseline(name: str, cfg: CrossRecConfig) -> Recommender:
    """Builds the baseline called ``name`` from config."""
    try:
        module, _, cls = _REGISTRY[name].partition(":")
    except KeyError:
        from crossrec.errors import CrossRecError

        known = ", ".join(_REGISTRY)
        raise CrossRecError(f"unknown baseline {name!r}; expected one of: {known}") from None
    baseline: Recommender = getattr(importlib.import_module(module), cls).from_config(cfg)
    return baseline
