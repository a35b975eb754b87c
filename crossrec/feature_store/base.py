"""The feature store interface: what the stream writes and serving reads.

Writes are idempotent by ``event_id``: writing the same batch twice (a replay after a crash)
changes nothing the second time, so at-least-once delivery from Kafka counts every event once.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from crossrec.data.events import Event

if TYPE_CHECKING:
    from crossrec.config import FeatureStoreConfig, OnlineConfig
    from crossrec.feature_store.samples import SampleBuffer


@dataclass(frozen=True)
class HistoryEntry:
    """One stored interaction of a user (oldest first in a history)."""

    event_id: str
    item_id: str
    domain: str
    event_type: str
    timestamp: float
    value: float | None = None


@dataclass(frozen=True)
class UserVector:
    """A user's vector for one target domain, with what made it.

    Args:
        seq: the user's event counter when the history it was computed from was read; a vector
            from an older history never overwrites a newer one.
    """

    user_id: str
    domain: str
    vector: np.ndarray
    model_version: str
    updated_at: float
    seq: int


@dataclass(frozen=True)
class UserState:
    """What serving reads for one request: the user's event counter, their history across
    domains (oldest first) and their stored vector for the requested domain, if any."""

    user_id: str
    seq: int
    history: list[HistoryEntry]
    vector: UserVector | None

    @property
    def known(self) -> bool:
        return self.seq > 0 or bool(self.history)


@dataclass(frozen=True)
class ModelPointer:
    """The current model version and where its checkpoint lives."""

    version: str
    uri: str
    published_at: float
    reason: str = field(default="", compare=False)  # why it became current (the log says)


@dataclass
class WriteResult:
    """What one batch write did: new events stored, duplicates ignored, users touched."""

    written: int = 0
    duplicates: int = 0
    users: list[str] = field(default_factory=list)
    samples: int = 0  # online-learning samples recorded (new events of sampled domains)


@dataclass(frozen=True)
class SampleSpec:
    """Which written events become online-learning samples (`crossrec.feature_store.samples`) and
    where they go: every *new* event (never a duplicate delivery) of ``domains`` (None: all)
    becomes one sample whose context is the user's newest ``context_length`` events before it,
    appended to the stream ``key`` (capped near ``max_len`` entries)."""

    key: str
    max_len: int
    context_length: int
    domains: frozenset[str] | None = None


@dataclass(frozen=True)
class NewItem:
    """An item to be added to a serving index: its text and encoder output."""

    domain: str
    item_id: str
    text: str
    text_vector: np.ndarray
    model_version: str


class EventStore(abc.ABC):
    """Users' events: batched idempotent writes, capped histories, popularity."""

    @abc.abstractmethod
    def write_events(
        self, events: Sequence[Event], now: float | None = None, samples: SampleSpec | None = None
    ) -> WriteResult:
        """Stores a batch atomically per user and idempotently by ``event_id``: histories,
        popularity, the dedupe set, and marks every user of the batch dirty. With ``samples``
        the same pass records a sample for every new event (a duplicate records nothing)."""

    @abc.abstractmethod
    def history(self, user_id: str, domain: str) -> list[HistoryEntry]:
        """One domain's capped history, oldest first."""

    @abc.abstractmethod
    def histories(
        self, user_ids: Sequence[str], domains: Sequence[str]
    ) -> dict[str, tuple[int, list[HistoryEntry]]]:
        """Each user's event counter and history across ``domains``, merged by time."""

    @abc.abstractmethod
    def popularity(self, domain: str, k: int, now: float | None = None) -> list[tuple[str, float]]:
        """Top ``k`` items of ``domain`` by time-decayed popularity, as of ``now``."""


class UserVectorStore(abc.ABC):
    """Users' vectors and the dirty marks that ask for them to be recomputed."""

    @abc.abstractmethod
    def write_user_vectors(self, vectors: Sequence[UserVector]) -> int:
        """Stores vectors unless a newer one (higher ``seq``) is there; returns how many."""

    @abc.abstractmethod
    def user_vector(self, user_id: str, domain: str) -> UserVector | None: ...

    @abc.abstractmethod
    def user_state(self, user_id: str, domains: Sequence[str], vector_domain: str) -> UserState:
        """History across ``domains`` and the stored vector for ``vector_domain``, read in one
        round trip (the serving path)."""

    @abc.abstractmethod
    def dirty_users(self, limit: int, quiet_for_s: float = 0.0) -> list[tuple[str, float]]:
        """Up to ``limit`` users marked dirty at least ``quiet_for_s`` ago, with their marks."""

    @abc.abstractmethod
    def mark_dirty(self, user_ids: Sequence[str]) -> None:
        """Asks the update trigger to recompute these users' vectors (a waiting mark stays)."""

    @abc.abstractmethod
    def clear_dirty(self, claims: Sequence[tuple[str, float]]) -> int:
        """Unmarks users whose mark is still the claimed one (a newer mark stays)."""


class ModelPointerStore(abc.ABC):
    """Which model version is current, and the promotion log."""

    @abc.abstractmethod
    def current_model(self) -> ModelPointer | None: ...

    @abc.abstractmethod
    def set_current_model(self, pointer: ModelPointer, reason: str = "publish") -> None:
        """Points serving and the stream at ``pointer`` and appends it to the promotion log."""

    @abc.abstractmethod
    def model_history(self, limit: int = 100) -> list[ModelPointer]:
        """The promotion log, newest first (what was current, in turn)."""


class ItemStore(abc.ABC):
    """Items the model has not seen: their texts, pending ids and encoded new items."""

    @abc.abstractmethod
    def put_item_texts(self, domain: str, texts: dict[str, str]) -> None:
        """Texts of items (for items the model has not seen; written by the API)."""

    @abc.abstractmethod
    def item_texts(self, domain: str, item_ids: Sequence[str]) -> dict[str, str]: ...

    @abc.abstractmethod
    def mark_items_pending(self, domain: str, item_ids: Sequence[str]) -> None:
        """Items seen in events whose text is not known yet."""

    @abc.abstractmethod
    def pending_items(self, domain: str) -> set[str]: ...

    @abc.abstractmethod
    def queue_new_items(self, items: Sequence[NewItem]) -> None:
        """Encoded new items for serving replicas to add to their item index."""

    @abc.abstractmethod
    def new_items(
        self, domain: str, after: str = "0", count: int = 1000
    ) -> list[tuple[str, NewItem]]:
        """Queued new items after stream id ``after``, with their ids."""


class SampleStore(abc.ABC):
    """Where streamed events become online-learning samples."""

    @abc.abstractmethod
    def sample_buffer(self, cfg: OnlineConfig) -> SampleBuffer:
        """The store's sample buffer (its ``spec()`` goes to :meth:`EventStore.write_events`)."""


class Heartbeats(abc.ABC):
    """Liveness of the process parts that share the store."""

    @abc.abstractmethod
    def set_heartbeat(self, name: str, state: dict[str, Any], ttl_s: float) -> None:
        """Publishes ``state`` of the process part ``name`` (e.g. an in-process stream
        worker); it vanishes after ``ttl_s`` unless published again."""

    @abc.abstractmethod
    def heartbeat(self, name: str) -> dict[str, Any] | None:
        """The last state published under ``name``, None when it expired."""


class FeatureStore(
    EventStore, UserVectorStore, ModelPointerStore, ItemStore, SampleStore, Heartbeats
):
    """Online user state: every interface above, behind one connection. Callers type against
    the smallest interface they use; `crossrec.feature_store.open_feature_store` builds the
    implementation ``feature_store.type`` names (:class:`RedisFeatureStore` ships)."""

    @classmethod
    @abc.abstractmethod
    def from_config(cls, cfg: FeatureStoreConfig, url: str | None = None) -> FeatureStore:
        """Connects as ``cfg`` says (``url`` overrides ``cfg.url``)."""

    @abc.abstractmethod
    def ping(self) -> bool: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
