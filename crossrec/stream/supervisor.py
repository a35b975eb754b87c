"""`WorkerSupervisor`: a `StreamWorker` in a thread of this process (`crossrec serve`), restarted
with back-off when it dies, its liveness published for the serving replicas' readiness.

A worker thread that ends while nobody asked it to stop has died (an unexpected exception, a
broken client): the supervisor publishes ``status: down`` with the error at once, waits
(``stream.backoff_s`` doubling up to ``stream.max_backoff_s``) and starts a fresh worker, which
resumes from the committed offsets, so nothing is lost. Every ``heartbeat_s`` it publishes the
worker's state to the feature store (`FeatureStore.set_heartbeat`, name `HEARTBEAT_NAME`,
expiring after ``ttl_s``); with ``serve.require_stream_worker`` the replicas' ``/v1/readyz``
answers 503 while the state is not ``ok`` or has expired (this process is gone).

Example:
    >>> with WorkerSupervisor(cfg) as supervisor:
    ...     serve_until_stopped()
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType

from crossrec.config import CrossRecConfig
from crossrec.errors import FeatureStoreError
from crossrec.feature_store.base import FeatureStore
from crossrec.stream.worker import StreamWorker

logger = logging.getLogger(__name__)

HEARTBEAT_NAME = "stream-worker"
STABLE_S = 30.0  # a worker up this long has recovered: the restart back-off starts over


class WorkerSupervisor:
    """Runs and restarts one in-process stream worker.

    Args:
        cfg: the whole config (``stream`` back-off, ``feature_store``).
        store: where the heartbeat goes; default: `open_feature_store` of the config.
        make_worker: builds a fresh worker for each (re)start; default `StreamWorker(cfg)`.
        heartbeat_s: how often the state is published.
        ttl_s: how long a published state lives (a dead process turns readiness red after it).
    """

    def __init__(
        self,
        cfg: CrossRecConfig,
        *,
        store: FeatureStore | None = None,
        make_worker: Callable[[], StreamWorker] | None = None,
        heartbeat_s: float = 1.0,
        ttl_s: float = 5.0,
    ) -> None:
        from crossrec.feature_store import open_feature_store

        self.cfg = cfg
        self.store = store or open_feature_store(cfg.feature_store)
        self._make_worker = make_worker or (lambda: StreamWorker(cfg))
        self.heartbeat_s, self.ttl_s = heartbeat_s, ttl_s
        self.worker: StreamWorker | None = None
        self.restarts = 0
        self.last_error: str | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._started_at = 0.0
        self._stop = threading.Event()
        self._loop = threading.Thread(target=self._supervise, daemon=True, name="stream-supervisor")

    # ------------------------------------------------------------------ control
    def start(self) -> WorkerSupervisor:
        self._start_worker()
        self._loop.start()
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Stops the worker (it finishes its batch and commits) and the supervision."""
        self._stop.set()
        if self.worker is not None:
            self.worker.stop()
        if self._thread is not None:
            self._thread.join(timeout)
        self._loop.join(timeout)
        self._publish("stopped")

    def __enter__(self) -> WorkerSupervisor:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ internals
    def _start_worker(self) -> None:
        self._error = None
        self._started_at = time.monotonic()
        self.worker = worker = self._make_worker()

        def run() -> None:
            try:
                worker.run()
            except BaseException as exc:  # reported by the supervisor, never swallowed
                self._error = exc

        self._thread = threading.Thread(target=run, daemon=True, name="serve-stream-worker")
        self._thread.start()

    def _supervise(self) -> None:
        delay = self.cfg.stream.backoff_s
        restart_at: float | None = None
        while not self._stop.is_set():
            if self.alive:
                self._publish("ok")
                if time.monotonic() - self._started_at > STABLE_S:
                    delay = self.cfg.stream.backoff_s  # running steadily: the back-off resets
            elif restart_at is None:
                error = self._error
                self.last_error = (
                    f"{type(error).__name__}: {error}" if error else "exited without being stopped"
                )
                logger.error("stream worker died (%s); restarting in %.1fs", self.last_error, delay)
                self._publish("down")
                restart_at = time.monotonic() + delay
                delay = min(delay * 2, self.cfg.stream.max_backoff_s)
            elif time.monotonic() >= restart_at:
                self.restarts += 1
                logger.warning("restarting the stream worker (restart %d)", self.restarts)
                self._start_worker()
                restart_at = None
                continue
            else:
                self._publish("down")
            self._stop.wait(self.heartbeat_s)

    def _publish(self, status: str) -> None:
        state = {
            "status": status,
            "restarts": self.restarts,
            "error": self.last_error,
            "at": time.time(),
        }
        try:
            self.store.set_heartbeat(HEARTBEAT_NAME, state, self.ttl_s)
        except FeatureStoreError as exc:  # the store is down: readiness says so already
            logger.debug("heartbeat not published: %s", exc)
