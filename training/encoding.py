"""Item text vectors for a training run: read from the run's embedding cache, the missing ones
encoded by a Ray Data ``map_batches`` job over a pool of encoder actors (one GPU each when asked
for) for large catalogues, or in this process for small ones; the cache is written back to the
run's storage."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossrec.config import EncoderConfig
from crossrec.encoders.cache import EmbeddingCache, text_key
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
        len(texts), num_actors, use_gpu, time.perf_counter() - started,
    )  # fmt: skip
    return out


def run_item_vectors(
    texts: Sequence[str],
    template_key: str,
    cfg: EncoderConfig,
    storage: RunStorage,
    *,
    use_gpu: bool = False,
) -> torch.Tensor:
    """Text vectors of every item, through the run's embedding cache (``NAME/embeddings``).

    Missing texts are encoded with Ray Data when there are at least ``encoder.ray_min_items``
    of them, else in this process; new vectors are added to the cache in the run's storage.
    """
    namespace = encoder_settings_key(cfg)
    with tempfile.TemporaryDirectory(prefix="crossrec-embeddings-") as staging:
        root = storage.local_path() or Path(staging)
        if not storage.is_local:
            storage.download(EMBEDDINGS_DIR, root / EMBEDDINGS_DIR)
        cache = EmbeddingCache(root, namespace)
        keys = [text_key(template_key, t) for t in texts]
        found, cached = cache.get_many(keys)
        missing = sorted({texts[i] for i in np.flatnonzero(~found).tolist()})
        logger.info(
            "item vectors texts=%d cached=%d to_encode=%d", len(texts), int(found.sum()),
            len(missing),
        )  # fmt: skip
        by_text: dict[str, np.ndarray] = {}
        if missing:
            if len(missing) >= cfg.ray_min_items:
                vectors = encode_with_ray_data(
                    missing, cfg, num_actors=cfg.ray_actors, use_gpu=use_gpu
                )
            else:
                from crossrec.encoders.text_encoder import TextEncoder

                encoder = TextEncoder.from_config(cfg)
                vectors = encoder.encode(missing, cfg.batch_size, progress="encoding items").numpy()
            cache.put_many([text_key(template_key, t) for t in missing], vectors)
            by_text = {t: vectors[j] for j, t in enumerate(missing)}
            if not storage.is_local:
                storage.upload(root / EMBEDDINGS_DIR, EMBEDDINGS_DIR)
        dim = next(iter(by_text.values())).shape[0] if by_text else np.asarray(cached[0]).shape[0]
        out = np.empty((len(texts), dim), dtype=np.float32)
        for i, text in enumerate(texts):
            vector = cached[i] if found[i] else by_text[text]
            out[i] = vector
    return torch.from_numpy(out)
