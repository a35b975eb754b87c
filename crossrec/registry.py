"""The model registry: every model version with what made it, and which one is current.

Versions live in a folder (``registry.root``): ``ROOT/<version>/`` holds the version's
checkpoints (as written by `crossrec train`: one folder per target domain) and
``version.json``: the version id, its parent version, creation time, metrics, the data window it
was trained on, and where it came from. The *current* version is the feature store's pointer
(what serving replicas and the stream's update trigger follow); every change of it is appended
to a promotion log in the same store, so ``rollback`` knows what was current before.

Example:
    >>> registry = ModelRegistry(cfg.registry.root)
    >>> record = registry.register("runs/demo/models", parent=None, metrics={"ndcg@10": 0.27})
    >>> registry.promote(store, record.version, reason="first version")
    >>> registry.rollback(store)
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from crossrec.errors import CrossRecError
from crossrec.feature_store.base import FeatureStore, ModelPointer
from crossrec.models.bundle import checkpoint_dirs, version_of

logger = logging.getLogger(__name__)

VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

RECORD_FILE = "version.json"


@dataclass(frozen=True)
class VersionRecord:
    """What the registry knows of one version."""

    version: str
    uri: str
    created_at: str
    parent: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    data_window: dict[str, Any] = field(default_factory=dict)
    source: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


class ModelRegistry:
    """Model versions in a folder, and promotion through the feature store's pointer.

    Args:
        root: the registry folder (created on first use).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    # ------------------------------------------------------------------ versions
    def register(
        self,
        path: str | Path,
        *,
        parent: str | None = None,
        metrics: dict[str, Any] | None = None,
        data_window: dict[str, Any] | None = None,
    ) -> VersionRecord:
        """Copies the version at ``path`` into the registry (once: the same files give the
        same version id) and records what made it."""
        source = Path(path).expanduser().resolve()
        checkpoints = checkpoint_dirs(source)  # fails clearly when it is not a version
        version = version_of(source)
        if parent is not None and parent != version:
            self.get(parent)  # the parent must be registered
        target = self.root / version
        if (target / RECORD_FILE).is_file():
            return self.get(version)
        staging = self.root / f".{version}.tmp-{time.time_ns()}"
        for name, ckpt in checkpoints.items():
            shutil.copytree(ckpt, staging / (name or "model"))
        record = VersionRecord(
            version=version,
            uri=str(target),
            created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds"),
            parent=parent,
            metrics=dict(metrics or {}),
            data_window=dict(data_window or {}),
            source=str(source),
        )
        (staging / RECORD_FILE).write_text(record.to_json())
        staging.rename(target)  # the version appears whole or not at all
        if version_of(target) != version:
            raise CrossRecError(f"registry copy of {source} does not match its version id")
        logger.info("registered model version=%s parent=%s uri=%s", version, parent, target)
        return record

    def get(self, version: str) -> VersionRecord:
        if not VERSION_NAME.fullmatch(version) or ".." in version:
            # A version is a folder name in the root, never a path out of it.
            raise CrossRecError(
                f"{version!r} is not a model version name (letters, digits, '.', '_', '-'; no path)"
            )
        path = self.root / version / RECORD_FILE
        if not path.is_file():
            known = ", ".join(r.version for r in self.list()[-5:]) or "none"
            raise CrossRecError(
                f"no model version {version!r} in the registry at {self.root} (latest: {known})"
            )
        return VersionRecord(**json.loads(path.read_text()))

    def list(self) -> list[VersionRecord]:
        """Every registered version, oldest first."""
        if not self.root.is_dir():
            return []
        records = [
            VersionRecord(**json.loads((p / RECORD_FILE).read_text()))
            for p in self.root.iterdir()
            if (p / RECORD_FILE).is_file()
        ]
        return sorted(records, key=lambda r: (r.created_at, r.version))

    # ------------------------------------------------------------------ current version
    def promote(self, store: FeatureStore, version: str, reason: str = "promote") -> ModelPointer:
        """Makes ``version`` current (serving and the stream follow) and logs the change."""
        record = self.get(version)
        pointer = ModelPointer(record.version, record.uri, time.time())
        store.set_current_model(pointer, reason=reason)
        logger.info("promoted model version=%s reason=%s", version, reason)
        return pointer

    def rollback(self, store: FeatureStore) -> ModelPointer:
        """Makes the version that was current before the current one current again."""
        current = store.current_model()
        if current is None:
            raise CrossRecError("no current model version to roll back from")
        for entry in store.model_history(limit=1000):
            if entry.version != current.version:
                pointer = ModelPointer(entry.version, entry.uri, time.time())
                store.set_current_model(pointer, reason=f"rollback from {current.version}")
                logger.info("rolled back model version=%s -> %s", current.version, entry.version)
                return pointer
        raise CrossRecError(
            f"nothing to roll back to: {current.version} is the only version ever promoted"
        )


# --------------------------------------------------------------------------- publishing
def publish_model(store: FeatureStore, path: str | Path) -> ModelPointer:
    """Makes the model version at ``path`` the current one (workers and serving follow)."""
    path = Path(path).expanduser().resolve()
    checkpoint_dirs(path)  # fails clearly when it is not a model version
    pointer = ModelPointer(version_of(path), str(path), time.time())
    store.set_current_model(pointer)
    logger.info("published model version=%s uri=%s", pointer.version, pointer.uri)
    return pointer


def current_version(store: FeatureStore, path: str | Path | None) -> ModelPointer | None:
    """Publishes the version at ``path`` when given; otherwise the store's current version
    (None when there is none)."""
    return publish_model(store, path) if path is not None else store.current_model()
