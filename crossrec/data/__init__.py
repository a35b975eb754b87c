"""Data: canonical records, loaders, the cross-domain dataset, splits and the synthetic world."""

from crossrec.data.dataset import CrossDomainDataset, PredefinedSplit
from crossrec.data.schema import EventType, Interaction, Item

__all__ = ["CrossDomainDataset", "EventType", "Interaction", "Item", "PredefinedSplit"]
