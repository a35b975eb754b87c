"""Events on Kafka: the producer API, the Kafka client options and JSON-lines files.

The event schema and its validation live in :mod:`crossrec.data.events` (re-exported here).

Example:
    >>> with EventProducer(cfg.stream) as producer: producer.send(event)
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from crossrec.config import StreamConfig
from crossrec.data.events import (
    EVENT_TYPES,
    MAX_ID_LENGTH,
    SCHEMA_VERSION,
    Event,
    EventType,
    check_event_context,
    parse_event,
)
from crossrec.errors import EventError, StreamError

__all__ = [
    "EVENT_TYPES",
    "MAX_ID_LENGTH",
    "SCHEMA_VERSION",
    "Event",
    "EventProducer",
    "EventType",
    "ProduceReport",
    "check_event_context",
    "kafka_client_options",
    "open_events",
    "parse_api_version",
    "parse_event",
    "produce_lines",
    "read_event_lines",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- Kafka clients
def parse_api_version(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(p) for p in text.split("."))
    except ValueError:
        raise StreamError(f"stream.api_version {text!r} is not like '2.1'") from None


def kafka_client_options(cfg: StreamConfig) -> dict[str, Any]:
    """kafka-python settings shared by consumers and producers: brokers, protocol version,
    SASL/SSL (passed through from config; the SASL password may come from
    ``CROSSREC_KAFKA_PASSWORD``), then ``stream.client_options`` as they are."""
    if not cfg.bootstrap_servers:
        raise StreamError(
            "stream.bootstrap_servers is not set (the embedded broker is started by "
            "`crossrec stream` and `crossrec demo`; see crossrec.embedded)"
        )
    opts: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in cfg.bootstrap_servers.split(",") if s.strip()],
        "security_protocol": cfg.security_protocol,
        "client_id": "crossrec",
    }
    version = parse_api_version(cfg.api_version)
    if version is not None:
        opts["api_version"] = version
    if cfg.sasl_mechanism:
        opts["sasl_mechanism"] = cfg.sasl_mechanism
        opts["sasl_plain_username"] = cfg.sasl_username
        opts["sasl_plain_password"] = cfg.sasl_password or os.environ.get("CROSSREC_KAFKA_PASSWORD")
    if cfg.security_protocol in ("SSL", "SASL_SSL"):
        opts["ssl_check_hostname"] = cfg.ssl_check_hostname
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(cfg, key):
                opts[key] = getattr(cfg, key)
    opts.update(cfg.client_options)
    return opts


class EventProducer:
    """Sends events to ``stream.topic``, keyed by user id so one user's events stay in order
    on one partition.

    Example:
        >>> with EventProducer(cfg.stream) as p:
        ...     p.send(event); p.flush()
    """

    def __init__(self, cfg: StreamConfig, **overrides: Any) -> None:
        from kafka import KafkaProducer

        self.cfg = cfg
        opts = kafka_client_options(cfg)
        opts.update({"acks": "all", "linger_ms": 5, "retries": 5})
        opts.update(overrides)
        try:
            self._producer = KafkaProducer(**opts)
        except Exception as exc:  # kafka-python raises several types for an unreachable broker
            raise StreamError(f"cannot connect to Kafka at {cfg.bootstrap_servers}: {exc}") from exc

    def send(self, event: Event, topic: str | None = None) -> Any:
        """Queues ``event``; returns kafka-python's future."""
        return self.send_raw(event.to_json(), key=event.uid.encode("utf-8"), topic=topic)

    def send_raw(
        self,
        value: bytes,
        key: bytes | None = None,
        topic: str | None = None,
        partition: int | None = None,
    ) -> Any:
        """Queues bytes as they are (replaying recorded records, or testing the DLQ)."""
        return self._producer.send(
            topic or self.cfg.topic, value=value, key=key, partition=partition
        )

    def send_all(self, events: Sequence[Event], timeout: float = 30.0) -> None:
        """Sends ``events`` and waits until Kafka acknowledged every one; raises
        :class:`StreamError` naming the first that was not."""
        futures = [self.send(e) for e in events]
        self.flush(timeout)
        for event, future in zip(events, futures, strict=True):
            try:
                future.get(timeout=timeout)
            except Exception as exc:
                raise StreamError(
                    f"event {event.event_id!r} not acknowledged by Kafka: {exc}"
                ) from exc

    def flush(self, timeout: float | None = 30.0) -> None:
        try:
            self._producer.flush(timeout=timeout)
        except Exception as exc:
            raise StreamError(f"events not acknowledged by Kafka within {timeout}s: {exc}") from exc

    def close(self) -> None:
        self._producer.close(timeout=10)

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.flush()
        finally:
            self.close()


# --------------------------------------------------------------------------- files
def read_event_lines(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """Non-blank lines of a JSON-lines stream with their 1-based numbers."""
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if text:
            yield number, text


@dataclass
class ProduceReport:
    sent: int = 0
    skipped: int = 0


def open_events(path: str) -> tuple[IO[str], str]:
    """``path`` or ``-`` (stdin) opened for reading, and its display name."""
    if path == "-":
        return sys.stdin, "<stdin>"
    p = Path(path)
    if not p.is_file():
        raise EventError("no such file", source=str(p))
    return p.open(encoding="utf-8"), str(p)


def produce_lines(
    producer: EventProducer,
    lines: Iterable[str],
    source: str,
    *,
    domains: Collection[str] | None = None,
    raw: bool = False,
    skip_invalid: bool = False,
    on_skip: Any = None,
) -> ProduceReport:
    """Sends each JSON line. Lines are validated first (unless ``raw``); an invalid line stops
    the run with an :class:`EventError` naming ``source:line`` after flushing what was sent,
    or is reported through ``on_skip(error)`` and skipped with ``skip_invalid``."""
    report = ProduceReport()
    try:
        for number, text in read_event_lines(lines):
            if raw:
                producer.send_raw(text.encode("utf-8"))
                report.sent += 1
                continue
            try:
                event = parse_event(text, domains=domains)
            except EventError as exc:
                error = EventError(exc.reason, source=f"{source}:{number}")
                if not skip_invalid:
                    raise error from None
                report.skipped += 1
                if on_skip is not None:
                    on_skip(error)
                continue
            producer.send(event)
            report.sent += 1
    finally:
        producer.flush()
    return report
