"""Amazon (2014/2018), RecBole and generic-table loaders, on small files written into tmp_path."""

from __future__ import annotations

import gzip
import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crossrec.config import DataConfig, TableColumns, TableConfig
from crossrec.data.dataset import CrossDomainDataset
from crossrec.data.loaders import _LOADERS, register_loader
from crossrec.data.loaders.amazon import load_amazon
from crossrec.data.loaders.recbole import load_recbole
from crossrec.data.loaders.table import load_table, parse_timestamp
from crossrec.data.schema import EventType
from crossrec.errors import CrossRecError, DataError


def write(path: Path, lines: list[str]) -> Path:
    """Writes UTF-8 lines (gzip-compressed when the name ends in .gz)."""
    data = "".join(f"{line}\n" for line in lines).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def titles(ds: CrossDomainDataset, domain: str) -> dict[str, str]:
    return {ds.items[g].item_id: ds.items[g].title for g in ds.domain_items(domain)}


def sequence_ids(ds: CrossDomainDataset, user: str) -> list[str]:
    return [ds.items[int(g)].item_id for g in ds.user_sequence(user)]


def domain_interactions(ds: CrossDomainDataset) -> dict[str, int]:
    return {d: s["interactions"] for d, s in ds.stats()["domains"].items()}


def assert_time_ordered(ds: CrossDomainDataset) -> None:
    for user in ds.user_ids:
        assert np.all(np.diff(ds.user_times(user)) >= 0), user


# =========================================================================== amazon
def review(user: str, asin: str, rating: float, ts: int) -> str:
    return json.dumps(
        {"reviewerID": user, "asin": asin, "overall": rating, "unixReviewTime": ts, "vote": "2"}
    )


def amazon_2014(root: Path, gz: bool) -> Path:
    ext = ".json.gz" if gz else ".json"
    write(
        root / f"reviews_Books{ext}",
        [
            review("u1", "B1", 5.0, 300),
            review("u1", "B2", 4.0, 100),
            review("u2", "B1", 2.0, 200),
            review("u2", "B9", 3.0, 250),  # no metadata for B9
        ],
    )
    # 2014 metadata: Python dict literals, single quotes, not JSON.
    write(
        root / f"meta_Books{ext}",
        [
            (
                "{'asin': 'B1', 'title': 'Dune &amp; Sons', 'description': 'Sand.', "
                "'categories': [['Books', 'Sci-Fi'], ['Books', 'Classics']], 'price': 9.99}"
            ),
            (
                "{'asin': 'B2', 'title': \"Ender's Game\", 'brand': 'Tor', "
                "'categories': [['Books']], 'salesRank': {'Books': 5}}"
            ),
            "{'asin': 'B3', 'title': 'Unreviewed', 'categories': []}",
        ],
    )
    write(
        root / f"reviews_Movies_and_TV_5{ext}",
        [review("u1", "M1", 4.0, 150), review("u3", "M1", 1.0, 50)],
    )
    write(root / f"meta_Movies_and_TV{ext}", ["{'asin': 'M1', 'title': 'Alien'}"])
    return root


def amazon_2018(root: Path, gz: bool) -> Path:
    ext = ".json.gz" if gz else ".json"
    write(
        root / f"Books_5{ext}",
        [review("u1", "B1", 5.0, 30), review("u2", "B1", 1.0, 10), review("u1", "B2", 3.0, 20)],
    )
    write(
        root / f"meta_Books{ext}",
        [
            json.dumps(
                {
                    "asin": "B1",
                    "title": "Dune",
                    "brand": "Ace",
                    "description": ["Sand", "worms."],
                    "category": ["Books", "Sci-Fi", "Books"],
                    "main_cat": "Books",
                }
            ),
            json.dumps({"asin": "B2", "title": "Emma &quot;E&quot;", "category": []}),
            json.dumps({"asin": "B2", "title": "Emma &quot;E&quot;", "category": []}),  # dup
        ],
    )
    write(root / f"Movies_and_TV{ext}", [review("u1", "M1", 4.0, 25)])
    write(root / f"meta_Movies_and_TV{ext}", [json.dumps({"asin": "M1", "title": "Alien"})])
    return root


@pytest.mark.parametrize("gz", [False, True])
def test_amazon_2014_python_literal_metadata(
    tmp_path: Path, gz: bool, caplog: pytest.LogCaptureFixture
) -> None:
    root = amazon_2014(tmp_path, gz)
    with caplog.at_level(logging.WARNING):
        ds = load_amazon(root, DataConfig(format="amazon"))
    assert ds.domains == ["Books", "Movies_and_TV"]
    assert titles(ds, "Books") == {
        "B1": "Dune & Sons",
        "B2": "Ender's Game",
        "B3": "Unreviewed",  # metadata without reviews is still an item
        "B9": "",  # reviewed but without metadata: created with an empty title
    }
    assert any("empty titles" in r.getMessage() for r in caplog.records)
    b1 = ds.items[ds.global_index("Books", "B1")]
    assert b1.categories == ("Books", "Sci-Fi", "Classics")
    assert b1.description == "Sand."
    assert b1.attributes["price"] == "9.99"
    assert ds.items[ds.global_index("Books", "B2")].brand == "Tor"
    assert domain_interactions(ds) == {"Books": 4, "Movies_and_TV": 2}
    assert sequence_ids(ds, "u1") == ["B2", "M1", "B1"]  # times 100, 150, 300
    assert ds.event_types("u1") == [EventType.RATING] * 3
    assert ds.overlapping_users() == ["u1"]
    assert_time_ordered(ds)


@pytest.mark.parametrize("gz", [False, True])
def test_amazon_2018_json_metadata(tmp_path: Path, gz: bool) -> None:
    root = amazon_2018(tmp_path, gz)
    cfg = DataConfig(format="amazon", domain_names=["books", "films"])
    ds = load_amazon(root, cfg)
    assert ds.domains == ["books", "films"]
    b1 = ds.items[ds.global_index("books", "B1")]
    assert (b1.title, b1.brand, b1.description) == ("Dune", "Ace", "Sand worms.")
    assert b1.categories == ("Books", "Sci-Fi")
    assert titles(ds, "books") == {"B1": "Dune", "B2": 'Emma "E"'}  # repeated B2 kept once
    assert domain_interactions(ds) == {"books": 3, "films": 1}
    assert sequence_ids(ds, "u1") == ["B2", "M1", "B1"]
    assert float(ds.seq_values[ds.seq_offsets[ds.user_index["u2"]]]) == 1.0


def test_amazon_min_rating_and_duplicate_reviews(tmp_path: Path) -> None:
    write(
        tmp_path / "Books.json",
        [review("u1", "B1", 5.0, 1), review("u1", "B1", 5.0, 1), review("u1", "B2", 1.0, 2)],
    )
    write(tmp_path / "meta_Books.json", [json.dumps({"asin": "B1", "title": "A"})])
    ds = load_amazon(tmp_path, DataConfig(format="amazon"))
    assert sequence_ids(ds, "u1") == ["B1", "B1", "B2"]  # duplicates are separate events
    ds = load_amazon(tmp_path, DataConfig(format="amazon", min_rating=3.0))
    assert sequence_ids(ds, "u1") == ["B1", "B1"]


@pytest.mark.parametrize("gz", [False, True])
def test_amazon_bad_json_review_line(tmp_path: Path, gz: bool) -> None:
    amazon_2018(tmp_path, gz)
    ext = ".json.gz" if gz else ".json"
    bad = write(tmp_path / f"Books_5{ext}", [review("u1", "B1", 5.0, 1), "{'reviewerID': 'u2'"])
    with pytest.raises(DataError) as err:
        load_amazon(tmp_path, DataConfig(format="amazon"))
    assert err.value.path == str(bad)
    assert err.value.line == 2
    assert "expected one JSON review object per line" in err.value.reason


def test_amazon_bad_metadata_line(tmp_path: Path) -> None:
    amazon_2014(tmp_path, gz=False)
    meta = tmp_path / "meta_Movies_and_TV.json"
    write(meta, ["{'asin': 'M1', 'title': 'Alien'}", "", "{'asin': 'M2', 'title': "])
    with pytest.raises(DataError) as err:
        load_amazon(tmp_path, DataConfig(format="amazon"))
    assert (err.value.path, err.value.line) == (str(meta), 3)
    assert "Python dict literal" in err.value.reason


def test_amazon_review_missing_field(tmp_path: Path) -> None:
    amazon_2018(tmp_path, gz=False)
    bad = write(tmp_path / "Movies_and_TV.json", [json.dumps({"reviewerID": "u1", "asin": "M1"})])
    with pytest.raises(DataError) as err:
        load_amazon(tmp_path, DataConfig(format="amazon"))
    assert (err.value.path, err.value.line) == (str(bad), 1)
    assert "'overall'" in err.value.reason


def test_amazon_empty_reviews_file(tmp_path: Path) -> None:
    amazon_2018(tmp_path, gz=True)
    empty = tmp_path / "Movies_and_TV.json.gz"
    empty.write_bytes(gzip.compress(b""))
    with pytest.raises(DataError) as err:
        load_amazon(tmp_path, DataConfig(format="amazon"))
    assert err.value.path == str(empty)
    assert "empty" in err.value.reason


def test_amazon_unpaired_and_unrecognised_files(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_amazon(tmp_path, DataConfig(format="amazon"))
    assert err.value.path == str(tmp_path)
    assert "reviews_<Cat>.json" in err.value.reason
    assert "meta_<Cat>.json" in err.value.reason

    meta = write(tmp_path / "meta_Books.json.gz", [json.dumps({"asin": "B1", "title": "A"})])
    with pytest.raises(DataError) as err:
        load_amazon(tmp_path, DataConfig(format="amazon"))
    assert err.value.path == str(meta)
    assert "without reviews" in err.value.reason

    meta.unlink()
    reviews = write(tmp_path / "reviews_Books_5.json", [review("u1", "B1", 5.0, 1)])
    with pytest.raises(DataError) as err:
        load_amazon(tmp_path, DataConfig(format="amazon"))
    assert err.value.path == str(reviews)
    assert "meta_Books.json" in err.value.reason


def test_amazon_domain_names_must_match_categories(tmp_path: Path) -> None:
    amazon_2018(tmp_path, gz=False)
    with pytest.raises(DataError, match="2 categor"):
        load_amazon(tmp_path, DataConfig(format="amazon", domain_names=["only"]))


# =========================================================================== recbole
INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"


def recbole_tree(root: Path, gz: bool) -> Path:
    inter = "books.inter.gz" if gz else "books.inter"
    write(
        root / "books" / inter,
        [INTER_HEADER, "u1\tb1\t5\t300", "u1\tb2\t3\t100", "u2\tb1\t4\t50", "u2\tb2\t1\t60"],
    )
    write(
        root / "books" / "books.item",
        [
            "item_id:token\tmovie_title:token_seq\tgenre:token_seq\tyear:token\tprice:float",
            "b1\tThe  Left Hand\tsci-fi classic sci-fi\t1969\t9.5",
            "b2\tEmma\tromance\t\t",
            "b3\tUnrated\t\t2001\t1",
        ],
    )
    write(root / "movies.inter", [INTER_HEADER, "u1\tm1\t4\t200", "u3\tm2\t2\t10"])
    return root


@pytest.mark.parametrize("gz", [False, True])
def test_recbole_atomic_files(tmp_path: Path, gz: bool) -> None:
    root = recbole_tree(tmp_path, gz)
    ds = load_recbole(root, DataConfig(format="recbole"))
    assert ds.domains == ["books", "movies"]  # sorted stems
    assert titles(ds, "books") == {"b1": "The Left Hand", "b2": "Emma", "b3": "Unrated"}
    assert titles(ds, "movies") == {"m1": "", "m2": ""}  # no movies.item
    b1 = ds.items[ds.global_index("books", "b1")]
    assert b1.categories == ("sci-fi", "classic")
    assert b1.attributes == {"year": "1969", "price": "9.5"}
    assert domain_interactions(ds) == {"books": 4, "movies": 2}
    assert sequence_ids(ds, "u1") == ["b2", "m1", "b1"]
    assert ds.event_types("u1") == [EventType.RATING] * 3
    assert_time_ordered(ds)


def test_recbole_rename_min_rating_and_no_timestamp(tmp_path: Path) -> None:
    recbole_tree(tmp_path, gz=False)
    ds = load_recbole(
        tmp_path, DataConfig(format="recbole", domain_names=["B", "M"], min_rating=3.0)
    )
    assert ds.domains == ["B", "M"]
    assert domain_interactions(ds) == {"B": 3, "M": 1}

    implicit = tmp_path / "implicit"
    write(implicit / "clicks.inter", ["user_id:token\titem_id:token", "u1\tz", "u1\ta", "u1\tm"])
    ds = load_recbole(implicit, DataConfig(format="recbole"))
    assert sequence_ids(ds, "u1") == ["z", "a", "m"]  # file order
    assert ds.event_types("u1") == [EventType.PURCHASE] * 3


def test_recbole_wrong_field_count(tmp_path: Path) -> None:
    recbole_tree(tmp_path, gz=False)
    bad = write(tmp_path / "movies.inter", [INTER_HEADER, "u1\tm1\t4\t200", "u3\tm2\t2"])
    with pytest.raises(DataError) as err:
        load_recbole(tmp_path, DataConfig(format="recbole"))
    assert (err.value.path, err.value.line) == (str(bad), 3)
    assert "expected 4 tab-separated fields" in err.value.reason
    assert "found 3" in err.value.reason


def test_recbole_non_numeric_float(tmp_path: Path) -> None:
    recbole_tree(tmp_path, gz=False)
    bad = write(tmp_path / "movies.inter", [INTER_HEADER, "u1\tm1\tfive\t200"])
    with pytest.raises(DataError) as err:
        load_recbole(tmp_path, DataConfig(format="recbole"))
    assert (err.value.path, err.value.line) == (str(bad), 2)
    assert "field 'rating' is 'five'; expected a finite number" in err.value.reason


def test_recbole_header_errors(tmp_path: Path) -> None:
    recbole_tree(tmp_path, gz=False)
    bad = write(tmp_path / "movies.inter", ["user_id:token\trating:float", "u1\t4"])
    with pytest.raises(DataError) as err:
        load_recbole(tmp_path, DataConfig(format="recbole"))
    assert (err.value.path, err.value.line) == (str(bad), 1)
    assert "item_id:token" in err.value.reason

    write(bad, ["user_id:token\titem_id:str", "u1\tm1"])
    with pytest.raises(DataError, match="token, token_seq, float, float_seq") as err:
        load_recbole(tmp_path, DataConfig(format="recbole"))
    assert err.value.line == 1


def test_recbole_empty_and_duplicate_items(tmp_path: Path) -> None:
    recbole_tree(tmp_path, gz=False)
    item_file = tmp_path / "books" / "books.item"
    item_file.write_bytes(b"")
    with pytest.raises(DataError) as err:
        load_recbole(tmp_path, DataConfig(format="recbole"))
    assert err.value.path == str(item_file)
    assert "empty" in err.value.reason

    write(item_file, ["item_id:token\ttitle:token_seq", "b1\tA", "b2\tB", "b1\tC"])
    with pytest.raises(DataError, match="first on line 2") as err:
        load_recbole(tmp_path, DataConfig(format="recbole"))
    assert err.value.line == 4


def test_recbole_no_inter_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"expected <domain>\.inter"):
        load_recbole(tmp_path, DataConfig(format="recbole"))


# =========================================================================== table
COLUMNS = TableColumns(event_type="event", value="rating", categories="genres", brand="brand")


def table_cfg(columns: TableColumns = COLUMNS, **kwargs: Any) -> DataConfig:
    return DataConfig(format="table", table=TableConfig(columns=columns, **kwargs))


def csv_tables(root: Path, gz: bool = False) -> Path:
    write(
        root / ("interactions.csv.gz" if gz else "interactions.csv"),
        [
            "user_id,item_id,domain,timestamp,event,rating",
            "u1,b1,books,2021-01-01T00:00:10Z,rating,5",
            "u1,m1,movies,5,VIEW,",
            "u2,b2,books,2021-01-01 00:00:00,purchase,",
            "u1,b2,books,1609459205,,",
        ],
    )
    write(
        root / "items.csv",
        [
            "item_id,domain,title,genres,brand",
            'b1,books,"Dune, Part 1",sci-fi|classic,Ace',
            'b2,books,"Emma',
            'a novel",romance,',
            "m1,movies,Alien,horror|sci-fi|,",
        ],
    )
    return root


@pytest.mark.parametrize("gz", [False, True])
def test_table_csv(tmp_path: Path, gz: bool) -> None:
    ds = load_table(csv_tables(tmp_path, gz), table_cfg())
    assert ds.domains == ["books", "movies"]
    assert titles(ds, "books") == {"b1": "Dune, Part 1", "b2": "Emma\na novel"}
    b1 = ds.items[ds.global_index("books", "b1")]
    assert (b1.categories, b1.brand) == (("sci-fi", "classic"), "Ace")
    assert ds.items[ds.global_index("movies", "m1")].categories == ("horror", "sci-fi")
    assert domain_interactions(ds) == {"books": 3, "movies": 1}
    assert sequence_ids(ds, "u1") == ["m1", "b2", "b1"]  # 5, 1609459205, 1609459210
    assert ds.event_types("u1") == [EventType.VIEW, EventType.PURCHASE, EventType.RATING]
    assert_time_ordered(ds)


def test_table_timestamps() -> None:
    assert parse_timestamp("2021-01-01T00:00:00Z") == 1609459200.0
    assert parse_timestamp("2021-01-01T01:00:00+01:00") == 1609459200.0
    assert parse_timestamp("12.5") == 12.5
    assert parse_timestamp(datetime(2021, 1, 1, tzinfo=timezone.utc)) == 1609459200.0
    assert parse_timestamp("yesterday") is None


@pytest.mark.parametrize("gz", [False, True])
def test_table_jsonl_file_path_without_items(tmp_path: Path, gz: bool) -> None:
    cols = TableColumns(domain=None, timestamp=None, order="pos", categories="genres")
    rows = [
        {"user_id": "u1", "item_id": 7, "pos": 2},
        {"user_id": "u1", "item_id": "x", "pos": 0},
        {"user_id": "u2", "item_id": "x", "pos": 1.0},
    ]
    inter = write(
        tmp_path / ("clicks.jsonl.gz" if gz else "clicks.jsonl"), [json.dumps(r) for r in rows]
    )
    ds = load_table(inter, table_cfg(cols, default_domain="shop", default_event_type="click"))
    assert ds.domains == ["shop"]
    assert titles(ds, "shop") == {"7": "", "x": ""}
    assert sequence_ids(ds, "u1") == ["x", "7"]
    assert ds.event_types("u1") == [EventType.CLICK] * 2
    assert ds.name == "clicks"

    items = [
        {"item_id": "x", "title": "X", "genres": ["a", "b", "a"]},
        {"item_id": 7, "title": "S"},
    ]
    write(tmp_path / "items.jsonl", [json.dumps(r) for r in items])
    with pytest.raises(DataError) as err:  # item table found beside, row 2 lacks "genres"
        load_table(inter, table_cfg(cols))
    assert (err.value.path, err.value.line) == (str(tmp_path / "items.jsonl"), 2)
    assert "expected a key 'genres'" in err.value.reason


def test_table_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    utc = timezone.utc
    inter = pa.table(
        {
            "user_id": ["u1", "u1", "u2"],
            "item_id": ["a", "b", "a"],
            "domain": ["d1", "d2", "d1"],
            "timestamp": [
                datetime(2021, 1, 2, tzinfo=utc),
                datetime(2021, 1, 1, tzinfo=utc),
                datetime(2020, 1, 1, tzinfo=utc),
            ],
        }
    )
    items = pa.table(
        {
            "item_id": ["a", "b"],
            "domain": ["d1", "d2"],
            "title": ["Apple", None],
            "genres": [["fruit", "red"], None],
        }
    )
    pq.write_table(inter, tmp_path / "interactions.parquet")
    pq.write_table(items, tmp_path / "items.parquet")
    ds = load_table(tmp_path, table_cfg(TableColumns(categories="genres")))
    assert titles(ds, "d1") == {"a": "Apple"}
    assert titles(ds, "d2") == {"b": ""}
    assert ds.items[ds.global_index("d1", "a")].categories == ("fruit", "red")
    assert sequence_ids(ds, "u1") == ["b", "a"]
    assert domain_interactions(ds) == {"d1": 2, "d2": 1}

    pq.write_table(inter.drop_columns(["domain"]), tmp_path / "interactions.parquet")
    with pytest.raises(DataError) as err:
        load_table(tmp_path, table_cfg(TableColumns(categories="genres")))
    assert err.value.path == str(tmp_path / "interactions.parquet")
    assert "expected a column 'domain'" in err.value.reason


def test_table_csv_missing_column(tmp_path: Path) -> None:
    csv_tables(tmp_path)
    bad = write(
        tmp_path / "interactions.csv", ["user_id,item_id,domain,event,rating", "u,b1,books,,"]
    )
    with pytest.raises(DataError) as err:
        load_table(tmp_path, table_cfg())
    assert (err.value.path, err.value.line) == (str(bad), 1)
    assert "expected a column 'timestamp'" in err.value.reason
    assert "'user_id', 'item_id', 'domain', 'event', 'rating'" in err.value.reason


def test_table_csv_not_utf8(tmp_path: Path) -> None:
    csv_tables(tmp_path)
    bad = tmp_path / "interactions.csv"
    bad.write_bytes(
        b"user_id,item_id,domain,timestamp,event,rating\nu1,b1,books,1,,\nu\xe9,b2,books,2,,\n"
    )
    with pytest.raises(DataError) as err:
        load_table(tmp_path, table_cfg())
    assert (err.value.path, err.value.line) == (str(bad), 3)
    assert "expected utf-8" in err.value.reason


def test_table_csv_line_numbers_after_multiline_field(tmp_path: Path) -> None:
    csv_tables(tmp_path)
    items = tmp_path / "items.csv"
    lines = [*items.read_text().splitlines(), "m2,movies,Heat,crime"]  # 4 fields, header has 5
    write(items, lines)
    with pytest.raises(DataError) as err:
        load_table(tmp_path, table_cfg())
    assert (err.value.path, err.value.line) == (str(items), 6)
    assert "expected 5 comma-separated fields" in err.value.reason


def test_table_empty_file(tmp_path: Path) -> None:
    csv_tables(tmp_path)
    empty = tmp_path / "items.csv"
    empty.write_bytes(b"")
    with pytest.raises(DataError) as err:
        load_table(tmp_path, table_cfg())
    assert err.value.path == str(empty)
    assert "file is empty; expected a CSV table" in err.value.reason


def test_table_unknown_event_type(tmp_path: Path) -> None:
    csv_tables(tmp_path)
    bad = tmp_path / "interactions.csv"
    lines = bad.read_text().splitlines()
    lines[3] = "u2,b2,books,7,like,"
    write(bad, lines)
    with pytest.raises(DataError) as err:
        load_table(tmp_path, table_cfg())
    assert (err.value.path, err.value.line) == (str(bad), 4)
    assert "'like'; expected one of view, click, purchase, rating" in err.value.reason


def test_table_jsonl_bad_line(tmp_path: Path) -> None:
    cols = TableColumns(domain=None, timestamp=None)
    write(tmp_path / "items.jsonl", [json.dumps({"item_id": "a", "title": "A"})])
    bad = write(
        tmp_path / "interactions.jsonl",
        [json.dumps({"user_id": "u", "item_id": "a"}), "", '{"user_id": "u", "item_id": }'],
    )
    with pytest.raises(DataError) as err:
        load_table(tmp_path, table_cfg(cols))
    assert (err.value.path, err.value.line) == (str(bad), 3)
    assert "expected one JSON object per line" in err.value.reason


def test_table_bad_timestamp_unknown_item_and_ambiguous_table(tmp_path: Path) -> None:
    csv_tables(tmp_path)
    inter = tmp_path / "interactions.csv"
    lines = inter.read_text().splitlines()
    write(inter, [*lines[:2], "u1,b1,books,last tuesday,,"])
    with pytest.raises(DataError) as err:
        load_table(tmp_path, table_cfg())
    assert (err.value.path, err.value.line) == (str(inter), 3)
    assert "expected unix seconds or an ISO-8601" in err.value.reason

    write(inter, [lines[0], "u1,zz,books,1,,"])
    with pytest.raises(DataError, match="no item record"):
        load_table(tmp_path, table_cfg())

    write(tmp_path / "items.jsonl", [json.dumps({"item_id": "a", "title": "A"})])
    with pytest.raises(DataError, match=r"items\.csv, items\.jsonl"):
        load_table(tmp_path, table_cfg())


# =========================================================================== registry
def test_register_loader_rejects_duplicate_name() -> None:
    before = dict(_LOADERS)

    def impostor(path: Path | None, cfg: DataConfig) -> CrossDomainDataset:
        raise AssertionError("never called")

    with pytest.raises(CrossRecError, match="already registered"):
        register_loader("amazon")(impostor)
    assert before == _LOADERS
    assert _LOADERS["amazon"] is load_amazon


def test_table_json_array(tmp_path: Path) -> None:
    cols = TableColumns(domain=None)
    rows: list[dict[str, Any]] = [
        {"user_id": "u1", "item_id": "a", "timestamp": 2},
        {"user_id": "u1", "item_id": "b"},
    ]
    items = [{"item_id": "a", "title": "A"}, {"item_id": "b", "title": "B"}]
    write(tmp_path / "items.json", ["[", json.dumps(items[0]) + ",", json.dumps(items[1]), "]"])
    write(tmp_path / "items.csv", ["item_id,title", "c,C"])  # ignored: the name has an extension
    inter = write(tmp_path / "interactions.json", [json.dumps(rows)])
    with pytest.raises(DataError) as err:  # record 2 lacks "timestamp"
        load_table(tmp_path, table_cfg(cols, items="items.json"))
    assert (err.value.path, err.value.line) == (str(inter), 2)
    assert "expected a key 'timestamp'" in err.value.reason

    rows[1]["timestamp"] = 1
    write(inter, [json.dumps(rows)])
    ds = load_table(tmp_path, table_cfg(cols, items="items.json"))
    assert titles(ds, "default") == {"a": "A", "b": "B"}
    assert sequence_ids(ds, "u1") == ["b", "a"]
