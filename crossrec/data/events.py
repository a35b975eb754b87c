"""The user event: its versioned schema and the validation of raw records.

An event is one JSON object (one Kafka record on the stream)::

    {"event_id": "e-1", "user_id": "u7", "item_id": "i3", "domain": "films",
     "event_type": "click", "value": null, "timestamp": 1732262400.5}

``schema_version`` (default 1) may be given; a version this code does not know is rejected, so
an old consumer never half-reads a newer event. Ids are strings (integers are accepted and kept as
their decimal text); ``timestamp`` is Unix seconds; ``value`` is required for ``rating``.
The event types are the dataset vocabulary (:class:`crossrec.data.schema.EventType`). The
producer and the Kafka client options are in :mod:`crossrec.stream.events`.

Example:
    >>> event = Event(event_id="e1", user_id="u1", item_id="i1", domain="films",
    ...               event_type="view", timestamp=time.time())
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Collection
from typing import Any, Literal, get_args

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

from crossrec.data.schema import EventType as DatasetEventType
from crossrec.errors import EventError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# One vocabulary: the dataset's EventType enum; the Literal types the JSON field.
EVENT_TYPES = tuple(e.value for e in DatasetEventType)
EventType = Literal["view", "click", "purchase", "rating"]
if get_args(EventType) != EVENT_TYPES:  # pragma: no cover - caught by any import
    raise ImportError(f"event types {get_args(EventType)} differ from the dataset's {EVENT_TYPES}")
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
