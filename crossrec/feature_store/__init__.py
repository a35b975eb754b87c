"""Online feature store: per-user histories and vectors, popularity, model version."""

from crossrec.feature_store.base import (
    FeatureStore,
    HistoryEntry,
    ModelPointer,
    NewItem,
    SampleSpec,
    UserState,
    UserVector,
    WriteResult,
)
from crossrec.feature_store.redis_store import RedisFeatureStore

__all__ = [
    "FeatureStore",
    "HistoryEntry",
    "ModelPointer",
    "NewItem",
    "RedisFeatureStore",
    "SampleSpec",
    "UserState",
    "UserVector",
    "WriteResult",
]
