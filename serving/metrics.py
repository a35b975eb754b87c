"""Serving metrics through Ray Serve's own metrics API (`ray.serve.metrics`): Ray's Prometheus
endpoint on every node exports them from every replica, tagged with ``deployment``, ``replica``
and ``application``, beside Ray Serve's built-in ``ray_serve_*`` metrics. Ray prefixes custom
metrics with ``ray_``, so ``crossrec_serve_requests`` is scraped as
``ray_crossrec_serve_requests_total``.

=============================================  ===========================================
metric (as scraped)                             what
=============================================  ===========================================
``ray_crossrec_serve_requests_total``           requests by endpoint, method, status and
                                                model version
``ray_crossrec_serve_request_seconds``          latency histogram by endpoint, method, status
``ray_crossrec_serve_user_vectors_total``       user-keyed answers by vector source: stored,
                                                computed (no or stale stored vector), query
``ray_crossrec_serve_model_loaded``             1 for the version a replica serves (0 after)
``ray_crossrec_serve_index_items``              items per domain in the replica's index
``ray_crossrec_serve_new_item_lag_seconds``     an item written on one replica (or by the
                                                stream) to this replica applying it
=============================================  ===========================================

Example:
    >>> metrics = ServingMetrics()            # inside a Serve replica
    >>> metrics.request("/v1/model", "GET", 200, "m-1", 0.004)
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

LATENCY_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
LAG_BUCKETS_S = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
# Every metric a replica records, by kind (what Prometheus sees: `exported_names`).
METRIC_KINDS = {
    "crossrec_serve_requests": "counter",
    "crossrec_serve_request_seconds": "histogram",
    "crossrec_serve_user_vectors": "counter",
    "crossrec_serve_model_loaded": "gauge",
    "crossrec_serve_index_items": "gauge",
    "crossrec_serve_new_item_lag_seconds": "histogram",
}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported_names(prefix: str = "ray_") -> set[str]:
    """The sample names Ray's Prometheus export gives these metrics (it prefixes ``ray_``)."""
    return {
        prefix + name + suffix for name, kind in METRIC_KINDS.items() for suffix in SUFFIXES[kind]
    }


def _tags(*names: str) -> Any:
    return names  # Ray annotates tag_keys as a 1-tuple; any tuple of names is meant


class ServingMetrics:
    """The metrics one replica records (see the module docstring). Outside a Ray worker (the
    API in any ASGI server) Ray's metrics are not exported; `create_api` then gets None."""

    def __init__(self) -> None:
        from ray.serve import metrics

        self._requests = metrics.Counter(
            "crossrec_serve_requests",
            "HTTP requests by endpoint, method, status, model version.",
            tag_keys=_tags("endpoint", "method", "status", "model_version"),
        )
        self._seconds = metrics.Histogram(
            "crossrec_serve_request_seconds",
            "HTTP request latency (s) in the replica.",
            boundaries=LATENCY_BUCKETS_S,
            tag_keys=_tags("endpoint", "method", "status"),
        )
        self._vectors = metrics.Counter(
            "crossrec_serve_user_vectors",
            "User-keyed answers by the user vector's source: stored, computed, query.",
            tag_keys=("source",),
        )
        self._model = metrics.Gauge(
            "crossrec_serve_model_loaded",
            "1 for the model version this replica serves.",
            tag_keys=("model_version",),
        )
        self._items = metrics.Gauge(
            "crossrec_serve_index_items",
            "Items in the replica's index per domain.",
            tag_keys=("domain",),
        )
        self._lag = metrics.Histogram(
            "crossrec_serve_new_item_lag_seconds",
            "From an item's write to the feature store to this replica applying it (s).",
            boundaries=LAG_BUCKETS_S,
        )
        self._version: str | None = None

    def request(
        self, endpoint: str, method: str, status: int, version: str, seconds: float
    ) -> None:
        code = str(status)
        self._requests.inc(
            tags={"endpoint": endpoint, "method": method, "status": code, "model_version": version}
        )
        self._seconds.observe(
            seconds, tags={"endpoint": endpoint, "method": method, "status": code}
        )

    def user_vector(self, source: str) -> None:
        self._vectors.inc(tags={"source": source})

    def model(self, version: str, sizes: dict[str, int]) -> None:
        """The version now served and its index sizes."""
        if version != self._version:
            if self._version is not None:
                self._model.set(0, tags={"model_version": self._version})
            self._model.set(1, tags={"model_version": version})
            self._version = version
        for domain, n in sizes.items():
            self._items.set(n, tags={"domain": domain})

    def new_item_lags(self, seconds: list[float]) -> None:
        for s in seconds:
            self._lag.observe(max(s, 0.0))


class RequestMetrics:
    """ASGI middleware: one `ServingMetrics.request` per HTTP request, labelled by the route's
    path template (``/v1/users/{user_id}/recommendations``, never the raw path, so user ids
    neither leak into metrics nor explode their cardinality) and the version that answered."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        version = ""

        async def observing_send(message: Message) -> None:
            nonlocal status, version
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for name, value in message.get("headers", []):
                    if name.lower() == b"x-model-version":
                        version = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        finally:
            route: Any = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            try:
                self.metrics.request(
                    endpoint,
                    scope.get("method", ""),
                    status,
                    version,
                    time.perf_counter() - started,
                )
            except Exception:  # metrics never fail a request
                logger.exception("recording request metrics failed")
