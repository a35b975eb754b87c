"""MovieLens: ml-100k (``u.data`` + ``u.item``), ml-1m/10m (``ratings.dat`` + ``movies.dat``,
``::``-separated) and ml-latest / ml-20m+ (``ratings.csv`` + ``movies.csv``).

One domain (``movies`` unless ``data.domain_names`` renames it); item text = title + genres.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from crossrec.config import DataConfig
from crossrec.data.dataset import CrossDomainDataset
from crossrec.data.io import iter_lines
from crossrec.data.loaders import register_loader
from crossrec.data.schema import EventType, Interaction, Item
from crossrec.errors import DataError

ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)


def _ratings(
    file: Path, rows: list[tuple[int, list[str]]], domain: str, min_rating: float | None
) -> list[Interaction]:
    out: list[Interaction] = []
    for lineno, fields in rows:
        if len(fields) < 4:
            raise DataError(
                file,
                f"expected 4 fields (user, item, rating, timestamp), found {len(fields)}",
                lineno,
            )
        user, item, rating_text, ts_text = (f.strip() for f in fields[:4])
        try:
            rating = float(rating_text)
            ts = float(ts_text)
        except ValueError:
            raise DataError(
                file, f"rating {rating_text!r} / timestamp {ts_text!r} must be numbers", lineno
            ) from None
        if not user or not item:
            raise DataError(file, "empty user or item id", lineno)
        if min_rating is not None and rating < min_rating:
            continue
        out.append(
            Interaction(
                user_id=user,
                domain=domain,
                item_id=item,
                timestamp=ts,
                event_type=EventType.RATING,
                value=rating,
            )
        )
    return out


def _split_lines(file: Path, sep: str, encoding: str, expected: str) -> list[tuple[int, list[str]]]:
    return [
        (n, line.split(sep)) for n, line in iter_lines(file, encoding=encoding, expected=expected)
    ]


def _csv_rows(file: Path, expected: str, header: list[str]) -> list[tuple[int, list[str]]]:
    lines = list(iter_lines(file, expected=expected))
    first_no, first = lines[0]
    found = next(csv.reader([first]))
    if [h.strip() for h in found[: len(header)]] != header:
        raise DataError(file, f"expected header {','.join(header)}, found {first!r}", first_no)
    rows = []
    for lineno, line in lines[1:]:
        rows.append((lineno, next(csv.reader(io.StringIO(line)))))
    return rows


@register_loader("movielens")
def load_movielens(path: Path | None, cfg: DataConfig) -> CrossDomainDataset:
    """Loads a MovieLens folder, recognising the release by its file names."""
    if path is None or not path.is_dir():
        raise DataError(str(path), "the movielens format needs the release directory")
    domain = (cfg.domain_names or ["movies"])[0]
    items: list[Item] = []
    if (path / "u.data").is_file():
        item_file = path / "u.item"
        for lineno, fields in _split_lines(item_file, "|", "latin-1", "'|'-separated movies"):
            if len(fields) != 5 + len(ML100K_GENRES):
                raise DataError(
                    item_file,
                    f"expected {5 + len(ML100K_GENRES)} '|'-separated fields, found {len(fields)}",
                    lineno,
                )
            flags = fields[5:]
            genres = tuple(g for g, f in zip(ML100K_GENRES, flags, strict=True) if f.strip() == "1")
            items.append(Item(domain, fields[0].strip(), fields[1].strip(), categories=genres))
        rows = _split_lines(path / "u.data", "\t", "utf-8", "tab-separated ratings")
        interactions = _ratings(path / "u.data", rows, domain, cfg.min_rating)
    elif (path / "ratings.dat").is_file():
        movie_file = path / "movies.dat"
        for lineno, fields in _split_lines(movie_file, "::", "latin-1", "'::'-separated movies"):
            if len(fields) != 3:
                raise DataError(movie_file, "expected movie_id::title::genres", lineno)
            genres = tuple(g for g in fields[2].split("|") if g and g != "(no genres listed)")
            items.append(Item(domain, fields[0].strip(), fields[1].strip(), categories=genres))
        rows = _split_lines(path / "ratings.dat", "::", "utf-8", "'::'-separated ratings")
        interactions = _ratings(path / "ratings.dat", rows, domain, cfg.min_rating)
    elif (path / "ratings.csv").is_file():
        movie_file = path / "movies.csv"
        for lineno, fields in _csv_rows(movie_file, "movies.csv", ["movieId", "title", "genres"]):
            if len(fields) != 3:
                raise DataError(movie_file, "expected movieId,title,genres", lineno)
            genres = tuple(g for g in fields[2].split("|") if g and g != "(no genres listed)")
            items.append(Item(domain, fields[0].strip(), fields[1].strip(), categories=genres))
        header = ["userId", "movieId", "rating", "timestamp"]
        rows = _csv_rows(path / "ratings.csv", "ratings.csv", header)
        interactions = _ratings(path / "ratings.csv", rows, domain, cfg.min_rating)
    else:
        raise DataError(
            path,
            "not a MovieLens folder: expected u.data (ml-100k), ratings.dat (ml-1m/10m) "
            "or ratings.csv (ml-latest)",
        )
    return CrossDomainDataset.from_records(items, interactions, source=str(path), name=path.name)
