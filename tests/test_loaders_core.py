"""LLMCDSR and MovieLens loaders on small files written here (never the real releases)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from crossrec.config import DataConfig
from crossrec.data.loaders import available_formats, load_dataset
from crossrec.data.loaders.llmcdsr import load_plain_pickle
from crossrec.errors import DataError, UnknownFormatError

from .conftest import write


def make_llmcdsr(root: Path) -> Path:
    a = {"A0": 0, "A1": 1, "A2": 2}
    b = {"B0": 0, "B1": 1}
    root.mkdir(parents=True, exist_ok=True)
    (root / "item_set_A.pkl").write_bytes(pickle.dumps(a, protocol=4))
    (root / "item_set_B.pkl").write_bytes(pickle.dumps(b, protocol=4))
    titles_a = {"A0": "Tea &amp; Honey", "A1": "Caf&eacute; Beans", "A2": "Rice"}
    titles_b = {"B0": "Pan", "B1": "Knife &quot;Pro&quot;"}
    (root / "text_A.pkl").write_bytes(pickle.dumps(titles_a, protocol=4))
    (root / "text_B.pkl").write_bytes(pickle.dumps(titles_b, protocol=4))
    write(root / "num.txt", "3\n2\n")
    write(root / "train_A.txt", "1\t0,1\n2\t1,2,0\n")
    write(root / "train_B.txt", "1\t3,4\n")
    write(root / "train_overlap.txt", "1\t0,3,1\n")
    write(root / "valid.txt", "1\t2,4,1\n")
    write(root / "test.txt", "1\t1,3\n2\t4,0,2,3\n")
    return root


def test_llmcdsr_counts_titles_and_split(tmp_path: Path) -> None:
    root = make_llmcdsr(tmp_path / "rel")
    ds = load_dataset(DataConfig(format="llmcdsr", domain_names=["food", "kitchen"]), root)
    assert ds.domains == ["food", "kitchen"]
    assert ds.num_domain_items("food") == 3
    assert ds.num_domain_items("kitchen") == 2
    assert ds.items[0].title == "Tea & Honey"
    assert ds.items[1].title == "Café Beans"
    assert ds.items[4].title == 'Knife "Pro"'
    stats = ds.stats()
    assert stats["users"] == 7  # user numbers restart per file
    assert stats["overlapping_users"] == 4
    assert [ds.items[g].item_id for g in ds.user_sequence("test/2")] == ["B1", "A0", "A2", "B0"]
    assert ds.predefined_split is not None
    assert ds.predefined_split.test_users == ("test/1", "test/2")


def test_llmcdsr_default_domain_names(tmp_path: Path) -> None:
    ds = load_dataset(DataConfig(format="llmcdsr"), make_llmcdsr(tmp_path / "rel"))
    assert ds.domains == ["A", "B"]


class _Evil:
    # eval, not print: importing Ray (tqdm_ray) replaces builtins.print, which would change
    # the global's name in the pickle.
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (eval, ("print('pwned')",))


def test_restricted_unpickler_refuses_globals(tmp_path: Path) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"x": _Evil()}))
    with pytest.raises(DataError, match="refusing to load global builtins.eval"):
        load_plain_pickle(path)


def test_llmcdsr_tampered_title_pickle_is_refused(tmp_path: Path) -> None:
    root = make_llmcdsr(tmp_path / "rel")
    (root / "text_B.pkl").write_bytes(pickle.dumps({"B0": _Evil(), "B1": "x"}))
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(format="llmcdsr"), root)
    assert info.value.path.endswith("text_B.pkl")


@pytest.mark.parametrize(
    ("content", "line", "expected"),
    [
        ("1\t0,1\n2\t0,x\n", 2, "expected an integer item id"),
        ("1\t0,1\n2 0,1\n", 2, "expected '<user>"),
        ("1\t0,1\n\n3\t0,99\n", 3, "outside 0..4"),
    ],
)
def test_llmcdsr_malformed_lines(tmp_path: Path, content: str, line: int, expected: str) -> None:
    root = make_llmcdsr(tmp_path / "rel")
    write(root / "train_A.txt", content)
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(format="llmcdsr"), root)
    assert info.value.path == str(root / "train_A.txt")
    assert info.value.line == line
    assert expected in info.value.reason


def test_llmcdsr_empty_and_missing_files(tmp_path: Path) -> None:
    root = make_llmcdsr(tmp_path / "rel")
    write(root / "valid.txt", "")
    with pytest.raises(DataError, match="file is empty") as info:
        load_dataset(DataConfig(format="llmcdsr"), root)
    assert info.value.path == str(root / "valid.txt")
    (root / "test.txt").unlink()
    write(root / "valid.txt", "1\t0,1\n")
    with pytest.raises(DataError, match="not found"):
        load_dataset(DataConfig(format="llmcdsr"), root)


def make_ml100k(root: Path) -> Path:
    flags = ["0"] * 19
    drama = flags.copy()
    drama[8] = "1"
    comedy = flags.copy()
    comedy[5] = "1"
    lines = [
        "1|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(comedy),
        "2|Misérables, Les (1995)|01-Jan-1995||http://x|" + "|".join(drama),
    ]
    write(root / "u.item", "\n".join(lines) + "\n", encoding="latin-1")
    write(root / "u.data", "1\t2\t5\t900\n1\t1\t3\t800\n2\t1\t4\t850\n")
    return root


def test_movielens_100k_latin1_and_order(tmp_path: Path) -> None:
    ds = load_dataset(DataConfig(format="movielens"), make_ml100k(tmp_path / "ml"))
    assert ds.domains == ["movies"]
    assert ds.items[1].title == "Misérables, Les (1995)"
    assert ds.items[1].categories == ("Drama",)
    assert [ds.items[g].item_id for g in ds.user_sequence("1")] == ["1", "2"]
    assert ds.stats()["interactions"] == 3


def test_movielens_min_rating(tmp_path: Path) -> None:
    cfg = DataConfig(format="movielens", min_rating=4)
    ds = load_dataset(cfg, make_ml100k(tmp_path / "ml"))
    assert ds.num_interactions == 2


def test_movielens_1m_and_latest(tmp_path: Path) -> None:
    m1 = tmp_path / "ml-1m"
    write(m1 / "movies.dat", "1::Toy Story (1995)::Animation|Comedy\n", encoding="latin-1")
    write(m1 / "ratings.dat", "7::1::5::978300760\n")
    ds = load_dataset(DataConfig(format="movielens"), m1)
    assert ds.items[0].categories == ("Animation", "Comedy")
    latest = tmp_path / "ml-latest"
    write(latest / "movies.csv", 'movieId,title,genres\n1,"Heat, The (1995)",Action\n')
    write(latest / "ratings.csv", "userId,movieId,rating,timestamp\n3,1,4.5,964982703\n")
    ds = load_dataset(DataConfig(format="movielens"), latest)
    assert ds.items[0].title == "Heat, The (1995)"


def test_movielens_bad_inputs(tmp_path: Path) -> None:
    root = make_ml100k(tmp_path / "ml")
    write(root / "u.data", "1\t2\t5\t900\n1\t1\t3\n")
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(format="movielens"), root)
    assert (info.value.path, info.value.line) == (str(root / "u.data"), 2)
    assert "expected 4 fields" in info.value.reason
    (root / "u.data").write_bytes(b"1\t2\t5\t900\n1\t\xff1\t3\t800\n")
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(format="movielens"), root)
    assert info.value.line == 2
    assert "not valid utf-8" in info.value.reason
    with pytest.raises(DataError, match="not a MovieLens folder"):
        load_dataset(DataConfig(format="movielens"), tmp_path)


def test_unknown_format_lists_known() -> None:
    from crossrec.data.loaders import get_loader

    with pytest.raises(UnknownFormatError) as info:
        get_loader("parquetz")
    assert "llmcdsr" in str(info.value)
    assert set(available_formats()) == {
        "amazon",
        "llmcdsr",
        "movielens",
        "recbole",
        "synthetic",
        "table",
    }
