from __future__ import annotations

import numpy as np

from crossrec.config import SyntheticConfig
from crossrec.data.synthetic import generate_world


def test_same_seed_same_world_and_other_seed_differs() -> None:
    cfg = SyntheticConfig(seed=7, num_users=120)
    a, b = generate_world(cfg), generate_world(cfg)
    assert [i.title for i in a.items] == [i.title for i in b.items]
    assert np.array_equal(a.seq_items, b.seq_items)
    c = generate_world(SyntheticConfig(seed=8, num_users=120))
    assert not np.array_equal(a.seq_items[:50], c.seq_items[:50])


def test_sizes_and_sparse_target() -> None:
    cfg = SyntheticConfig(seed=1, num_users=300, items_per_domain=[100, 80])
    ds = generate_world(cfg)
    stats = ds.stats()["domains"]
    assert stats["books"]["items"] == 100
    assert stats["films"]["items"] == 80
    assert stats["books"]["interactions"] > 2.5 * stats["films"]["interactions"]
    assert len(ds.overlapping_users()) > 200


def test_domains_use_different_vocabularies() -> None:
    ds = generate_world(SyntheticConfig(seed=2, num_users=50))
    words = {d: set() for d in ds.domains}
    for item in ds.items:
        words[item.domain].update(w.strip(":.()") for w in item.title.split())
    shared = (words["books"] & words["films"]) - {
        "The",
        "of",
        "the",
        "and",
        "A",
        "in",
        "Part",
        "Vol",
    }
    assert not {w for w in shared if not w.isdigit()}


def test_users_prefer_a_few_topics_across_domains() -> None:
    ds = generate_world(SyntheticConfig(seed=4, num_users=200))
    # The category of the commonest topic in a user's books is frequent among their films too.
    films = ds.domain_index["films"]
    hits = total = 0
    genre_pairs = {}
    from crossrec.data.synthetic import TOPICS

    for _, book_genre, film_genre in ((t[0], t[3][0], t[3][1]) for t in TOPICS):
        genre_pairs[book_genre] = film_genre
    for _user, seq in ds.iter_sequences():
        books = [ds.items[g].categories[0] for g in seq if ds.item_domain[g] != films]
        film_genres = [ds.items[g].categories[0] for g in seq if ds.item_domain[g] == films]
        if not books or not film_genres:
            continue
        top = max(set(books), key=books.count)
        hits += film_genres.count(genre_pairs[top])
        total += len(film_genres)
    assert hits / total > 0.3  # 16 topics: chance is about 0.06
