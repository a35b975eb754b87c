"""Every error crossrec raises on purpose derives from :class:`CrossRecError`.

Errors carry structured fields so callers (the CLI, an HTTP handler, a stream worker) can report
*what* was wrong and *where* without parsing messages. All of them pickle, so they cross Ray actor
boundaries intact.
"""

from __future__ import annotations

from pathlib import Path


class CrossRecError(Exception):
    """Root of every error crossrec raises deliberately."""


class ConfigError(CrossRecError):
    """A configuration value is invalid.

    Args:
        field: dotted path of the offending field (``train.lr``), or ``""`` for the whole file.
        reason: what was wrong with it.
        source: the file or override the value came from, when known.
    """

    def __init__(self, field: str, reason: str, source: str | None = None) -> None:
        self.field = field
        self.reason = reason
        self.source = source
        where = f"{source}: " if source else ""
        what = f"{field}: " if field else ""
        super().__init__(f"{where}{what}{reason}")

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, str, str | None]]:
        return (type(self), (self.field, self.reason, self.source))


class DataError(CrossRecError):
    """A data file (or a record in it) cannot be read as the expected format.

    Args:
        path: the file that was being read.
        reason: what was expected and what was found.
        line: 1-based line (or record) number, when the problem is in one record.
    """

    def __init__(self, path: str | Path, reason: str, line: int | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple[type[DataError], tuple[str, str, int | None]]:
        return (type(self), (self.path, self.reason, self.line))


class UnknownFormatError(CrossRecError):
    """A data format name that no loader is registered for."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = list(known)
        super().__init__(f"unknown data format {name!r}; expected one of: {', '.join(known)}")

    def __reduce__(self) -> tuple[type[UnknownFormatError], tuple[str, list[str]]]:
        return (type(self), (self.name, self.known))


class EncoderError(CrossRecError):
    """The text encoder (model directory, tokenizer, weights) cannot be loaded or used."""


class EvaluationError(CrossRecError):
    """An evaluation cannot be run as asked (no test cases, unknown domain, bad scores)."""


class EventError(CrossRecError):
    """An event cannot be accepted (bad JSON, missing or ill-typed field, unknown domain, too
    large). Carries where the event came from, so a dead-letter record can name it.

    Args:
        reason: what was wrong, naming the JSON field when there is one.
        topic, partition, offset: the Kafka record the event came from, when it came from one.
        source: another origin (``events.jsonl:12``), when not from Kafka.
    """

    def __init__(
        self,
        reason: str,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
        source: str | None = None,
    ) -> None:
        self.reason = reason
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.source = source
        if topic is not None:
            where = f"{topic}[{partition}] offset {offset}: "
        elif source is not None:
            where = f"{source}: "
        else:
            where = ""
        super().__init__(f"{where}{reason}")

    def __reduce__(
        self,
    ) -> tuple[type[EventError], tuple[str, str | None, int | None, int | None, str | None]]:
        return (
            type(self),
            (self.reason, self.topic, self.partition, self.offset, self.source),
        )


class FeatureStoreError(CrossRecError):
    """The feature store (Redis) cannot be reached or refused an operation after retries."""


class StreamError(CrossRecError):
    """The event stream (Kafka) cannot be reached or refused an operation."""


class EmbeddedServiceError(CrossRecError):
    """An embedded service (redis-server, the Kafka-protocol broker) cannot be started."""


class RequestError(CrossRecError):
    """A recommendation request cannot be answered as asked: an HTTP handler turns it into a
    4xx JSON error with ``status`` and ``code``.

    Args:
        status: the HTTP status (404 unknown user or item, 422 invalid value, ...).
        code: a stable machine-readable code (``unknown_user``, ``unknown_domain``, ...).
        message: what was wrong, naming the field or id.
        field: the request field at fault, when there is one (``history[3].item_id``).
    """

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        super().__init__(f"{code}: {message}")

    def __reduce__(self) -> tuple[type[RequestError], tuple[int, str, str, str | None]]:
        return (type(self), (self.status, self.code, self.message, self.field))


class ServiceUnavailableError(CrossRecError):
    """A part the request needs (model, feature store, event stream, encoder) is not ready;
    HTTP 503, the client may retry."""
