"""The canonical records every loader produces: items and interactions."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class EventType(str, Enum):
    """What a user did with an item. The same vocabulary is used on the event stream."""

    VIEW = "view"
    CLICK = "click"
    PURCHASE = "purchase"
    RATING = "rating"


@dataclass(frozen=True, slots=True)
class Item:
    """One item of one domain, described by its text.

    Example:
        >>> Item(domain="books", item_id="b1", title="Dune", categories=("sci-fi",))
        Item(domain='books', item_id='b1', title='Dune', ...)
    """

    domain: str
    item_id: str
    title: str
    description: str | None = None
    categories: tuple[str, ...] = ()
    brand: str | None = None
    attributes: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    def field_text(self, name: str) -> str:
        """The text of one field (``title``, ``categories``, ``brand``, ``description`` or an
        attribute), empty when the item does not have it."""
        if name == "title":
            return self.title
        if name == "categories":
            return ", ".join(self.categories)
        if name == "brand":
            return self.brand or ""
        if name == "description":
            return self.description or ""
        return self.attributes.get(name, "")


@dataclass(frozen=True, slots=True)
class Interaction:
    """One user-item event. ``timestamp`` (unix seconds) orders a user's events; where a source
    has no timestamps, ``order`` (position in the user's sequence) does."""

    user_id: str
    domain: str
    item_id: str
    timestamp: float | None = None
    order: int | None = None
    event_type: EventType = EventType.PURCHASE
    value: float | None = None
