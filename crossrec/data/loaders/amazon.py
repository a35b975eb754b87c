"""Amazon review data of the McAuley lab, 2014 and 2018 releases (JSON lines, gzip or not).

A data directory holds, per category, a reviews file and a metadata file:

* 2014: ``reviews_<Cat>.json[.gz]`` or ``reviews_<Cat>_5.json[.gz]`` and ``meta_<Cat>.json[.gz]``;
* 2018: ``<Cat>.json[.gz]`` or ``<Cat>_5.json[.gz]`` and ``meta_<Cat>.json[.gz]``.

Every category is one domain, named by ``data.domain_names`` (one per category, in sorted category
order) or else by the category. Reviews (``reviewerID``, ``asin``, ``overall``,
``unixReviewTime``) become rating interactions; metadata (``title``, ``brand``, ``description``,
``categories`` / ``category``) becomes items. 2014 metadata lines are Python dict literals, read
with :func:`ast.literal_eval` (never ``eval``) when they are not JSON.
"""

from __future__ import annotations

import ast
import html
import json
import logging
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from crossrec.config import DataConfig
from crossrec.data.dataset import CrossDomainDataset
from crossrec.data.io import iter_json_objects, iter_lines
from crossrec.data.loaders import register_loader, rename_domains
from crossrec.data.schema import EventType, Interaction, Item
from crossrec.errors import DataError

logger = logging.getLogger(__name__)

EXPECTED_NAMES = (
    "reviews_<Cat>.json[.gz] or reviews_<Cat>_5.json[.gz] with meta_<Cat>.json[.gz] (2014)",
    "<Cat>.json[.gz] or <Cat>_5.json[.gz] with meta_<Cat>.json[.gz] (2018)",
)
_FILE_NAME = re.compile(r"^(?P<stem>.+)\.json(?:\.gz)?$")
_ATTRIBUTE_FIELDS = ("main_cat", "price", "feature")


@dataclass
class CategoryFiles:
    """The files of one category: its reviews file and its metadata file."""

    category: str
    reviews: list[Path] = field(default_factory=list)
    meta: list[Path] = field(default_factory=list)


def find_category_files(directory: Path) -> list[CategoryFiles]:
    """Groups the review and metadata files of ``directory`` by category, sorted by category.

    Raises:
        DataError: no recognised file, a category with two reviews (or metadata) files, or a
            metadata file without a reviews file (or the reverse).
    """
    by_category: dict[str, CategoryFiles] = {}
    for file in sorted(directory.iterdir()):
        match = _FILE_NAME.match(file.name)
        if not file.is_file() or match is None:
            continue
        stem = match["stem"]
        if stem.startswith("qa_"):
            logger.info("ignoring question-answer file %s", file)
            continue
        if stem.startswith("meta_"):
            category = stem.removeprefix("meta_")
            by_category.setdefault(category, CategoryFiles(category)).meta.append(file)
            continue
        category = stem.removeprefix("reviews_").removesuffix("_5")
        by_category.setdefault(category, CategoryFiles(category)).reviews.append(file)
    if not by_category:
        raise DataError(
            directory,
            "no Amazon review files found; expected " + "; or ".join(EXPECTED_NAMES),
        )
    for files in by_category.values():
        for kind, found in (("reviews", files.reviews), ("metadata", files.meta)):
            if len(found) > 1:
                raise DataError(
                    found[1],
                    f"category {files.category!r} has {len(found)} {kind} files "
                    f"({', '.join(f.name for f in found)}); expected exactly one, keep one",
                )
        if not files.meta:
            raise DataError(
                files.reviews[0],
                f"reviews file without metadata; expected meta_{files.category}.json[.gz] "
                "beside it",
            )
        if not files.reviews:
            raise DataError(
                files.meta[0],
                f"metadata file without reviews; expected reviews_{files.category}.json[.gz] "
                f"(2014) or {files.category}.json[.gz] (2018) beside it",
            )
    return [by_category[c] for c in sorted(by_category)]


def _text(value: Any) -> str | None:
    """Joins a string or a list of strings into unescaped, stripped text (None when empty)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        parts = [_text(v) for v in value]
        joined = " ".join(p for p in parts if p)
        return joined or None
    text = html.unescape(str(value)).strip()
    return text or None


def _categories(record: dict[str, Any]) -> tuple[str, ...]:
    """Flattens 2014 ``categories`` (list of lists) and 2018 ``category`` (list), keeping the
    first occurrence of each name."""
    names: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, (list, tuple)):
            for v in value:
                walk(v)
        elif value is not None:
            text = html.unescape(str(value)).strip()
            if text:
                names.append(text)

    walk(record.get("categories"))
    walk(record.get("category"))
    return tuple(dict.fromkeys(names))


def _parse_meta_line(file: Path, lineno: int, line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as json_exc:
        try:
            record = ast.literal_eval(line)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise DataError(
                file,
                "expected a JSON object (2018) or a Python dict literal (2014) per line, "
                f"found invalid text ({json_exc.msg} at column {json_exc.colno})",
                lineno,
            ) from None
    if not isinstance(record, dict):
        raise DataError(
            file,
            f"expected an object with an 'asin' per line, found {type(record).__name__}",
            lineno,
        )
    return record


def read_metadata(file: Path, domain: str) -> list[Item]:
    """Reads one metadata file into items of ``domain``; a repeated ``asin`` keeps its first
    record (the 2018 files hold exact duplicates) and is logged with a count."""
    items: dict[str, Item] = {}
    repeated = 0
    for lineno, line in iter_lines(file, expected="one metadata object per line"):
        record = _parse_meta_line(file, lineno, line)
        asin = _required_id(file, lineno, record, "asin")
        if asin in items:
            repeated += 1
            continue
        attributes = {name: text for name in _ATTRIBUTE_FIELDS if (text := _text(record.get(name)))}
        items[asin] = Item(
            domain=domain,
            item_id=asin,
            title=_text(record.get("title")) or "",
            description=_text(record.get("description")),
            categories=_categories(record),
            brand=_text(record.get("brand")),
            attributes=attributes,
        )
    if repeated:
        logger.warning(
            "repeated asin records in metadata kept first count=%d file=%s", repeated, file
        )
    return list(items.values())


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _review_time(record: dict[str, Any]) -> float | None:
    if "unixReviewTime" in record:
        return _number(record["unixReviewTime"])
    text = record.get("reviewTime")  # "09 13, 2009" in both releases
    if isinstance(text, str):
        try:
            when = datetime.strptime(text.strip(), "%m %d, %Y")
        except ValueError:
            return None
        return when.replace(tzinfo=timezone.utc).timestamp()
    return None


def _required_id(file: Path, lineno: int, record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(file, f"expected a non-empty {key!r} string, found {value!r}", lineno)
    return value.strip()


def read_reviews(file: Path, domain: str, min_rating: float | None) -> list[Interaction]:
    """Reads one reviews file into rating interactions of ``domain``; ratings below
    ``min_rating`` are left out (and counted in the log)."""
    out: list[Interaction] = []
    below = 0
    for lineno, record in iter_json_objects(file, "review object"):
        user = _required_id(file, lineno, record, "reviewerID")
        asin = _required_id(file, lineno, record, "asin")
        rating = _number(record.get("overall"))
        if rating is None:
            raise DataError(
                file,
                f"expected a numeric 'overall' rating, found {record.get('overall')!r}",
                lineno,
            )
        timestamp = _review_time(record)
        if timestamp is None:
            raise DataError(
                file,
                "expected a numeric 'unixReviewTime' (or a 'reviewTime' like '09 13, 2009'), "
                f"found {record.get('unixReviewTime', record.get('reviewTime'))!r}",
                lineno,
            )
        if min_rating is not None and rating < min_rating:
            below += 1
            continue
        out.append(
            Interaction(
                user_id=user,
                domain=domain,
                item_id=asin,
                timestamp=timestamp,
                event_type=EventType.RATING,
                value=rating,
            )
        )
    if below:
        logger.info("reviews below min_rating left out count=%d file=%s", below, file)
    return out


@register_loader("amazon")
def load_amazon(path: Path | None, cfg: DataConfig) -> CrossDomainDataset:
    """Loads a directory of Amazon review and metadata files, one domain per category.

    Args:
        path: the directory holding the category files.
        cfg: ``domain_names`` (one per category in sorted category order) and ``min_rating``.

    Raises:
        DataError: missing or unpaired files, a malformed line (with its line number), or a
            ``domain_names`` list that does not match the categories.
    """
    if path is None or not path.is_dir():
        raise DataError(str(path), "the amazon format needs a directory of review/metadata files")
    categories = find_category_files(path)
    names = [c.category for c in categories]
    domains = rename_domains(path, names, cfg.domain_names, "categor(ies)")

    items: list[Item] = []
    interactions: list[Interaction] = []
    for files, domain in zip(categories, domains, strict=True):
        meta = read_metadata(files.meta[0], domain)
        reviews = read_reviews(files.reviews[0], domain, cfg.min_rating)
        logger.info(
            "amazon category=%s domain=%s items=%d reviews=%d",
            files.category,
            domain,
            len(meta),
            len(reviews),
        )
        items.extend(meta)
        interactions.extend(reviews)
    return CrossDomainDataset.from_records(
        items, interactions, source=str(path), name=path.name, missing_items="create"
    )
