"""Online feature store: per-user histories and vectors, popularity, model version, samples.

Small interfaces (`EventStore`, `UserVectorStore`, `ModelPointerStore`, `ItemStore`,
`SampleStore`, `Heartbeats`) make up `FeatureStore`; `open_feature_store(cfg)` builds the
implementation ``feature_store.type`` names from `STORES` (``redis``: `RedisFeatureStore`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from crossrec.config import FeatureStoreConfig
from crossrec.errors import ConfigError
from crossrec.extras import require_extras
from crossrec.feature_store.base import (
    EventStore,
    FeatureStore,
    Heartbeats,
    HistoryEntry,
    ItemStore,
    ModelPointer,
    ModelPointerStore,
    NewItem,
    SampleSpec,
    SampleStore,
    UserState,
    UserVector,
    UserVectorStore,
    WriteResult,
)

if TYPE_CHECKING:
    from crossrec.feature_store.redis_store import RedisFeatureStore

# feature_store.type -> (the FeatureStore subclass as "module:Class", the extra it needs);
# imported on first use, so importing this package needs no client library.
STORES: dict[str, tuple[str, str]] = {
    "redis": ("crossrec.feature_store.redis_store:RedisFeatureStore", "stream"),
}


def open_feature_store(cfg: FeatureStoreConfig, url: str | None = None) -> FeatureStore:
    """The feature store ``cfg.type`` names, connected as ``cfg`` says."""
    try:
        target, extra = STORES[cfg.type]
    except KeyError:
        raise ConfigError(
            "feature_store.type", f"unknown store {cfg.type!r}; known: {', '.join(sorted(STORES))}"
        ) from None
    require_extras(f"the {cfg.type!r} feature store", extra)
    module, _, name = target.partition(":")
    store_type: type[FeatureStore] = getattr(importlib.import_module(module), name)
    return store_type.from_config(cfg, url)


def __getattr__(name: str) -> Any:
    if name == "RedisFeatureStore":
        from crossrec.feature_store.redis_store import RedisFeatureStore

        return RedisFeatureStore
    raise AttributeError(f"module 'crossrec.feature_store' has no attribute {name!r}")


__all__ = [
    "STORES",
    "EventStore",
    "FeatureStore",
    "Heartbeats",
    "HistoryEntry",
    "ItemStore",
    "ModelPointer",
    "ModelPointerStore",
    "NewItem",
    "RedisFeatureStore",
    "SampleSpec",
    "SampleStore",
    "UserState",
    "UserVector",
    "UserVectorStore",
    "WriteResult",
    "open_feature_store",
]
