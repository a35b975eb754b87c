"""Training samples from the stream, and the bounded buffer that keeps them.

A *sample* is one streamed event seen as next-item prediction: the user's history across
domains just before the event (its *context*, newest ``online.context_length`` items) and the
event's item (the *target*). The feature store records them in the same atomic pass that writes
a batch (`RedisFeatureStore.write_events` with `RedisSampleBuffer.spec`), for new events only:
a duplicate delivery or a replayed batch (a crash before the commit) records nothing, so an
event whose first copy lies before the learner's cursor never comes back as "new". Readers
still drop repeated event ids (a safety net).

The buffer is a Redis stream (``P:online:samples``) capped at ``online.buffer_size`` entries
(oldest dropped): its entry ids give the arrival order, so "the newest samples" (the gate's
holdout) and "everything after the last round" (the next round's data) are id ranges.

Example:
    >>> buffer = RedisSampleBuffer(store, cfg.online)
    >>> store.write_events(events, samples=buffer.spec())
    >>> [sample for _, sample in buffer.read()]
"""

from __future__ import annotations

import abc
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossrec.config import OnlineConfig
from crossrec.errors import DataError
from crossrec.feature_store.base import FeatureStore, SampleSpec

logger = logging.getLogger(__name__)

ItemKey = tuple[str, str]  # (domain, item_id)


@dataclass(frozen=True)
class Sample:
    """One next-item example: ``context`` (oldest first) was followed by ``(domain, item_id)``."""

    event_id: str
    user_id: str
    domain: str
    item_id: str
    timestamp: float
    context: tuple[ItemKey, ...]

    def to_json(self) -> str:
        return json.dumps(
            {
                "e": self.event_id,
                "u": self.user_id,
                "d": self.domain,
                "i": self.item_id,
                "t": self.timestamp,
                "c": [list(k) for k in self.context],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes, where: str = "sample") -> Sample:
        try:
            d = json.loads(text)
            return cls(
                str(d["e"]),
                str(d["u"]),
                str(d["d"]),
                str(d["i"]),
                float(d["t"]),
                tuple((str(a), str(b)) for a, b in d["c"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(where, f"not a sample ({type(exc).__name__}: {exc})") from exc


def dedupe(entries: Sequence[tuple[str, Sample]]) -> list[tuple[str, Sample]]:
    """``entries`` without repeated event ids (the first one stays)."""
    seen: set[str] = set()
    out = []
    for entry_id, sample in entries:
        if sample.event_id not in seen:
            seen.add(sample.event_id)
            out.append((entry_id, sample))
    return out


def write_samples(path: str | Path, samples: Sequence[Sample]) -> Path:
    """Writes samples as JSONL (a regression set, say)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text("".join(s.to_json() + "\n" for s in samples), encoding="utf-8")
    tmp.replace(out)
    return out


def read_samples(path: str | Path) -> list[Sample]:
    """Reads a JSONL file of samples; a bad line fails with its file and line number."""
    src = Path(path)
    if not src.is_file():
        raise DataError(src, "no such sample file")
    out = []
    with src.open(encoding="utf-8") as handle:
        for n, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    out.append(Sample.from_json(line))
                except DataError as exc:
                    raise DataError(src, exc.reason, line=n) from exc
    return out


class SampleBuffer(abc.ABC):
    """Samples in arrival order, each with an entry id that sorts by arrival."""

    @abc.abstractmethod
    def spec(self) -> SampleSpec:
        """What a feature-store write needs to record samples into this buffer."""

    @abc.abstractmethod
    def append(self, samples: Sequence[Sample]) -> int:
        """Appends samples (the oldest beyond capacity are dropped); returns how many."""

    @abc.abstractmethod
    def read(
        self, after: str | None = None, until: str | None = None, count: int | None = None
    ) -> list[tuple[str, Sample]]:
        """Entries with ``after < id <= until`` (open ends when None), oldest first, repeated
        event ids dropped."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    # The learner's state lives beside the samples.
    @abc.abstractmethod
    def cursor(self) -> str | None:
        """The id of the last sample a round trained on (None before the first round)."""

    @abc.abstractmethod
    def set_cursor(self, entry_id: str) -> None: ...

    @abc.abstractmethod
    def log_decision(self, decision: dict[str, Any]) -> None:
        """Appends a gate decision to the decision log (kept: the newest 1000)."""

    @abc.abstractmethod
    def decisions(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest decisions first."""


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class RedisSampleBuffer(SampleBuffer):
    """The buffer as a Redis stream beside the feature store's keys.

    Keys (``P`` = ``feature_store.key_prefix``): ``P:online:samples`` (STREAM),
    ``P:online:cursor`` (STRING), ``P:online:decisions`` (LIST, newest first).

    Args:
        store: the feature store whose Redis (and key prefix) is used.
        cfg: ``online`` (buffer size).
    """

    DECISIONS_KEPT = 1000

    def __init__(self, store: FeatureStore, cfg: OnlineConfig) -> None:
        from crossrec.feature_store.redis_store import RedisFeatureStore

        if not isinstance(store, RedisFeatureStore):
            raise TypeError(f"RedisSampleBuffer needs a RedisFeatureStore, got {type(store)}")
        self.store = store
        self.cfg = cfg
        prefix = store.prefix
        self.samples_key = f"{prefix}:online:samples"
        self.cursor_key = f"{prefix}:online:cursor"
        self.decisions_key = f"{prefix}:online:decisions"

    def append(self, samples: Sequence[Sample]) -> int:
        if not samples:
            return 0
        client = self.store.client

        def run() -> int:
            pipe = client.pipeline(transaction=False)
            for s in samples:
                pipe.xadd(
                    self.samples_key,
                    {"s": s.to_json()},
                    maxlen=self.cfg.buffer_size,
                    approximate=True,
                )
            pipe.execute()
            return len(samples)

        return self.store._call("append samples", run)

    def read(
        self, after: str | None = None, until: str | None = None, count: int | None = None
    ) -> list[tuple[str, Sample]]:
        lo = f"({after}" if after else "-"
        hi = until or "+"
        rows = self.store._call(
            "read samples", lambda: self.store.client.xrange(self.samples_key, lo, hi, count=count)
        )
        out = []
        for raw_id, fields in rows:
            entry_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            out.append((entry_id, Sample.from_json(fields[b"s"], f"{self.samples_key} {entry_id}")))
        return dedupe(out)

    def spec(self) -> SampleSpec:
        """What a feature-store write needs to record samples into this buffer."""
        wanted = self.cfg.sample_domains
        return SampleSpec(
            key=self.samples_key,
            max_len=self.cfg.buffer_size,
            context_length=self.cfg.context_length,
            domains=None if wanted is None else frozenset(wanted),
        )

    def __len__(self) -> int:
        client = self.store.client
        return int(self.store._call("count samples", lambda: client.xlen(self.samples_key)))

    def cursor(self) -> str | None:
        raw = self.store._call("read cursor", lambda: self.store.client.get(self.cursor_key))
        return raw.decode() if raw else None

    def set_cursor(self, entry_id: str) -> None:
        _id_key(entry_id)  # a stream id, or a ValueError here rather than in Redis later
        self.store._call("set cursor", lambda: self.store.client.set(self.cursor_key, entry_id))

    def log_decision(self, decision: dict[str, Any]) -> None:
        def run() -> None:
            pipe = self.store.client.pipeline(transaction=True)
            pipe.lpush(self.decisions_key, json.dumps(decision, sort_keys=True))
            pipe.ltrim(self.decisions_key, 0, self.DECISIONS_KEPT - 1)
            pipe.execute()

        self.store._call("log decision", run)

    def decisions(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = self.store._call(
            "read decisions", lambda: self.store.client.lrange(self.decisions_key, 0, limit - 1)
        )
        return [json.loads(r) for r in rows]
