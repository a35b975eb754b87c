"""Line-oriented file reading that reports the file and line of every problem."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from crossrec.errors import DataError


def open_binary(path: Path):  # type: ignore[no-untyped-def]
    """Opens ``path`` for binary reading, transparently gunzipping ``*.gz`` files."""
    if not path.exists():
        raise DataError(path, "file not found")
    if not path.is_file():
        raise DataError(path, "not a regular file")
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return path.open("rb")


def iter_lines(
    path: Path, *, encoding: str = "utf-8", expected: str = "text", skip_blank: bool = True
) -> Iterator[tuple[int, str]]:
    """Yields ``(line_number, line)`` pairs of a text file (gzip allowed), without line endings.

    Raises:
        DataError: the file is missing, empty (``expected`` says what should have been there),
            not valid ``encoding``, or not valid gzip.
    """
    seen_any = False
    with open_binary(path) as handle:
        lineno = 0
        try:
            for lineno, raw in enumerate(handle, start=1):  # noqa: B007 - used after the loop
                try:
                    text = raw.decode(encoding)
                except UnicodeDecodeError as exc:
                    raise DataError(
                        path,
                        f"not valid {encoding} at byte {exc.start} of the line "
                        f"(byte 0x{raw[exc.start]:02x}); expected {encoding} {expected}",
                        lineno,
                    ) from None
                text = text.rstrip("\r\n")
                if skip_blank and not text.strip():
                    continue
                seen_any = True
                yield lineno, text
        except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
            raise DataError(path, f"cannot read file: {exc}", lineno + 1 or None) from None
    if not seen_any:
        raise DataError(path, f"file is empty; expected {expected}")


def iter_json_objects(path: Path, what: str = "object") -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields ``(line_number, object)`` of a JSON-lines file whose every line is a JSON object.

    Raises:
        DataError: a line that is not valid JSON or not an object, naming file and line.
    """
    for lineno, line in iter_lines(path, expected=f"one JSON {what} per line"):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                path,
                f"expected one JSON {what} per line, found invalid JSON ({exc.msg} at column "
                f"{exc.colno})",
                lineno,
            ) from None
        if not isinstance(record, dict):
            raise DataError(path, f"expected a JSON {what}, found {type(record).__name__}", lineno)
        yield lineno, record


def find_file(directory: Path, *names: str) -> Path:
    """The first of ``names`` (each also tried with ``.gz``) that exists in ``directory``."""
    for name in names:
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise DataError(directory, f"expected one of these files here: {', '.join(names)}")
