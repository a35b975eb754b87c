"""Item text templates: which fields of an item, in which order, make up its text."""

from __future__ import annotations

from dataclasses import dataclass, field

from crossrec.config import EncoderConfig
from crossrec.data.schema import Item


@dataclass(frozen=True)
class ItemTextTemplate:
    """Joins an item's non-empty fields with ``separator``; a domain may use its own fields.

    Example:
        >>> ItemTextTemplate(["title", "categories"]).render(item)
        'Dune. Science Fiction'
    """

    fields: tuple[str, ...] = ("title", "categories", "brand", "description")
    separator: str = ". "
    max_chars: int = 1000
    per_domain: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False)

    @classmethod
    def from_config(cls, cfg: EncoderConfig) -> ItemTextTemplate:
        return cls(
            fields=tuple(cfg.template_fields),
            separator=cfg.template_separator,
            max_chars=cfg.max_text_chars,
            per_domain={d: tuple(f) for d, f in cfg.domain_templates.items()},
        )

    def render(self, item: Item) -> str:
        fields = self.per_domain.get(item.domain, self.fields)
        parts = [item.field_text(f).strip() for f in fields]
        return self.separator.join(p for p in parts if p)[: self.max_chars]

    def key(self) -> str:
        """A stable description, part of every embedding's cache key."""
        per = ";".join(f"{d}={','.join(f)}" for d, f in sorted(self.per_domain.items()))
        return f"fields={','.join(self.fields)}|sep={self.separator!r}|max={self.max_chars}|{per}"
