"""A replica's backends without Ray: the version's own encoder in this process, and a Kafka
producer. Used by tests, the in-process benchmark and anyone embedding the API in their own
ASGI server.

Example:
    >>> backend = LocalBackend(service)
    >>> app = create_api(backend, cfg)  # any ASGI server runs it
"""

from __future__ import annotations

import threading

import numpy as np
from starlette.concurrency import run_in_threadpool

from crossrec.inference.recommendations import RecommendationService
from crossrec.stream.events import Event, EventProducer


class EventSink:
    """Produces API events to ``stream.topic``; the Kafka producer is made on first use (so
    a replica without a reachable broker still serves reads)."""

    def __init__(self, service: RecommendationService) -> None:
        self.cfg = service.cfg.stream
        self._producer: EventProducer | None = None
        self._lock = threading.Lock()

    def produce(self, events: list[Event]) -> str:
        with self._lock:
            if self._producer is None:
                self._producer = EventProducer(self.cfg, linger_ms=0)
            self._producer.send_all(events)
        return self.cfg.topic

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None


class LocalBackend:
    """Encodes with the served version's encoder in this process and produces to Kafka."""

    def __init__(self, service: RecommendationService) -> None:
        self.service = service
        self.events = EventSink(service)

    async def encode(self, texts: list[str]) -> np.ndarray:
        return await run_in_threadpool(self.service.encode_locally, texts)

    async def produce(self, events: list[Event]) -> str:
        return await run_in_threadpool(self.events.produce, events)

    def close(self) -> None:
        self.events.close()
