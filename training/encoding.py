"""Item text vectors for a training run: read from the run's embedding cache (then from this
machine's, ``encoder.cache_dir``), the missing ones encoded by a Ray Data ``map_batches`` job
over a pool of encoder actors (one GPU each when asked for) for large catalogues, or in this
process for small ones; new vectors are written back to the run's storage and this machine's
cache."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossrec.config import EncoderConfig
from crossrec.encoders.cache import EmbeddingCache, cache_root, text_key
from crossrec.encoders.text_encoder import encoder_settings_key
from training.storage import RunStorage

logger = logging.getLogger(__name__)

EMBEDDINGS_DIR = "embeddings"


class EncoderActor:
    """A Ray Data map_batches callable: loads the text encoder once per actor."""

    def __init__(self, encoder_config: dict[str, Any]) -> None:
        from crossrec.encoders.text_encoder import TextEncoder

        self.cfg = EncoderConfig.model_validate(encoder_config)
        self.encoder = TextEncoder.from_config(self.cfg)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = self.encoder.encode([str(t) for t in batch["text"]], self.cfg.batch_size)
        return {"row": batch["row"], "vector": vectors.numpy()}


def encode_with_ray_data(
    texts: Sequence[str],
    cfg: EncoderConfig,
    *,
    num_actors: int,
    use_gpu: bool = False,
    batch_size: int = 512,
) -> np.ndarray:
    """``[len(texts), dim]`` float32 vectors computed by a Ray Data job: ``map_batches`` over
    an actor pool of ``num_actors`` encoders."""
    import ray.data

    started = time.perf_counter()
    rows = [{"row": i, "text": t} for i, t in enumerate(texts)]
    ds = ray.data.from_items(rows, override_num_blocks=max(num_actors * 2, 1))
    resources: dict[str, Any] = {"num_gpus": 1} if use_gpu else {"num_cpus": 1}
    encoded = ds.map_batches(
        EncoderActor,
        fn_constructor_kwargs={"encoder_config": cfg.model_dump(mode="json")},
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        batch_format="numpy",
        **resources,
    )
    out: np.ndarray | None = None
    seen = 0
    for batch in encoded.iter_batches(batch_format="numpy", batch_size=None):
        vectors = np.asarray(batch["vector"], dtype=np.float32)
        if out is None:
            out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
        out[np.asarray(batch["row"], dtype=np.int64)] = vectors
        seen += vectors.shape[0]
    if out is None or seen != len(texts):
        raise RuntimeError(f"the encoding job returned {seen} vectors for {len(texts)} texts")
    logger.info(
        "ray data encoding texts=%d actors=%d gpu=%s seconds=%.1f",
        len(texts),
        num_actors,
        use_gpu,
        time.perf_counter() - started,
    )
    return out


def _machine_cache(cfg: EncoderConfig, namespace: str) -> EmbeddingCache | None:
    root = cache_root(cfg.cache_dir)
    try:
        return EmbeddingCache(root, namespace)
    except OSError as exc:
        logger.warning("this machine's embedding cache at %s is unusable (%s): not used", root, exc)
        return None


class _EncodingProgress:
    """Reports an in-process encoding at most every ``every_s`` seconds (the caller reports
    the end)."""

    def __init__(self, total: int, say: Callable[[str], None], every_s: float = 15.0) -> None:
        self.total, self.say, self.every_s = total, say, every_s
        self.started = self.last = time.perf_counter()

    def __call__(self, done: int) -> None:
        now = time.perf_counter()
        if done >= self.total or now - self.last < self.every_s:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        left = (self.total - done) / max(rate, 1e-9)
        self.say(
            f"encoding item texts: {done:,}/{self.total:,} ({rate:.0f} texts/s, about "
            f"{left:.0f}s left)"
        )


def run_item_vectors(
    texts: Sequence[str],
    template_key: str,
    cfg: EncoderConfig,
    storage: RunStorage,
    *,
    use_gpu: bool = False,
    on_message: Callable[[str], None] | None = None,
) -> torch.Tensor:
    """Text vectors of every item, through the run's embedding cache (``NAME/embeddings``).

    Texts the run's cache lacks are looked up in this machine's cache (``encoder.cache_dir``,
    default ``$CROSSREC_CACHE_DIR`` or ``~/.cache/crossrec``; the one ``crossrec evaluate`` and
    the baselines fill). The rest are encoded with Ray Data when there are at least
    ``encoder.ray_min_items`` of them, else in this process; new vectors are added to both
    caches. ``on_message`` gets progress lines (counts, then encoding progress).
    """
    say = on_message or (lambda message: None)
    namespace = encoder_settings_key(cfg)
    with tempfile.TemporaryDirectory(prefix="crossrec-embeddings-") as staging:
        root = storage.local_path() or Path(staging)
        if not storage.is_local:
            storage.download(EMBEDDINGS_DIR, root / EMBEDDINGS_DIR)
        cache = EmbeddingCache(root, namespace)
        keys = [text_key(template_key, t) for t in texts]
        found, cached = cache.get_many(keys)
        missing = sorted({texts[i] for i in np.flatnonzero(~found).tolist()})
        missing_keys = {t: text_key(template_key, t) for t in missing}
        machine = _machine_cache(cfg, namespace) if missing else None
        from_machine: dict[str, np.ndarray] = {}
        if machine is not None:
            there, vectors_there = machine.get_many(list(missing_keys.values()))
            from_machine = {
                missing[j]: np.asarray(vectors_there[j], dtype=np.float32)
                for j in np.flatnonzero(there).tolist()
            }
        to_encode = [t for t in missing if t not in from_machine]
        logger.info(
            "item vectors texts=%d cached=%d machine_cache=%d to_encode=%d",
            len(texts),
            int(found.sum()),
            len(from_machine),
            len(to_encode),
        )
        distinct = len(set(texts))
        say(
            f"item texts: {len(texts):,} ({distinct:,} distinct); {distinct - len(missing):,} "
            f"in the run's cache, {len(from_machine):,} in this machine's, {len(to_encode):,} "
            "to encode"
        )
        by_text = dict(from_machine)
        if to_encode:
            started = time.perf_counter()
            if len(to_encode) >= cfg.ray_min_items:
                say(
                    f"encoding {len(to_encode):,} item texts with Ray Data "
                    f"({cfg.ray_actors} actors)"
                )
                vectors = encode_with_ray_data(
                    to_encode, cfg, num_actors=cfg.ray_actors, use_gpu=use_gpu
                )
            else:
                from crossrec.encoders.text_encoder import TextEncoder

                encoder = TextEncoder.from_config(cfg)
                vectors = encoder.encode(
                    to_encode,
                    cfg.batch_size,
                    progress="encoding items",
                    on_batch=_EncodingProgress(len(to_encode), say),
                ).numpy()
            say(f"encoded {len(to_encode):,} item texts in {time.perf_counter() - started:.1f}s")
            by_text.update({t: vectors[j] for j, t in enumerate(to_encode)})
            if machine is not None:
                try:
                    machine.put_many([missing_keys[t] for t in to_encode], vectors)
                except OSError as exc:
                    logger.warning(
                        "could not add vectors to this machine's embedding cache: %s", exc
                    )
        if missing:
            cache.put_many(list(missing_keys.values()), np.stack([by_text[t] for t in missing]))
            if not storage.is_local:
                storage.upload(root / EMBEDDINGS_DIR, EMBEDDINGS_DIR)
        dim = next(iter(by_text.values())).shape[0] if by_text else np.asarray(cached[0]).shape[0]
        out = np.empty((len(texts), dim), dtype=np.float32)
        for i, text in enumerate(texts):
            vector = cached[i] if found[i] else by_text[text]
            out[i] = vector
    return torch.from_numpy(out)
