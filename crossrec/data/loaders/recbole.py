"""RecBole atomic files: ``<stem>.inter`` interactions with an optional ``<stem>.item`` beside it.

Every ``*.inter`` file in the data directory or one level below is one domain named by its stem
(renamed by ``data.domain_names``, in sorted-stem order). The first line of an atomic file is a
tab-separated header of ``name:type`` fields, ``type`` one of ``token``, ``token_seq``, ``float``
and ``float_seq``; ``token_seq`` / ``float_seq`` values are space-separated.

``.inter`` needs ``user_id`` and ``item_id``; ``timestamp`` orders events and ``rating`` makes them
rating events (otherwise purchases). ``.item`` needs ``item_id``; the title is the first of
``title``, ``movie_title``, ``item_name``, ``name``, categories come from ``genre``,
``categories`` and ``class``, plus ``brand`` and ``description``; other fields become item
attributes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from crossrec.config import DataConfig
from crossrec.data.dataset import CrossDomainDataset
from crossrec.data.io import iter_lines
from crossrec.data.loaders import register_loader, rename_domains
from crossrec.data.schema import EventType, Interaction, Item
from crossrec.errors import DataError

logger = logging.getLogger(__name__)

FIELD_TYPES = ("token", "token_seq", "float", "float_seq")
TITLE_FIELDS = ("title", "movie_title", "item_name", "name")
CATEGORY_FIELDS = ("genre", "categories", "class")
_ITEM_FIELDS = frozenset(("item_id", "brand", "description", *TITLE_FIELDS, *CATEGORY_FIELDS))


@dataclass(frozen=True)
class AtomicField:
    """One header field of an atomic file."""

    name: str
    type: str
    column: int


Row = dict[str, "str | float | None"]


def _strip_suffix(file: Path, suffix: str) -> str:
    name = file.name.removesuffix(".gz")
    return name.removesuffix(suffix)


def find_inter_files(directory: Path) -> list[tuple[str, Path]]:
    """``(stem, file)`` of every ``*.inter[.gz]`` file in ``directory`` or one level below,
    sorted by stem.

    Raises:
        DataError: no ``.inter`` file, or two files with the same stem.
    """
    found: dict[str, Path] = {}
    candidates = [
        f
        for pattern in ("*.inter", "*.inter.gz", "*/*.inter", "*/*.inter.gz")
        for f in sorted(directory.glob(pattern))
        if f.is_file()
    ]
    for file in candidates:
        stem = _strip_suffix(file, ".inter")
        if stem in found:
            raise DataError(
                file,
                f"another .inter file has the same stem {stem!r} ({found[stem]}); "
                "expected one file per domain",
            )
        found[stem] = file
    if not found:
        raise DataError(
            directory,
            "no RecBole interaction file found; expected <domain>.inter here or one folder below",
        )
    return sorted(found.items())


def _parse_header(file: Path, lineno: int, line: str) -> list[AtomicField]:
    fields: list[AtomicField] = []
    seen: set[str] = set()
    for column, raw in enumerate(line.split("\t")):
        name, sep, type_ = raw.strip().rpartition(":")
        if not sep or not name or type_ not in FIELD_TYPES:
            raise DataError(
                file,
                f"header field #{column + 1} is {raw!r}; expected 'name:type' with type one of "
                f"{', '.join(FIELD_TYPES)}",
                lineno,
            )
        if name in seen:
            raise DataError(file, f"header names field {name!r} twice", lineno)
        seen.add(name)
        fields.append(AtomicField(name, type_, column))
    return fields


def _require(
    file: Path, lineno: int, fields: dict[str, AtomicField], name: str, types: tuple[str, ...]
) -> None:
    if name not in fields:
        raise DataError(
            file,
            f"header lacks the required field '{name}:{types[0]}'; found "
            f"{', '.join(f'{f.name}:{f.type}' for f in fields.values())}",
            lineno,
        )
    if fields[name].type not in types:
        raise DataError(
            file,
            f"field {name!r} has type {fields[name].type!r}; expected {' or '.join(types)}",
            lineno,
        )


def read_atomic(
    file: Path,
    required: dict[str, tuple[str, ...]],
    optional: dict[str, tuple[str, ...]] | None = None,
) -> tuple[dict[str, AtomicField], Iterator[tuple[int, Row]]]:
    """Reads the header of an atomic file and returns its fields and an iterator of rows.

    Row values: ``token`` -> str, ``token_seq`` -> str with single spaces between tokens,
    ``float`` -> float (None when empty), ``float_seq`` -> the validated text.

    Args:
        file: the atomic file.
        required: field name -> allowed types, checked against the header.
        optional: field name -> allowed types of fields that may be absent.

    Raises:
        DataError: empty file, bad header, missing required field; while iterating, a row with
            the wrong field count or a non-numeric float field.
    """
    lines = iter_lines(file, expected="a tab-separated RecBole atomic file", skip_blank=False)
    header_no, header = next(lines)
    fields = {f.name: f for f in _parse_header(file, header_no, header)}
    for name, types in required.items():
        _require(file, header_no, fields, name, types)
    for name, types in (optional or {}).items():
        if name in fields:
            _require(file, header_no, fields, name, types)
    names = ", ".join(fields)

    def rows() -> Iterator[tuple[int, Row]]:
        for lineno, line in lines:
            if not line:
                continue
            values = line.split("\t")
            if len(values) != len(fields):
                raise DataError(
                    file,
                    f"expected {len(fields)} tab-separated fields ({names}), found {len(values)}",
                    lineno,
                )
            row: Row = {}
            for f in fields.values():
                text = values[f.column].strip()
                if f.type == "token":
                    row[f.name] = text
                elif f.type == "token_seq":
                    row[f.name] = " ".join(text.split())
                elif f.type == "float":
                    row[f.name] = _float(file, lineno, f.name, text) if text else None
                else:
                    for token in text.split():
                        _float(file, lineno, f.name, token)
                    row[f.name] = " ".join(text.split())
            yield lineno, row

    return fields, rows()


def _float(file: Path, lineno: int, name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(file, f"field {name!r} is {text!r}; expected a finite number", lineno)
    return value


def read_items(file: Path, domain: str) -> list[Item]:
    """Reads a ``.item`` file into items of ``domain``.

    Raises:
        DataError: bad header, rows or an ``item_id`` given twice (with line numbers).
    """
    fields, rows = read_atomic(file, {"item_id": ("token",)})
    title_fields = [n for n in TITLE_FIELDS if n in fields]
    category_fields = [n for n in CATEGORY_FIELDS if n in fields]
    if not title_fields:
        logger.warning("item file has no title field; titles are empty file=%s", file)
    items: dict[str, int] = {}
    out: list[Item] = []
    for lineno, row in rows:
        item_id = str(row["item_id"])
        if not item_id:
            raise DataError(file, "expected a non-empty item_id", lineno)
        if item_id in items:
            raise DataError(
                file, f"item_id {item_id!r} appears again (first on line {items[item_id]})", lineno
            )
        items[item_id] = lineno
        title = next((str(row[n]) for n in title_fields if row[n]), "")
        categories: list[str] = []
        for name in category_fields:
            value = row[name]
            if not value:
                continue
            text = str(value)
            categories.extend(text.split() if fields[name].type == "token_seq" else [text])
        description, brand = row.get("description"), row.get("brand")
        attributes = {
            name: str(value)
            for name, value in row.items()
            if name not in _ITEM_FIELDS and value is not None and value != ""
        }
        out.append(
            Item(
                domain=domain,
                item_id=item_id,
                title=title,
                description=str(description) if description else None,
                categories=tuple(dict.fromkeys(categories)),
                brand=str(brand) if brand else None,
                attributes=attributes,
            )
        )
    return out


def read_interactions(
    file: Path, domain: str, min_rating: float | None, positions: dict[str, int]
) -> tuple[list[Interaction], bool]:
    """Reads a ``.inter`` file into interactions of ``domain``.

    Args:
        file: the ``.inter`` file.
        domain: the domain of its items.
        min_rating: ratings below it are left out (only when the file has ``rating``).
        positions: per-user event counter shared across files; gives ``order`` so that, without
            timestamps, a user's events keep their file order.

    Returns:
        The interactions and whether the file has timestamps.
    """
    fields, rows = read_atomic(
        file,
        {"user_id": ("token",), "item_id": ("token",)},
        {"timestamp": ("float",), "rating": ("float",)},
    )
    has_time, has_rating = "timestamp" in fields, "rating" in fields
    out: list[Interaction] = []
    below = 0
    for lineno, row in rows:
        user, item = str(row["user_id"]), str(row["item_id"])
        if not user or not item:
            raise DataError(file, "expected non-empty user_id and item_id", lineno)
        timestamp = rating = None
        for name in ("timestamp", "rating"):
            if name in fields and row[name] is None:
                raise DataError(file, f"field {name!r} is empty; expected a number", lineno)
        if has_time:
            timestamp = float(row["timestamp"] or 0.0)
        if has_rating:
            rating = float(row["rating"] or 0.0)
            if min_rating is not None and rating < min_rating:
                below += 1
                continue
        position = positions.get(user, 0)
        positions[user] = position + 1
        out.append(
            Interaction(
                user_id=user,
                domain=domain,
                item_id=item,
                timestamp=timestamp,
                order=position,
                event_type=EventType.RATING if has_rating else EventType.PURCHASE,
                value=rating,
            )
        )
    if below:
        logger.info("ratings below min_rating left out count=%d file=%s", below, file)
    return out, has_time


def _item_file(inter_file: Path, stem: str) -> Path | None:
    for name in (f"{stem}.item", f"{stem}.item.gz"):
        candidate = inter_file.parent / name
        if candidate.is_file():
            return candidate
    return None


@register_loader("recbole")
def load_recbole(path: Path | None, cfg: DataConfig) -> CrossDomainDataset:
    """Loads RecBole atomic files, one domain per ``.inter`` file.

    Args:
        path: the directory holding the ``.inter`` files (or their per-domain folders).
        cfg: ``domain_names`` (renames, in sorted-stem order) and ``min_rating``.

    Raises:
        DataError: no ``.inter`` file, a bad header or row (with its line number), or a
            ``domain_names`` list that does not match the files.
    """
    if path is None or not path.is_dir():
        raise DataError(str(path), "the recbole format needs a directory of atomic files")
    inter_files = find_inter_files(path)
    stems = [stem for stem, _ in inter_files]
    domains = rename_domains(path, stems, cfg.domain_names, ".inter file(s)")

    items: list[Item] = []
    interactions: list[Interaction] = []
    positions: dict[str, int] = {}
    timed: dict[str, bool] = {}
    for (stem, inter_file), domain in zip(inter_files, domains, strict=True):
        domain_inters, timed[domain] = read_interactions(
            inter_file, domain, cfg.min_rating, positions
        )
        item_file = _item_file(inter_file, stem)
        if item_file is not None:
            domain_items = read_items(item_file, domain)
        else:
            # Created here (not by from_records) so domains keep their sorted-stem order.
            ids = dict.fromkeys(i.item_id for i in domain_inters)
            domain_items = [Item(domain=domain, item_id=i, title="") for i in ids]
            logger.info(
                "no %s.item beside %s; %d items get empty titles", stem, inter_file, len(ids)
            )
        logger.info(
            "recbole domain=%s items=%d interactions=%d",
            domain,
            len(domain_items),
            len(domain_inters),
        )
        items.extend(domain_items)
        interactions.extend(domain_inters)
    if len(set(timed.values())) > 1:
        untimed = [d for d, t in timed.items() if not t]
        logger.warning(
            "some domains have no timestamp field; their events sort before timed ones domains=%s",
            untimed,
        )
    return CrossDomainDataset.from_records(
        items, interactions, source=str(path), name=path.name, missing_items="create"
    )
