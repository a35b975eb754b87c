"""An on-disk embedding cache keyed by (model, template, text).

Vectors live in append-only ``.npz`` shards under ``<cache_dir>/embeddings/<namespace>/``; the
namespace is a hash of the model fingerprint and encoding settings, and each vector's key is a
hash of the template key and the rendered text. Shards are written to a temporary name and renamed,
so a crash never leaves a half-written shard behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$CROSSREC_CACHE_DIR`` or ``~/.cache/crossrec``."""
    env = os.environ.get("CROSSREC_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "crossrec"


def cache_root(cache_dir: str | None) -> Path:
    """This machine's embedding cache: ``encoder.cache_dir`` if set, else the default."""
    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir()


def text_key(template_key: str, text: str) -> bytes:
    return hashlib.sha256(f"{template_key}\0{text}".encode()).hexdigest()[:32].encode()


class EmbeddingCache:
    """Maps text keys to float32 vectors of one encoder.

    Example:
        >>> cache = EmbeddingCache(Path("~/.cache/crossrec"), namespace="minilm-mean-norm-128")
        >>> found, vectors = cache.get_many(keys)
    """

    def __init__(self, root: Path, namespace: str) -> None:
        safe = hashlib.sha256(namespace.encode()).hexdigest()[:16]
        self.directory = root / "embeddings" / safe
        self.namespace = namespace
        self._index: dict[bytes, np.ndarray] = {}
        self._load()

    def _load(self) -> None:
        if not self.directory.is_dir():
            return
        for shard in sorted(self.directory.glob("shard-*.npz")):
            try:
                with np.load(shard, allow_pickle=False) as data:
                    keys, vectors = data["keys"], data["vectors"]
            except (OSError, ValueError, KeyError) as exc:
                logger.warning("skipping unreadable cache shard path=%s error=%s", shard, exc)
                continue
            for k, v in zip(keys, vectors, strict=True):
                self._index[bytes(k)] = v

    def __len__(self) -> int:
        return len(self._index)

    def get_many(self, keys: list[bytes]) -> tuple[np.ndarray, list[np.ndarray | None]]:
        """Returns a bool mask of the keys found and their vectors (None where missing)."""
        vectors = [self._index.get(k) for k in keys]
        return np.array([v is not None for v in vectors], dtype=bool), vectors

    def put_many(self, keys: list[bytes], vectors: np.ndarray) -> None:
        """Stores new vectors in one new shard."""
        if not keys:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "NAMESPACE").write_text(self.namespace + "\n", encoding="utf-8")
        name = f"shard-{uuid.uuid4().hex}.npz"
        tmp = self.directory / f".{name}.tmp"
        with tmp.open("wb") as handle:
            np.savez(handle, keys=np.array(keys, dtype="S32"), vectors=vectors.astype(np.float32))
        tmp.replace(self.directory / name)
        for k, v in zip(keys, vectors, strict=True):
            self._index[k] = v.astype(np.float32)
