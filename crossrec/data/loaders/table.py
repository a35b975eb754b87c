"""Generic tables: one interaction table and one item table, as CSV, JSON lines, JSON or Parquet.

The data path is either a directory holding both tables, named by ``data.table.interactions`` and
``data.table.items`` (with or without extension; ``.csv``, ``.csv.gz``, ``.parquet``, ``.jsonl``,
``.jsonl.gz`` and ``.json`` are tried), or the interaction table itself, with the item table
looked up beside it (when there is none, items are created with empty titles).

Column names come from ``data.table.columns``; every mapped column must be present. Timestamps
are unix seconds or ISO-8601 strings (naive times are read as UTC); event types are ``view``,
``click``, ``purchase`` or ``rating`` (``data.table.default_event_type`` when the column is
unmapped or the cell empty); categories are a list (JSON, Parquet) or a string split by
``data.table.categories_separator``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Iterator
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from crossrec.config import DataConfig, TableColumns, TableConfig
from crossrec.data.dataset import CrossDomainDataset
from crossrec.data.io import iter_json_objects, iter_lines, open_binary
from crossrec.data.loaders import register_loader
from crossrec.data.schema import EventType, Interaction, Item
from crossrec.errors import DataError

logger = logging.getLogger(__name__)

EXTENSIONS = (".csv", ".csv.gz", ".parquet", ".jsonl", ".jsonl.gz", ".json")
_FORMATS = (
    (".csv.gz", "csv"),
    (".csv", "csv"),
    (".parquet", "parquet"),
    (".jsonl.gz", "jsonl"),
    (".jsonl", "jsonl"),
    (".json.gz", "json"),
    (".json", "json"),
)
EVENT_TYPES = tuple(e.value for e in EventType)

Record = dict[str, Any]


# --------------------------------------------------------------------------- locating files
def table_format(file: Path) -> str:
    """``csv``, ``jsonl``, ``json`` or ``parquet``, from the file name.

    Raises:
        DataError: an extension no reader handles.
    """
    name = file.name.lower()
    for ext, fmt in _FORMATS:
        if name.endswith(ext):
            return fmt
    raise DataError(
        file, f"unsupported table file; expected a name ending in {', '.join(EXTENSIONS)}"
    )


def find_table(directory: Path, name: str) -> Path | None:
    """The table called ``name`` in ``directory``: ``name`` itself when it has a known extension,
    else ``name`` + each of :data:`EXTENSIONS`; None when there is none.

    Raises:
        DataError: two files match (e.g. ``items.csv`` and ``items.parquet``).
    """
    if any(name.lower().endswith(ext) for ext, _ in _FORMATS):
        candidate = directory / name
        return candidate if candidate.is_file() else None
    found = [
        directory / f"{name}{ext}" for ext in EXTENSIONS if (directory / f"{name}{ext}").is_file()
    ]
    if len(found) > 1:
        raise DataError(
            directory,
            f"table {name!r} exists as {', '.join(f.name for f in found)}; expected one file "
            "(or name it with its extension in data.table)",
        )
    return found[0] if found else None


def _names_tried(name: str) -> str:
    if any(name.lower().endswith(ext) for ext, _ in _FORMATS):
        return name
    return ", ".join(f"{name}{ext}" for ext in EXTENSIONS)


# --------------------------------------------------------------------------- readers
def _missing_column(file: Path, column: str, found: list[str], line: int | None) -> DataError:
    return DataError(
        file,
        f"expected a column {column!r} (set in data.table.columns); found columns: "
        f"{', '.join(repr(f) for f in found) or 'none'}",
        line,
    )


def read_csv(file: Path, columns: list[str]) -> Iterator[tuple[int, Record]]:
    """Yields ``(line, {column: text or None})`` of a UTF-8 CSV table with a header row; a quoted
    value may span lines (the record's first line is reported)."""
    last_line = 0

    def source() -> Iterator[str]:
        nonlocal last_line
        expected = "a CSV table with a header row"
        for lineno, text in iter_lines(file, expected=expected, skip_blank=False):
            last_line = lineno
            yield (text.removeprefix("\ufeff") if lineno == 1 else text) + "\n"

    reader = csv.reader(source())
    header: list[str] | None = None
    index: dict[str, int] = {}
    while True:
        before = last_line
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(file, f"expected well-formed CSV, found: {exc}", last_line) from None
        lineno = before + 1
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if header is None:
            header = [h.strip() for h in row]
            for column in columns:
                if column not in header:
                    raise _missing_column(file, column, header, lineno)
            index = {column: header.index(column) for column in columns}
            continue
        if len(row) != len(header):
            hint = " (a quoted value spans lines: is a closing quote missing?)"
            raise DataError(
                file,
                f"expected {len(header)} comma-separated fields (as in the header), found "
                f"{len(row)}{hint if any(chr(10) in v for v in row) else ''}",
                lineno,
            )
        yield lineno, {c: (row[i].strip() or None) for c, i in index.items()}
    if header is None:
        raise DataError(file, "file has no header row; expected a CSV table with a header row")


def _check_object(file: Path, lineno: int, obj: Any, columns: list[str]) -> Record:
    if not isinstance(obj, dict):
        raise DataError(file, f"expected a JSON object, found {type(obj).__name__}", lineno)
    for column in columns:
        if column not in obj:
            raise DataError(
                file,
                f"expected a key {column!r} (set in data.table.columns); found keys: "
                f"{', '.join(repr(k) for k in obj) or 'none'}",
                lineno,
            )
    return {c: obj[c] for c in columns}


def read_jsonl(file: Path, columns: list[str]) -> Iterator[tuple[int, Record]]:
    """Yields ``(line, {column: value})`` of a JSON-lines table, one object per line."""
    for lineno, obj in iter_json_objects(file):
        yield lineno, _check_object(file, lineno, obj, columns)


def read_json(file: Path, columns: list[str]) -> Iterator[tuple[int, Record]]:
    """A ``.json`` table: a JSON array of objects (numbered by record) or JSON lines."""
    # The first non-blank line decides the layout; the generator is dropped (and closed) at once.
    _, first = next(iter_lines(file, expected="a JSON array of objects or JSON lines"))
    if not first.lstrip().startswith("["):
        yield from read_jsonl(file, columns)
        return
    with open_binary(file) as handle:
        data: bytes = handle.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(file, "not valid utf-8; expected a UTF-8 JSON array", line) from None
    try:
        array = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            file, f"expected a JSON array of objects, found: {exc.msg}", exc.lineno
        ) from None
    if not isinstance(array, list):
        raise DataError(file, f"expected a JSON array of objects, found {type(array).__name__}")
    for number, obj in enumerate(array, start=1):
        yield number, _check_object(file, number, obj, columns)


def read_parquet(file: Path, columns: list[str]) -> Iterator[tuple[int, Record]]:
    """Yields ``(row number, {column: value})`` of a Parquet table (row numbers from 1)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(file)
        found = list(parquet.schema_arrow.names)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(file, f"expected a Parquet file, cannot read it: {exc}") from None
    for column in columns:
        if column not in found:
            raise _missing_column(file, column, found, None)
    if parquet.metadata.num_rows == 0:
        raise DataError(file, "table has no rows; expected at least one")
    row = 0
    try:
        for batch in parquet.iter_batches(columns=columns):
            for record in batch.to_pylist():
                row += 1
                yield row, record
    except (pa.ArrowException, OSError) as exc:
        raise DataError(file, f"cannot read Parquet data: {exc}", row + 1) from None


def read_table(file: Path, columns: list[str]) -> Iterator[tuple[int, Record]]:
    """Yields ``(line or row number, {column: value})`` of ``file`` in its format, checking that
    every one of ``columns`` is there."""
    readers = {"csv": read_csv, "jsonl": read_jsonl, "json": read_json, "parquet": read_parquet}
    return readers[table_format(file)](file, columns)


# --------------------------------------------------------------------------- values
def _empty(value: Any) -> bool:
    return (
        value is None
        or (isinstance(value, str) and not value.strip())
        or (isinstance(value, float) and math.isnan(value))
    )


def _id(file: Path, line: int, column: str, value: Any) -> str:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    raise DataError(file, f"column {column!r} is {value!r}; expected a non-empty id", line)


def _text(value: Any) -> str | None:
    if _empty(value):
        return None
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value if not _empty(v)) or None
    return str(value).strip()


def parse_timestamp(value: Any) -> float | None:
    """Unix seconds from a number, a numeric string, an ISO-8601 string, a datetime or a date
    (naive ones read as UTC); None when ``value`` is none of these."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, date):
        when = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            return number if math.isfinite(number) else None
        if text[-1:] in ("Z", "z"):
            text = text[:-1] + "+00:00"
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            return None
    else:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def _timestamp(file: Path, line: int, column: str, value: Any) -> float:
    parsed = None if _empty(value) else parse_timestamp(value)
    if parsed is None:
        raise DataError(
            file,
            f"column {column!r} is {value!r}; expected unix seconds or an ISO-8601 date/time",
            line,
        )
    return parsed


def _order(file: Path, line: int, column: str, value: Any) -> int:
    number: float | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float):
        number = value
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number) or not number.is_integer():
        raise DataError(
            file, f"column {column!r} is {value!r}; expected an integer sequence position", line
        )
    return int(number)


def _value(file: Path, line: int, column: str, value: Any) -> float | None:
    if _empty(value):
        return None
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        raise DataError(file, f"column {column!r} is {value!r}; expected a number", line)
    return number


def _event(file: Path, line: int, column: str, value: Any, default: EventType) -> EventType:
    if _empty(value):
        return default
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text not in EVENT_TYPES:
        raise DataError(
            file,
            f"column {column!r} is {value!r}; expected one of {', '.join(EVENT_TYPES)}",
            line,
        )
    return EventType(text)


def _categories(file: Path, line: int, column: str, value: Any, sep: str) -> tuple[str, ...]:
    if _empty(value):
        return ()
    if isinstance(value, str):
        parts = value.split(sep)
    elif isinstance(value, (list, tuple)):
        parts = []
        for part in value:
            if not _empty(part) and not isinstance(part, (str, int, float)):
                raise DataError(
                    file, f"column {column!r} holds {part!r}; expected category names", line
                )
            parts.append("" if _empty(part) else str(part))
    else:
        raise DataError(
            file,
            f"column {column!r} is {value!r}; expected a list of names or a "
            f"{sep!r}-separated string",
            line,
        )
    return tuple(dict.fromkeys(p.strip() for p in parts if p.strip()))


# --------------------------------------------------------------------------- tables
def _interaction_columns(cols: TableColumns) -> list[str]:
    optional = (cols.domain, cols.timestamp, cols.order, cols.event_type, cols.value)
    return [cols.user_id, cols.item_id, *(c for c in optional if c is not None)]


def _item_columns(cols: TableColumns) -> list[str]:
    optional = (cols.domain, cols.description, cols.categories, cols.brand)
    return list(dict.fromkeys([cols.item_id, cols.title, *(c for c in optional if c)]))


def read_interactions(
    file: Path, table: TableConfig, min_rating: float | None
) -> list[Interaction]:
    """Reads the interaction table. Without timestamp and order columns, a user's events keep
    their row order. Rating events whose value is below ``min_rating`` are left out.

    Raises:
        DataError: a missing column, or a bad cell (with its line or row number).
    """
    cols = table.columns
    default_event = EventType(table.default_event_type)
    positions: dict[str, int] = {}
    out: list[Interaction] = []
    below = 0
    for line, rec in read_table(file, _interaction_columns(cols)):
        user = _id(file, line, cols.user_id, rec[cols.user_id])
        item = _id(file, line, cols.item_id, rec[cols.item_id])
        domain = _id(file, line, cols.domain, rec[cols.domain]) if cols.domain else None
        ts = _timestamp(file, line, cols.timestamp, rec[cols.timestamp]) if cols.timestamp else None
        order = _order(file, line, cols.order, rec[cols.order]) if cols.order else None
        event = (
            _event(file, line, cols.event_type, rec[cols.event_type], default_event)
            if cols.event_type
            else default_event
        )
        value = _value(file, line, cols.value, rec[cols.value]) if cols.value else None
        if (
            min_rating is not None
            and event is EventType.RATING
            and value is not None
            and value < min_rating
        ):
            below += 1
            continue
        if ts is None and order is None:
            order = positions.get(user, 0)
            positions[user] = order + 1
        out.append(
            Interaction(
                user_id=user,
                domain=domain if domain is not None else table.default_domain,
                item_id=item,
                timestamp=ts,
                order=order,
                event_type=event,
                value=value,
            )
        )
    if below:
        logger.info("ratings below min_rating left out count=%d file=%s", below, file)
    return out


def read_items(file: Path, table: TableConfig) -> list[Item]:
    """Reads the item table.

    Raises:
        DataError: a missing column, a bad cell or an item given twice (with its line number).
    """
    cols = table.columns
    first_seen: dict[tuple[str, str], int] = {}
    out: list[Item] = []
    for line, rec in read_table(file, _item_columns(cols)):
        item = _id(file, line, cols.item_id, rec[cols.item_id])
        domain = (
            _id(file, line, cols.domain, rec[cols.domain]) if cols.domain else table.default_domain
        )
        key = (domain, item)
        if key in first_seen:
            raise DataError(
                file,
                f"item {item!r} of domain {domain!r} appears again (first at {first_seen[key]}); "
                "expected one row per item",
                line,
            )
        first_seen[key] = line
        categories = (
            _categories(
                file, line, cols.categories, rec[cols.categories], table.categories_separator
            )
            if cols.categories
            else ()
        )
        out.append(
            Item(
                domain=domain,
                item_id=item,
                title=_text(rec[cols.title]) or "",
                description=_text(rec[cols.description]) if cols.description else None,
                categories=categories,
                brand=_text(rec[cols.brand]) if cols.brand else None,
            )
        )
    return out


@register_loader("table")
def load_table(path: Path | None, cfg: DataConfig) -> CrossDomainDataset:
    """Loads an interaction table and an item table as configured in ``data.table``.

    Args:
        path: a directory holding both tables, or the interaction table itself.
        cfg: ``table`` (file names, column mapping, defaults) and ``min_rating``.

    Raises:
        DataError: a table that is missing or ambiguous, a missing column, a bad cell (with its
            line or row number), or items the item table does not list.
    """
    if path is None or not path.exists():
        raise DataError(str(path), "the table format needs a directory or an interaction table")
    table = cfg.table
    if path.is_dir():
        inter_file = find_table(path, table.interactions)
        if inter_file is None:
            raise DataError(
                path,
                f"expected the interaction table here (data.table.interactions): one of "
                f"{_names_tried(table.interactions)}",
            )
        item_file = find_table(path, table.items)
        if item_file is None:
            raise DataError(
                path,
                f"expected the item table here (data.table.items): one of "
                f"{_names_tried(table.items)}",
            )
    else:
        inter_file = path
        table_format(inter_file)
        item_file = find_table(path.parent, table.items)
        if item_file is not None and item_file.resolve() == inter_file.resolve():
            raise DataError(
                path,
                f"this is the item table (data.table.items={table.items!r}), expected the "
                "interaction table",
            )
    items = read_items(item_file, table) if item_file is not None else []
    if item_file is None:
        logger.info("no item table %s beside %s; items get empty titles", table.items, inter_file)
    interactions = read_interactions(inter_file, table, cfg.min_rating)
    logger.info("table interactions=%d items=%d file=%s", len(interactions), len(items), inter_file)
    name = path.name if path.is_dir() else _stem(path)
    return CrossDomainDataset.from_records(
        items,
        interactions,
        source=str(inter_file),
        name=name,
        missing_items="create" if item_file is None else "error",
    )


def _stem(file: Path) -> str:
    """The file name without its table extension (``ratings.csv.gz`` -> ``ratings``)."""
    lowered = file.name.lower()
    for ext, _ in _FORMATS:
        if lowered.endswith(ext):
            return file.name[: -len(ext)]
    return file.stem
