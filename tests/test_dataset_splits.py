from __future__ import annotations

import math

import numpy as np
import pytest

from crossrec.config import EvalConfig, SyntheticConfig, load_config
from crossrec.data.dataset import CrossDomainDataset, PredefinedSplit
from crossrec.data.schema import Interaction, Item
from crossrec.data.splits import make_split
from crossrec.data.synthetic import generate_world
from crossrec.errors import ConfigError, DataError, EvaluationError


def _items() -> list[Item]:
    return [Item("books", f"b{i}", f"book {i}") for i in range(6)] + [
        Item("films", f"f{i}", f"film {i}") for i in range(6)
    ]


def _inter(user: str, domain: str, item: str, t: float) -> Interaction:
    return Interaction(user_id=user, domain=domain, item_id=item, timestamp=t)


def test_sequences_are_time_ordered_and_mixed() -> None:
    rows = [
        _inter("u", "films", "f1", 30),
        _inter("u", "books", "b0", 10),
        _inter("u", "films", "f0", 20),
        _inter("v", "books", "b1", 5),
    ]
    ds = CrossDomainDataset.from_records(_items(), rows)
    seq = ds.user_sequence("u")
    assert [ds.items[g].item_id for g in seq] == ["b0", "f0", "f1"]
    assert ds.overlapping_users() == ["u"]
    assert ds.domains == ["books", "films"]
    assert list(ds.domain_items("films")) == list(range(6, 12))
    stats = ds.stats()
    assert stats["domains"]["films"]["users"] == 1
    assert stats["domains"]["books"]["interactions"] == 2
    assert stats["overlapping_users"] == 1


def test_unknown_item_is_an_error_or_created() -> None:
    rows = [_inter("u", "films", "nope", 1.0)]
    with pytest.raises(DataError, match="no item record"):
        CrossDomainDataset.from_records(_items(), rows, source="x.csv")
    ds = CrossDomainDataset.from_records(_items(), rows, missing_items="create")
    assert ds.items[ds.global_index("films", "nope")].title == ""


def test_duplicate_item_and_empty_interactions() -> None:
    with pytest.raises(DataError, match="duplicate item"):
        CrossDomainDataset.from_records(_items() + [Item("books", "b0", "again")], [])
    with pytest.raises(DataError, match="no interactions"):
        CrossDomainDataset.from_records(_items(), [])


def _loo_dataset() -> CrossDomainDataset:
    rows = []
    for u in range(10):
        user = f"u{u}"
        # books at t=0,2,4,... films at t=1,3,5 -> mixed sequence of 6 books and 3 films
        for i in range(6):
            rows.append(_inter(user, "books", f"b{(u + i) % 6}", 2.0 * i))
        for j in range(3):
            rows.append(_inter(user, "films", f"f{(u + j) % 6}", 2.0 * j + 1))
    return CrossDomainDataset.from_records(_items(), rows)


def test_leave_one_out_targets_and_contexts() -> None:
    ds = _loo_dataset()
    cfg = EvalConfig(cold_user_fraction=0.0, cold_item_fraction=0.0)
    split = make_split(ds, cfg, ["films"])
    assert len(split.test) == len(split.valid) == 10
    for case in split.test:
        seq = ds.user_sequence(case.user)
        pos = int(np.flatnonzero(seq == case.target)[0])
        assert ds.items[case.target].domain == "films"
        assert np.array_equal(case.context, seq[:pos])  # everything before, every domain
        films = [g for g in seq if ds.items[g].domain == "films"]
        assert case.target == films[-1]
    for case in split.valid:
        films = [g for g in ds.user_sequence(case.user) if ds.items[g].domain == "films"]
        assert case.target == films[-2]
    # Training never holds a held-out target nor anything after the first held-out item.
    for u, seq in enumerate(split.train_sequences):
        user = ds.user_ids[u]
        valid_target = next(c.target for c in split.valid if c.user == user)
        full = ds.user_sequence(u)
        cut = int(np.flatnonzero(full == valid_target)[0])
        assert np.array_equal(seq, full[:cut])


def test_cold_users_have_no_target_history_anywhere() -> None:
    ds = _loo_dataset()
    split = make_split(ds, EvalConfig(cold_user_fraction=0.3, cold_item_fraction=0.0), ["films"])
    cold = [c for c in split.test if "cold-users" in c.slices]
    assert len(cold) == 3
    films = ds.domain_index["films"]
    for case in cold:
        assert not np.any(ds.item_domain[case.context] == films)
        train = split.train_sequences[ds.user_index[case.user]]
        assert not np.any(ds.item_domain[train] == films)
        assert train.size > 0  # their source history is kept


def test_cold_items_never_in_training() -> None:
    ds = generate_world(SyntheticConfig(seed=1, num_users=200))
    split = make_split(ds, EvalConfig(cold_item_fraction=0.1), ["films"])
    assert len(split.cold_items) == 40
    counts = split.train_item_counts()
    assert all(counts[i] == 0 for i in split.cold_items)
    tagged = [c for c in split.test if "cold-items" in c.slices]
    assert tagged
    assert all(counts[c.target] == 0 for c in tagged)


def test_split_is_deterministic_by_seed() -> None:
    ds = generate_world(SyntheticConfig(seed=1, num_users=200))
    a = make_split(ds, EvalConfig(seed=5), ["films"])
    b = make_split(ds, EvalConfig(seed=5), ["films"])
    assert [(c.user, c.target, c.slices) for c in a.test] == [
        (c.user, c.target, c.slices) for c in b.test
    ]


def test_predefined_split_uses_last_item_domain() -> None:
    rows = [
        _inter("train/1", "books", "b0", 0),
        _inter("train/1", "films", "f0", 1),
        _inter("valid/1", "books", "b1", 0),
        _inter("valid/1", "films", "f1", 1),
        _inter("test/1", "films", "f2", 0),
        _inter("test/1", "books", "b2", 1),
    ]
    spec = PredefinedSplit("release", valid_users=("valid/1",), test_users=("test/1",))
    ds = CrossDomainDataset.from_records(_items(), rows, predefined_split=spec)
    split = make_split(ds, EvalConfig())
    assert [(c.user, c.domain) for c in split.test] == [("test/1", "books")]
    assert [(c.user, c.domain) for c in split.valid] == [("valid/1", "films")]
    # Held-out users contribute nothing to training.
    assert split.train_sequences[ds.user_index["test/1"]].size == 0
    assert "cold-users" in split.test[0].slices  # no book before the target


def test_unknown_target_domain_and_no_eligible_users() -> None:
    ds = _loo_dataset()
    with pytest.raises(EvaluationError, match="music"):
        make_split(ds, EvalConfig(), ["music"])
    with pytest.raises(EvaluationError, match="min_target_interactions"):
        make_split(ds, EvalConfig(min_target_interactions=4), ["films"])


def _released_dataset(items_per_domain: int = 30) -> CrossDomainDataset:
    """A release with its own split: 40 training users, 10 valid and 20 test users."""
    items = [Item("books", f"b{i}", f"book {i}") for i in range(items_per_domain)] + [
        Item("films", f"f{i}", f"film {i}") for i in range(items_per_domain)
    ]
    rng = np.random.default_rng(0)
    rows = []
    users = [f"train/{u}" for u in range(40)] + [f"valid/{u}" for u in range(10)]
    users += [f"test/{u}" for u in range(20)]
    for n, user in enumerate(users):
        for t in range(int(rng.integers(3, 9))):
            domain = "books" if (n + t) % 2 else "films"
            item = f"{domain[0]}{int(rng.integers(items_per_domain))}"
            rows.append(_inter(user, domain, item, float(t)))
    spec = PredefinedSplit(
        "release",
        valid_users=tuple(u for u in users if u.startswith("valid/")),
        test_users=tuple(u for u in users if u.startswith("test/")),
    )
    return CrossDomainDataset.from_records(items, rows, predefined_split=spec)


def _check_cold_item_split(ds: CrossDomainDataset, split_cfg: EvalConfig) -> None:
    split = make_split(ds, split_cfg, ["books", "films"])
    cold = split.cold_items
    per_domain = split.summary()["cold_items_per_domain"]
    for name in ("books", "films"):
        pool = set(ds.domain_items(name))
        chosen = cold & pool
        assert len(chosen) >= split_cfg.cold_item_split_fraction * len(pool)
        assert per_domain == split.cold_items_per_domain()
        assert split.cold_items_per_domain()[name] == len(chosen)
    # No training sequence holds a cold item; sequences stay one per user.
    assert len(split.train_sequences) == ds.num_users
    for seq in split.train_sequences:
        assert not np.isin(seq, list(cold)).any()
    # Every case whose target is cold carries the tag; only those (no target is cold otherwise).
    counts = split.train_item_counts()
    on_cold = [c for c in split.test + split.valid if c.target in cold]
    assert on_cold
    assert all("cold-items" in c.slices for c in on_cold)
    assert all(("cold-items" in c.slices) == (counts[c.target] == 0) for c in split.test)


def test_cold_item_split_predefined() -> None:
    ds = _released_dataset()
    published = make_split(ds, EvalConfig(), ["books", "films"])
    assert published.cold_items == frozenset()  # off by default: the split as published
    cfg = EvalConfig(cold_item_split=True, cold_item_split_fraction=0.2)
    _check_cold_item_split(ds, cfg)
    split = make_split(ds, cfg, ["books", "films"])
    assert split.summary()["cold_items_per_domain"] == {"books": 6, "films": 6}
    # Same cases, same contexts (cold items kept in them); only training shrank.
    assert [(c.user, c.target) for c in split.test] == [(c.user, c.target) for c in published.test]
    for a, b in zip(split.test, published.test, strict=True):
        assert np.array_equal(a.context, b.context)
    assert split.train_item_counts().sum() < published.train_item_counts().sum()


def test_cold_item_split_draws_eval_targets_first() -> None:
    ds = _released_dataset(items_per_domain=60)
    base = make_split(ds, EvalConfig(), ["books", "films"])
    targets = {c.target for c in base.valid + base.test}
    every = EvalConfig(
        cold_item_split=True, cold_item_split_fraction=0.5, cold_item_split_eval_share=1.0
    )
    assert targets <= make_split(ds, every, ["books", "films"]).cold_items
    none = EvalConfig(cold_item_split=True, cold_item_split_eval_share=0.0)
    split = make_split(ds, none, ["books", "films"])
    assert not targets & split.cold_items  # share 0: padding never picks an eval target
    assert len(split.cold_items) == 2 * math.ceil(0.1 * 60)


def test_cold_item_split_leave_one_out() -> None:
    ds = generate_world(SyntheticConfig(seed=1, num_users=200))
    cfg = EvalConfig(cold_item_split=True, cold_item_fraction=0.3)
    _check_cold_item_split(ds, cfg)
    split = make_split(ds, cfg, ["books", "films"])
    # The legacy uniform cold_item_fraction is replaced, cold users are drawn as without it.
    legacy = make_split(ds, EvalConfig(cold_item_fraction=0.3), ["books", "films"])
    assert len(split.cold_items) < len(legacy.cold_items)
    assert [c.slices >= {"cold-users"} for c in split.test] == [
        c.slices >= {"cold-users"} for c in legacy.test
    ]
    # More test cases land on cold items than under a uniform draw of the same size.
    uniform = make_split(ds, EvalConfig(cold_item_fraction=0.1), ["books", "films"])
    n_cold = sum("cold-items" in c.slices for c in split.test)
    assert n_cold > sum("cold-items" in c.slices for c in uniform.test)


def test_cold_item_split_is_seeded() -> None:
    ds = _released_dataset()
    cfg = EvalConfig(cold_item_split=True, cold_item_split_fraction=0.5, seed=3)
    a = make_split(ds, cfg, ["books", "films"])
    b = make_split(ds, cfg, ["books", "films"])
    assert a.cold_items == b.cold_items
    assert [c.slices for c in a.test] == [c.slices for c in b.test]
    other = make_split(ds, cfg.model_copy(update={"seed": 4}), ["books", "films"])
    assert other.cold_items != a.cold_items


def test_cold_item_split_empties_sequences_and_keeps_contexts() -> None:
    rows = [
        _inter("train/1", "films", "f0", 0),
        _inter("train/2", "books", "b2", 0),
        _inter("train/2", "films", "f1", 1),
        _inter("valid/1", "books", "b1", 0),
        _inter("valid/1", "films", "f0", 1),
        _inter("test/1", "films", "f0", 0),
        _inter("test/1", "films", "f0", 1),
    ]
    spec = PredefinedSplit("release", valid_users=("valid/1",), test_users=("test/1",))
    ds = CrossDomainDataset.from_records(_items(), rows, predefined_split=spec)
    cfg = EvalConfig(cold_item_split=True, cold_item_split_eval_share=1.0)
    split = make_split(ds, cfg, ["films"])
    assert split.cold_items == {ds.global_index("films", "f0")}
    # train/1 only had the cold film: its entry stays, empty (one entry per user).
    assert len(split.train_sequences) == ds.num_users
    assert split.train_sequences[ds.user_index["train/1"]].size == 0
    assert split.train_sequences[ds.user_index["train/2"]].size == 2
    (case,) = split.test
    assert "cold-items" in case.slices
    assert list(case.context) == [ds.global_index("films", "f0")]  # contexts keep cold items


@pytest.mark.parametrize(
    ("override", "field", "reason"),
    [
        ("eval.cold_item_split_fraction=0", "eval.cold_item_split_fraction", "greater than 0"),
        (
            "eval.cold_item_split_fraction=0.9",
            "eval.cold_item_split_fraction",
            "less than or equal to 0.5",
        ),
        (
            "eval.cold_item_split_eval_share=1.5",
            "eval.cold_item_split_eval_share",
            "less than or equal to 1",
        ),
        (
            "eval.cold_item_split_eval_share=-0.1",
            "eval.cold_item_split_eval_share",
            "greater than or equal to 0",
        ),
        ("eval.cold_item_split=sometimes", "eval.cold_item_split", "boolean"),
    ],
)
def test_cold_item_split_bad_values(override: str, field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert info.value.field == field
    assert reason in info.value.reason


def test_cold_item_split_domain_too_small() -> None:
    ds = _loo_dataset()  # 6 films: 0.5 of them rounds up to 3, fine; one film cannot
    tiny = CrossDomainDataset.from_records(
        [Item("books", "b0", "book"), Item("books", "b1", "book"), Item("films", "f0", "film")],
        [
            _inter("u", "books", "b0", 0),
            _inter("u", "films", "f0", 1),
            _inter("u", "books", "b1", 2),
            _inter("u", "films", "f0", 3),
            _inter("u", "films", "f0", 4),
        ],
    )
    assert make_split(ds, EvalConfig(cold_item_split=True, cold_item_split_fraction=0.5), ["films"])
    with pytest.raises(EvaluationError, match="eval.cold_item_split_fraction"):
        make_split(tiny, EvalConfig(cold_item_split=True), ["films"])
