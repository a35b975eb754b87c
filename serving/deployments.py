"""Ray Serve deployments: the batched text encoder and the recommender (the HTTP ingress).

The recommender replica holds a `RecommendationService`: it loads the feature store's current
model version (or the checkpoint it was built with, published when the store has none), reads
user state from Redis on every request, sends text to the encoder deployment through a
`DeploymentHandle`, and produces ingested events to Kafka. A watcher thread follows the current
version pointer and other replicas' new items; `reconfigure(user_config)` pins a version. Either
way the new version is loaded beside the old one and swapped in whole, so no in-flight request
is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import numpy as np
import torch
from ray import serve
from ray.serve.handle import DeploymentHandle

from crossrec.config import CrossRecConfig, EncoderConfig, EncoderDeploymentSettings
from crossrec.data.events import Event
from crossrec.encoders.text_encoder import TextEncoder
from crossrec.errors import CrossRecError
from crossrec.feature_store import open_feature_store
from crossrec.inference.recommendations import RecommendationService
from crossrec.registry import publish_model
from serving.api import create_api
from serving.auth import Keys
from serving.local import EventSink
from serving.metrics import ServingMetrics

logger = logging.getLogger(__name__)


@serve.deployment(name="Encoder")
class TextEncoderDeployment:
    """Encodes text with the item tower's text encoder; concurrent requests are batched.

    Example:
        >>> vectors = await encoder_handle.encode.remote(["a voyage to the stars"])
    """

    def __init__(self, encoder: dict[str, Any], settings: dict[str, Any]) -> None:
        cfg = EncoderConfig.model_validate(encoder)
        opts = EncoderDeploymentSettings.model_validate(settings)
        if opts.torch_threads:
            torch.set_num_threads(opts.torch_threads)
        if cfg.device == "auto":
            cfg = cfg.model_copy(update={"device": "cuda" if torch.cuda.is_available() else "cpu"})
        self.cfg = cfg
        self.encoder = TextEncoder.from_config(cfg)
        self.encoder.eval()
        self.encode_one.set_max_batch_size(opts.max_batch_size)  # type: ignore[attr-defined]
        self.encode_one.set_batch_wait_timeout_s(opts.batch_wait_timeout_s)  # type: ignore[attr-defined]
        logger.info(
            "encoder ready model=%s device=%s batch=%d wait=%.3fs",
            cfg.model,
            cfg.device,
            opts.max_batch_size,
            opts.batch_wait_timeout_s,
        )

    def identity(self) -> tuple[str, str, bool, int]:
        """What the vectors depend on (`crossrec.inference.recommendations.encoder_identity`)."""
        c = self.cfg
        return (c.model, c.pooling, c.normalize, c.max_length)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def encode_one(self, texts: list[str]) -> list[np.ndarray]:
        vectors = await asyncio.to_thread(self.encoder.encode, texts, len(texts))
        return list(vectors.float().numpy())

    async def encode(self, texts: list[str]) -> np.ndarray:
        """``[len(texts), dim]``; each text joins the shared batch queue."""
        return np.stack(await asyncio.gather(*(self.encode_one(t) for t in texts)))


@serve.deployment(name="Recommender")
@serve.ingress()
class RecommenderDeployment:
    """The HTTP ingress and recommender (see the module docstring).

    Args:
        config: the whole crossrec config (as a JSON-able dict).
        encoder: handle of the encoder deployment; None encodes in this replica.
        checkpoint: version to serve when the feature store has no current version.
    """

    def __init__(
        self,
        config: dict[str, Any],
        encoder: DeploymentHandle | None = None,
        checkpoint: str | None = None,
        keys: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = CrossRecConfig.model_validate(config)
        self.keys = Keys.from_json(keys) if keys is not None else None
        threads = self.cfg.serve.recommender.torch_threads
        if threads:
            torch.set_num_threads(threads)
        self.store = open_feature_store(self.cfg.feature_store)
        self.service = RecommendationService(self.cfg, self.store)
        self.events = EventSink(self.service)
        self.encoder = encoder
        self._identity: tuple[str, str, bool, int] | None = None
        self._pinned: str | None = None
        self._stop = threading.Event()
        self._swap_lock = threading.Lock()
        pointer = self.store.current_model()
        if pointer is None and checkpoint:
            pointer = publish_model(self.store, checkpoint)
        if pointer is not None:
            self.service.swap(self.service.load_version(pointer.uri, pointer.version))
        else:
            logger.warning(
                "no current model version in the feature store and no checkpoint: "
                "not ready until one is published"
            )
        self.metrics: ServingMetrics | None = None
        if self.cfg.serve.metrics:
            try:
                self.metrics = ServingMetrics()
            except Exception:  # metrics are an aid: a replica serves without them
                logger.exception("serving metrics unavailable")
        self._report_model()
        self._watcher = threading.Thread(target=self._watch, daemon=True, name="model-watcher")
        self._watcher.start()

    def __serve_build_asgi_app__(self) -> Any:
        return create_api(self, self.cfg, self.keys, self.metrics)

    # ------------------------------------------------------------------ ApiBackend
    async def encode(self, texts: list[str]) -> np.ndarray:
        if self.encoder is not None:
            if self._identity is None:
                self._identity = tuple(await self.encoder.identity.remote())
            if self.service.uses_shared_encoder(self._identity):
                return await self.encoder.encode.remote(texts)
        return await asyncio.to_thread(self.service.encode_locally, texts)

    async def produce(self, events: list[Event]) -> str:
        return await asyncio.to_thread(self.events.produce, events)

    # ------------------------------------------------------------------ versions
    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """``{"model_uri": DIR}`` pins this version (loaded, then swapped in);
        ``{"model_uri": null}`` or ``{}`` follows the feature store's current version again."""
        uri = (user_config or {}).get("model_uri")
        self._pinned = uri
        if uri:
            await asyncio.to_thread(self._load, uri, None, False)
        else:
            await asyncio.to_thread(self._follow_pointer)

    def _load(self, uri: str, version: str | None, follows: bool) -> None:
        with self._swap_lock:
            current = self.service.current
            served = self.service.load_version(uri, version, follows_pointer=follows)
            if current is not None and current.version == served.version:
                current.follows_pointer = follows
                return
            old = self.service.swap(served)
            logger.info("model version swapped %s -> %s", old, served.version)
        self._report_model()

    def _report_model(self) -> None:
        current = self.service.current
        if self.metrics is not None and current is not None:
            self.metrics.model(current.version, current.sizes())
            self.metrics.new_item_lags(self.service.take_new_item_lags())

    def _follow_pointer(self) -> None:
        pointer = self.store.current_model()
        current = self.service.current
        if pointer is not None and (current is None or current.version != pointer.version):
            self._load(pointer.uri, pointer.version, True)

    def _watch(self) -> None:
        serve_cfg = self.cfg.serve
        next_model = time.monotonic() + serve_cfg.model_check_s
        while not self._stop.wait(serve_cfg.new_items_check_s):
            try:
                if self.service.ready and self.service.sync_new_items():
                    self._report_model()
                if self._pinned is None and time.monotonic() >= next_model:
                    next_model = time.monotonic() + serve_cfg.model_check_s
                    self._follow_pointer()
            except CrossRecError as exc:
                logger.warning("model watcher: %s (retrying)", exc)
            except Exception:
                logger.exception("model watcher failed (retrying)")

    def __del__(self) -> None:
        self._stop.set()
        self.events.close()
        self.store.close()
