"""`CrossDomainDataset`: users and items indexed per domain, time-ordered mixed-domain sequences."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from crossrec.data.schema import EventType, Interaction, Item
from crossrec.errors import DataError

logger = logging.getLogger(__name__)

_EVENT_CODES = {event: code for code, event in enumerate(EventType)}
_EVENTS_BY_CODE = list(EventType)


@dataclass(frozen=True)
class PredefinedSplit:
    """A split that ships with a dataset release (e.g. LLMCDSR's user-level valid/test files).

    ``valid_users`` / ``test_users`` are user ids whose *last* interaction is the target and whose
    earlier interactions are context only; every other user's sequence is training data.
    """

    name: str
    valid_users: tuple[str, ...]
    test_users: tuple[str, ...]


class CrossDomainDataset:
    """Items and interactions of several domains, indexed for training and evaluation.

    Items get a *global* index: domain ``d``'s items occupy ``offsets[d] .. offsets[d+1]-1`` in
    the order the domains were first seen. Every user has one time-ordered sequence of global item
    indices mixing all domains.

    Example:
        >>> ds = CrossDomainDataset.from_records(items, interactions, source="my.csv")
        >>> ds.user_sequence("u1")  # global item indices, oldest first
    """

    def __init__(
        self,
        domains: Sequence[str],
        items: Sequence[Item],
        user_ids: Sequence[str],
        seq_offsets: np.ndarray,
        seq_items: np.ndarray,
        seq_times: np.ndarray,
        seq_events: np.ndarray,
        seq_values: np.ndarray,
        *,
        name: str = "dataset",
        predefined_split: PredefinedSplit | None = None,
    ) -> None:
        self.name = name
        self.domains: list[str] = list(domains)
        self.items: list[Item] = list(items)
        self.user_ids: list[str] = list(user_ids)
        self.seq_offsets = seq_offsets
        self.seq_items = seq_items
        self.seq_times = seq_times
        self.seq_events = seq_events
        self.seq_values = seq_values
        self.predefined_split = predefined_split

        self.domain_index = {d: i for i, d in enumerate(self.domains)}
        self.item_domain = np.array([self.domain_index[it.domain] for it in self.items], np.int64)
        counts = np.bincount(self.item_domain, minlength=len(self.domains))
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        if np.any(np.diff(self.item_domain) < 0):
            raise ValueError("items must be grouped by domain in domain order")
        self.item_index = {(it.domain, it.item_id): g for g, it in enumerate(self.items)}
        self.user_index = {u: i for i, u in enumerate(self.user_ids)}

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_records(
        cls,
        items: Iterable[Item],
        interactions: Iterable[Interaction],
        *,
        source: str = "<records>",
        name: str = "dataset",
        missing_items: Literal["error", "create"] = "error",
        predefined_split: PredefinedSplit | None = None,
    ) -> CrossDomainDataset:
        """Indexes canonical records.

        Args:
            items: item records; an ``(domain, item_id)`` pair may appear once.
            interactions: interaction records in any order.
            source: where the records came from, named in errors.
            name: a short name for reports.
            missing_items: ``"error"`` rejects interactions with items not in ``items``;
                ``"create"`` adds such items with an empty title (logged with a count).
            predefined_split: a split that ships with the release, if any.

        Raises:
            DataError: duplicate items, unknown items, or no interactions at all.
        """
        by_domain: dict[str, dict[str, Item]] = {}
        for item in items:
            bucket = by_domain.setdefault(item.domain, {})
            if item.item_id in bucket:
                raise DataError(
                    source, f"duplicate item {item.item_id!r} in domain {item.domain!r}"
                )
            bucket[item.item_id] = item

        users: dict[str, int] = {}
        rows_user: list[int] = []
        rows_key: list[tuple[str, str]] = []
        rows_time: list[float] = []
        rows_order: list[int] = []
        rows_event: list[int] = []
        rows_value: list[float] = []
        missing: dict[tuple[str, str], int] = {}
        for inter in interactions:
            key = (inter.domain, inter.item_id)
            if inter.item_id not in by_domain.get(inter.domain, {}):
                missing[key] = missing.get(key, 0) + 1
            rows_user.append(users.setdefault(inter.user_id, len(users)))
            rows_key.append(key)
            rows_time.append(inter.timestamp if inter.timestamp is not None else 0.0)
            rows_order.append(inter.order if inter.order is not None else 0)
            rows_event.append(_EVENT_CODES[EventType(inter.event_type)])
            rows_value.append(inter.value if inter.value is not None else np.nan)
        if not rows_user:
            raise DataError(source, "no interactions found")
        if missing:
            examples = ", ".join(f"{d}/{i}" for d, i in list(missing)[:5])
            if missing_items == "error":
                raise DataError(
                    source,
                    f"{len(missing)} item(s) referenced by interactions have no item record "
                    f"(e.g. {examples}); add them to the item file",
                )
            logger.warning(
                "items without metadata created with empty titles count=%d examples=%s source=%s",
                len(missing),
                examples,
                source,
            )
            for d, i in missing:
                by_domain.setdefault(d, {})[i] = Item(domain=d, item_id=i, title="")

        # Domains in first-seen order of the item records, then of the interactions.
        domains = list(by_domain)
        all_items: list[Item] = [it for d in domains for it in by_domain[d].values()]
        index = {(it.domain, it.item_id): g for g, it in enumerate(all_items)}

        n = len(rows_user)
        user_arr = np.asarray(rows_user, dtype=np.int64)
        item_arr = np.fromiter((index[k] for k in rows_key), dtype=np.int64, count=n)
        time_arr = np.asarray(rows_time, dtype=np.float64)
        order_arr = np.asarray(rows_order, dtype=np.int64)
        # Stable sort by (user, timestamp, order, input position).
        perm = np.lexsort((np.arange(n), order_arr, time_arr, user_arr))
        user_sorted = user_arr[perm]
        counts = np.bincount(user_sorted, minlength=len(users))
        seq_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(
            domains,
            all_items,
            list(users),
            seq_offsets,
            item_arr[perm],
            time_arr[perm],
            np.asarray(rows_event, dtype=np.int8)[perm],
            np.asarray(rows_value, dtype=np.float32)[perm],
            name=name,
            predefined_split=predefined_split,
        )

    # ----------------------------------------------------------------- lookups
    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_interactions(self) -> int:
        return int(self.seq_items.shape[0])

    def domain_items(self, domain: str) -> range:
        """Global indices of ``domain``'s items."""
        d = self._domain(domain)
        return range(int(self.offsets[d]), int(self.offsets[d + 1]))

    def num_domain_items(self, domain: str) -> int:
        return len(self.domain_items(domain))

    def global_index(self, domain: str, item_id: str) -> int:
        try:
            return self.item_index[(domain, item_id)]
        except KeyError:
            raise KeyError(f"unknown item {item_id!r} in domain {domain!r}") from None

    def user_sequence(self, user: str | int) -> np.ndarray:
        """The user's global item indices, oldest first."""
        u = self.user_index[user] if isinstance(user, str) else user
        return self.seq_items[self.seq_offsets[u] : self.seq_offsets[u + 1]]

    def user_history(self, user: str | int) -> list[tuple[str, str]]:
        """The user's ``(domain, item_id)`` pairs, oldest first (what
        ``CrossRecModel.recommend`` takes)."""
        return [(self.items[g].domain, self.items[g].item_id) for g in self.user_sequence(user)]

    def user_times(self, user: str | int) -> np.ndarray:
        u = self.user_index[user] if isinstance(user, str) else user
        return self.seq_times[self.seq_offsets[u] : self.seq_offsets[u + 1]]

    def iter_sequences(self) -> Iterator[tuple[str, np.ndarray]]:
        """Yields ``(user_id, time-ordered global item indices)`` for every user."""
        for u, user in enumerate(self.user_ids):
            yield user, self.seq_items[self.seq_offsets[u] : self.seq_offsets[u + 1]]

    def event_types(self, user: str | int) -> list[EventType]:
        u = self.user_index[user] if isinstance(user, str) else user
        codes = self.seq_events[self.seq_offsets[u] : self.seq_offsets[u + 1]]
        return [_EVENTS_BY_CODE[int(c)] for c in codes]

    def user_domain_counts(self) -> np.ndarray:
        """``[num_users, num_domains]`` interaction counts."""
        user_of_row = np.repeat(np.arange(self.num_users), np.diff(self.seq_offsets))
        flat = user_of_row * len(self.domains) + self.item_domain[self.seq_items]
        counts = np.bincount(flat, minlength=self.num_users * len(self.domains))
        return counts.reshape(self.num_users, len(self.domains))

    def overlapping_users(self) -> list[str]:
        """Users with interactions in two or more domains."""
        mask = (self.user_domain_counts() > 0).sum(axis=1) >= 2
        return [self.user_ids[u] for u in np.flatnonzero(mask)]

    def _domain(self, domain: str) -> int:
        try:
            return self.domain_index[domain]
        except KeyError:
            raise KeyError(
                f"unknown domain {domain!r}; this dataset has: {', '.join(self.domains)}"
            ) from None

    # ----------------------------------------------------------------- statistics
    def stats(self) -> dict[str, Any]:
        """Per-domain users, items, interactions and sequence-length statistics."""
        per_user = self.user_domain_counts()
        lengths = np.diff(self.seq_offsets)
        domains: dict[str, Any] = {}
        for d, name in enumerate(self.domains):
            counts = per_user[:, d]
            active = counts[counts > 0]
            domains[name] = {
                "users": int(active.size),
                "items": int(self.offsets[d + 1] - self.offsets[d]),
                "items_with_interactions": int(
                    np.unique(self.seq_items[self.item_domain[self.seq_items] == d]).size
                ),
                "interactions": int(counts.sum()),
                "density": float(counts.sum())
                / max(1, int(active.size) * int(self.offsets[d + 1] - self.offsets[d])),
                "sequence_length": _length_stats(active),
            }
        return {
            "name": self.name,
            "domains": domains,
            "users": self.num_users,
            "items": self.num_items,
            "interactions": self.num_interactions,
            "overlapping_users": int(((per_user > 0).sum(axis=1) >= 2).sum()),
            "sequence_length": _length_stats(lengths),
            "predefined_split": None
            if self.predefined_split is None
            else {
                "name": self.predefined_split.name,
                "valid_users": len(self.predefined_split.valid_users),
                "test_users": len(self.predefined_split.test_users),
            },
        }


def _length_stats(lengths: np.ndarray) -> dict[str, float]:
    if lengths.size == 0:
        return {"min": 0, "max": 0, "mean": 0.0, "median": 0.0, "p90": 0.0}
    return {
        "min": int(lengths.min()),
        "max": int(lengths.max()),
        "mean": round(float(lengths.mean()), 3),
        "median": float(np.median(lengths)),
        "p90": float(np.percentile(lengths, 90)),
    }
