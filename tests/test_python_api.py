"""The public Python API: lazy exports, `CrossRecModel.recommend`, the model card and the
README's Python quickstart, run as it stands."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import crossrec
from crossrec.errors import CrossRecError
from crossrec.models.crossrec_model import CrossRecModel

README = Path(__file__).resolve().parents[1] / "README.md"


def _quickstart_code() -> str:
    text = README.read_text(encoding="utf-8")
    block = re.search(
        r"<!-- python-quickstart:start -->\s*```python\n(.*?)```\s*<!-- python-quickstart:end -->",
        text,
        re.S,
    )
    assert block is not None, "README has no python-quickstart block"
    return block.group(1)


def test_readme_python_quickstart_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        # The README's own block, run as a user would paste it.
        exec(compile(_quickstart_code(), "README.md:python-quickstart", "exec"), {})  # noqa: S102
    lines = out.getvalue().splitlines()
    assert "films" in lines[0]
    scored = [ln for ln in lines[1:] if re.match(r"^\s*-?\d+\.\d{3}\s+f\d+\s+\S", ln)]
    assert len(scored) == 5
    assert len(lines) == 1 + 5 + 3
    card = (tmp_path / "runs/quickstart/films/README.md").read_text(encoding="utf-8")
    assert card.startswith("# crossrec model: films")
    for heading in ("## Data", "## Metrics", "## Config", "## Intended use", "## Limits"):
        assert heading in card
    assert re.search(r"\| test_full_ndcg@10 \| 0\.\d{4} \|", card)


def test_public_names_resolve_lazily() -> None:
    code = (
        "import sys, crossrec; assert 'torch' not in sys.modules; "
        "print(sorted(n for n in crossrec.__all__ if not n.startswith('__'))); "
        "crossrec.load_config; print('pydantic' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names, loaded = out.stdout.strip().splitlines()
    for name in ("CrossRecModel", "train", "load_dataset", "load_config"):
        assert repr(name) in names
    assert loaded == "True False"  # the config needs pydantic, not torch
    assert set(crossrec.__all__) == {*crossrec._LAZY, "CrossRecError", "__version__"}
    assert crossrec.CrossRecModel is CrossRecModel
    assert callable(crossrec.train)
    assert callable(crossrec.load_dataset)
    with pytest.raises(AttributeError, match="no attribute 'CrossRecModle'"):
        crossrec.CrossRecModle  # noqa: B018


@pytest.fixture(scope="module")
def films_model(trained_version: Path) -> CrossRecModel:
    return CrossRecModel.from_pretrained(trained_version / "films")


def test_recommend_matches_the_ranked_scores_and_skips_seen_items(
    films_model: CrossRecModel,
) -> None:
    model = films_model
    books = [key for key in model.item_keys if key[0] == "books"][:4]
    films = [key for key in model.item_keys if key[0] == "films"][:2]
    history = [*books, films[0], films[1][1]]  # pairs and a bare id
    recs = model.recommend(history, k=10)
    assert len(recs) == 10
    context = np.array([model.key_index[key] for key in [*books, *films]])
    scores = model.score([context], "films", rank=True)[0]
    ids = model.domain_items("films")
    scores[torch.isin(ids, torch.from_numpy(context))] = float("-inf")
    expected = [model.item_keys[int(ids[c])][1] for c in scores.topk(10).indices.tolist()]
    assert [r.item_id for r in recs] == expected
    assert not {r.item_id for r in recs} & {f[1] for f in films}
    assert all(a.score >= b.score for a, b in zip(recs, recs[1:], strict=False))
    # Unranked: the towers' order, and a seen item comes back when asked to.
    plain = model.recommend(history, k=len(ids), rank=False, exclude_seen=False)
    assert {r.item_id for r in plain} >= {f[1] for f in films}


def test_recommend_names_what_is_wrong(films_model: CrossRecModel) -> None:
    model = films_model
    good = model.item_keys[0]
    with pytest.raises(CrossRecError, match=r"history\[1\]: unknown item 'nope' in domain 'books'"):
        model.recommend([good, ("books", "nope")])
    with pytest.raises(CrossRecError, match=r"history\[0\]: unknown item 'nope'$"):
        model.recommend(["nope"])
    with pytest.raises(CrossRecError, match=r"history\[0\]: expected \(domain, item_id\)"):
        model.recommend([("books",)])  # type: ignore[list-item]
    with pytest.raises(CrossRecError, match="domain 'music' is not in this checkpoint"):
        model.recommend([good], domain="music")
    with pytest.raises(CrossRecError, match="give a history, a query, or both"):
        model.recommend([])
    with pytest.raises(CrossRecError, match="k must be at least 1"):
        model.recommend([good], k=0)
    film = next(key for key in model.item_keys if key[0] == "films")
    model.key_index[("books", film[1])] = model.key_index[film]  # the same id in two domains
    try:
        with pytest.raises(CrossRecError, match=r"exists in books, films; give it as a \(domain"):
            model.recommend([film[1]])
    finally:
        del model.key_index[("books", film[1])]


def test_recommend_returns_fewer_than_k_when_the_history_covers_the_domain(
    films_model: CrossRecModel,
) -> None:
    films = [key for key in films_model.item_keys if key[0] == "films"]
    recs = films_model.recommend(films[2:], k=10)
    assert sorted(r.item_id for r in recs) == sorted(f[1] for f in films[:2])
