"""Baselines reported beside every crossrec model.

* ``popularity`` — per-domain interaction counts.
* ``itemknn`` — cosine item co-occurrence over all domains.
* ``sasrec`` — an ID-based causal Transformer (SASRec) trained on the target domain only.
* ``sasrec-mixed`` — the same SASRec over every user's merged cross-domain sequence (one shared
  ID space), with a per-domain softmax: the standard cross-domain sequential baseline.
* ``text-zero-shot`` — frozen text encoder; user = mean of their recent item vectors.
"""

from __future__ import annotations

from crossrec.config import CrossRecConfig
from crossrec.recommender import Recommender

BASELINES = ("popularity", "itemknn", "sasrec", "sasrec-mixed", "text-zero-shot")


def make_baseline(name: str, cfg: CrossRecConfig) -> Recommender:
    """Builds the baseline called ``name`` from config."""
    if name == "popularity":
        from crossrec.baselines.popularity import PopularityRecommender

        return PopularityRecommender()
    if name == "itemknn":
        from crossrec.baselines.itemknn import ItemKNNRecommender

        return ItemKNNRecommender(max_history=cfg.model.max_history)
    if name == "sasrec":
        from crossrec.baselines.sasrec import SASRecRecommender

        return SASRecRecommender.from_config(cfg)
    if name == "sasrec-mixed":
        from crossrec.baselines.sasrec import MixedSASRecRecommender

        return MixedSASRecRecommender.from_config(cfg)
    if name == "text-zero-shot":
        from crossrec.baselines.text_zero_shot import TextZeroShotRecommender

        return TextZeroShotRecommender.from_config(cfg)
    from crossrec.errors import CrossRecError

    raise CrossRecError(f"unknown baseline {name!r}; expected one of: {', '.join(BASELINES)}")
