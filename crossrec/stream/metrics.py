"""Prometheus metrics of a stream worker (one registry per worker, so several workers in one
process or in tests never collide)."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

logger = logging.getLogger(__name__)


class StreamMetrics:
    """Counters and gauges of one consumer worker.

    Example:
        >>> m = StreamMetrics(worker="0"); m.events.labels(outcome="written").inc(500)
        >>> m.serve(9400)  # GET http://host:9400/metrics
    """

    def __init__(self, worker: str = "0", registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = ["worker"]
        self.worker = worker
        r = self.registry
        self._events = Counter(
            "crossrec_stream_events",
            "Records consumed, by outcome: written (new), "
            "duplicate (already stored), dead_letter (invalid).",
            [*labels, "outcome"],
            registry=r,
        )
        self._batches = Counter("crossrec_stream_batches", "Batches committed.", labels, registry=r)
        self._batch_seconds = Histogram(
            "crossrec_stream_batch_seconds",
            "Poll-to-commit time of a batch.",
            labels,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self._retries = Counter(
            "crossrec_stream_store_retries",
            "Batch writes retried after a feature store error.",
            labels,
            registry=r,
        )
        self._lag = Gauge(
            "crossrec_stream_consumer_lag",
            "Records not yet consumed (log end - position).",
            [*labels, "topic", "partition"],
            registry=r,
        )
        self._rate = Gauge(
            "crossrec_stream_events_per_second",
            "Events consumed per second over the last lag interval.",
            labels,
            registry=r,
        )
        self._vectors = Counter(
            "crossrec_stream_user_vectors", "User vectors written.", labels, registry=r
        )
        self._vector_seconds = Histogram(
            "crossrec_stream_vector_update_seconds",
            "Time of one user-vector update round.",
            labels,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self._server: Any = None

    def events(self, outcome: str, n: int) -> None:
        if n:
            self._events.labels(self.worker, outcome).inc(n)

    def batch(self, seconds: float) -> None:
        self._batches.labels(self.worker).inc()
        self._batch_seconds.labels(self.worker).observe(seconds)

    def retry(self) -> None:
        self._retries.labels(self.worker).inc()

    def lag(self, topic: str, partition: int, value: int) -> None:
        self._lag.labels(self.worker, topic, str(partition)).set(value)

    def rate(self, per_second: float) -> None:
        self._rate.labels(self.worker).set(per_second)

    def vectors(self, n: int, seconds: float) -> None:
        self._vectors.labels(self.worker).inc(n)
        self._vector_seconds.labels(self.worker).observe(seconds)

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when absent), e.g. ``value("crossrec_stream_events_total",
        outcome="written")``."""
        got = self.registry.get_sample_value(name, {"worker": self.worker, **labels})
        return float(got or 0.0)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serves ``/metrics`` over HTTP on ``host:port`` (a daemon thread)."""
        self._server = serve_registry(self.registry, port, host)
        logger.info("prometheus metrics on http://%s:%d/metrics worker=%s", host, port, self.worker)

    def close(self) -> None:
        close_server(self._server)
        self._server = None


def serve_registry(registry: CollectorRegistry, port: int, host: str) -> Any:
    """Serves ``registry`` on ``http://host:port/metrics`` (a daemon thread); the handle is
    for `close_server`."""
    return start_http_server(port, addr=host, registry=registry)


def close_server(server: Any) -> None:
    """Stops a `serve_registry` server (None: nothing to stop)."""
    if isinstance(server, tuple):  # prometheus_client >= 0.17 returns (server, thread)
        server[0].shutdown()
        server[0].server_close()
