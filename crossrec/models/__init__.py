"""The cross-domain model: item tower, user tower, ranker, and its `Recommender` form."""

from crossrec.models.crossrec_model import CrossRecModel
from crossrec.models.index import ExactIndex, ItemIndex, IVFIndex

__all__ = ["CrossRecModel", "ExactIndex", "IVFIndex", "ItemIndex"]
