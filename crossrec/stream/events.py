"""The user event: schema (versioned), validation of raw Kafka records, and the producer API.

An event is one JSON object per Kafka record::

    {"event_id": "e-1", "user_id": "u7", "item_id": "i3", "domain": "films",
     "event_type": "click", "value": null, "timestamp": 1732262400.5}

``schema_version`` (default 1) may be given; a version this code does not know is rejected, so
an old consumer never half-reads a newer event. Ids are strings (integers are accepted and kept as
their decimal text); ``timestamp`` is Unix seconds; ``value`` is required for ``rating``.

Example:
    >>> event = Event(event_id="e1", user_id="u1", item_id="i1", domain="films",
    ...               event_type="view", timestamp=time.time())
    >>> with EventProducer(cfg.stream) as producer: producer.send(event)
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from crossrec.config import StreamConfig
from crossrec.errors import EventError, StreamError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
EVENT_TYPES = ("view", "click", "purchase", "rating")
EventType = Literal["view", "click", "purchase", "rating"]
MAX_ID_LENGTH = 256


def _as_id(value: object, field: str) -> str:
    if isinstance(value, bool):  # bool is an int subclass; an id is never true/false
        raise ValueError(f"{field} must be a string or an integer, got a boolean")
    text = str(value)
    if not text.strip():
        raise ValueError(f"{field} must not be empty")
    if len(text) > MAX_ID_LENGTH:
        raise ValueError(f"{field} is longer than {MAX_ID_LENGTH} characters")
    if any(ord(ch) < 32 for ch in text):
        raise ValueError(f"{field} contains a control character")
    return text


class Event(BaseModel):
    """One user interaction. Field types are strict: ``"5"`` is not a timestamp."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    event_id: StrictStr | StrictInt
    user_id: StrictStr | StrictInt
    item_id: StrictStr | StrictInt
    domain: StrictStr = Field(min_length=1, max_length=64)
    event_type: EventType
    value: StrictFloat | StrictInt | None = None
    timestamp: StrictFloat | StrictInt = Field(description="Unix seconds.")

    @field_validator("event_id", "user_id", "item_id", mode="after")
    @classmethod
    def _ids(cls, value: str | int, info: Any) -> str:
        return _as_id(value, info.field_name)

    @field_validator("value", "timestamp", mode="after")
    @classmethod
    def _finite(cls, value: float | int | None, info: Any) -> float | None:
        if value is None:
            return None
        if not math.isfinite(value):
            raise ValueError(f"{info.field_name} must be a finite number")
        return float(value)

    @field_validator("timestamp", mode="after")
    @classmethod
    def _positive_time(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("timestamp must be positive Unix seconds")
        return value

    @model_validator(mode="after")
    def _rating_has_value(self) -> Event:
        if self.event_type == "rating" and self.value is None:
            raise ValueError("a rating event needs a value")
        return self

    # Narrow types for callers: validators above turn ids into str and numbers into float.
    @property
    def eid(self) -> str:
        return str(self.event_id)

    @property
    def uid(self) -> str:
        return str(self.user_id)

    @property
    def iid(self) -> str:
        return str(self.item_id)

    @property
    def ts(self) -> float:
        return float(self.timestamp)

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode("utf-8")


_EXPECTED = {
    "event_id": "a string or an integer",
    "user_id": "a string or an integer",
    "item_id": "a string or an integer",
    "value": "a number",
    "timestamp": "a number (Unix seconds)",
}


def _describe(exc: ValidationError) -> str:
    """One short reason per offending field, naming it."""
    by_field: dict[str, list[dict[str, Any]]] = {}
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        by_field.setdefault(field, []).append(dict(err))
    parts = []
    for field, errs in list(by_field.items())[:3]:
        kinds = {e["type"] for e in errs}
        if "missing" in kinds:
            parts.append(f"missing field {field!r}")
        elif "extra_forbidden" in kinds:
            parts.append(f"unknown field {field!r}")
        elif not field:
            parts.append(str(errs[0]["msg"]).removeprefix("Value error, "))
        elif len(errs) > 1 and field in _EXPECTED:  # every member of a union refused it
            parts.append(f"field {field!r}: must be {_EXPECTED[field]}")
        else:
            parts.append(f"field {field!r}: {str(errs[0]['msg']).removeprefix('Value error, ')}")
    return "; ".join(parts)


def parse_event(
    raw: bytes | str | None,
    *,
    domains: Collection[str] | None = None,
    max_bytes: int = 65536,
    max_future_skew_s: float | None = None,
    now: float | None = None,
) -> Event:
    """Validates one raw record. Raises :class:`EventError` with a reason naming the field
    (the caller adds where the record came from)."""
    if raw is None:
        raise EventError("empty record (no value)")
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    if len(data) > max_bytes:
        raise EventError(f"record is {len(data)} bytes, more than the {max_bytes} allowed")
    try:
        # Fast path: pydantic parses and validates the JSON in one pass; anything it refuses
        # is parsed again below only to say exactly why.
        event = Event.model_validate_json(data)
    except ValidationError:
        pass
    else:
        check_event_context(event, domains, max_future_skew_s, now)
        return event
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventError(f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise EventError(f"expected a JSON object, got {type(obj).__name__}")
    version = obj.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise EventError(
            f"field 'schema_version': unsupported version {version!r} (this consumer reads "
            f"{SCHEMA_VERSION})"
        )
    try:
        event = Event.model_validate(obj)
    except ValidationError as exc:
        raise EventError(_describe(exc)) from None
    check_event_context(event, domains, max_future_skew_s, now)
    return event


def check_event_context(
    event: Event,
    domains: Collection[str] | None,
    max_future_skew_s: float | None,
    now: float | None,
) -> None:
    """The checks that need more than the event itself: a known domain, a timestamp not too
    far in the future. Raises :class:`EventError` naming the field."""
    if domains is not None and event.domain not in domains:
        raise EventError(
            f"field 'domain': unknown domain {event.domain!r}; known: {', '.join(sorted(domains))}"
        )
    if max_future_skew_s is not None:
        now = time.time() if now is None else now
        if event.ts > now + max_future_skew_s:
            raise EventError(
                f"field 'timestamp': {event.ts} is {event.ts - now:.0f} s in the future "
                f"(more than stream.max_future_skew_s={max_future_skew_s})"
            )


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
