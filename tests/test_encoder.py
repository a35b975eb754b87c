from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crossrec.config import EncoderConfig
from crossrec.data.schema import Item
from crossrec.encoders import EmbeddingCache, ItemTextTemplate, TextEncoder, resolve_model_dir
from crossrec.encoders.text_encoder import encode_texts_cached
from crossrec.errors import EncoderError


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder()


def test_default_model_is_bundled_and_normalised(encoder: TextEncoder) -> None:
    vectors = encoder.encode(["a galaxy far away", "starships and nebulae", "a bread recipe"])
    assert vectors.shape == (3, 384)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(3), atol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2]  # space is closer to space than to baking


def test_batching_does_not_change_vectors(encoder: TextEncoder) -> None:
    texts = ["short", "a somewhat longer text about the sea", "mid length text"]
    one = encoder.encode(texts, batch_size=1)
    all_ = encoder.encode(texts, batch_size=8)
    assert torch.allclose(one, all_, atol=1e-5)


def test_any_local_model_directory(tmp_path: Path, encoder: TextEncoder) -> None:
    local = tmp_path / "my-model"
    local.mkdir()
    for f in resolve_model_dir("all-MiniLM-L6-v2").iterdir():
        if f.is_file():
            (local / f.name).symlink_to(f)
    other = TextEncoder(str(local))
    text = ["cross-domain recommendation"]
    assert torch.allclose(other.encode(text), encoder.encode(text), atol=1e-6)


def test_bad_model_directory(tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match="not a Hugging Face model directory"):
        TextEncoder(str(tmp_path))


def test_cache_reuses_vectors(
    tmp_path: Path, encoder: TextEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = ["one", "two", "one"]
    first = encode_texts_cached(encoder, texts, "tpl", cache_dir=tmp_path)
    assert torch.equal(first[0], first[2])
    calls: list[int] = []
    original = encoder.encode

    def counting(batch: list[str], **kw: object) -> torch.Tensor:
        calls.append(len(batch))
        return original(batch, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(encoder, "encode", counting)
    again = encode_texts_cached(encoder, texts, "tpl", cache_dir=tmp_path)
    assert calls == []
    assert torch.allclose(first, again)
    encode_texts_cached(encoder, ["one", "three"], "tpl", cache_dir=tmp_path)
    assert calls == [1]  # only the new text
    encode_texts_cached(encoder, ["one"], "other-template", cache_dir=tmp_path)
    assert calls == [1, 1]  # the template is part of the key
    assert len(EmbeddingCache(tmp_path, encoder.settings_key())) == 4


def test_template_renders_fields_and_domain_overrides() -> None:
    cfg = EncoderConfig(domain_templates={"films": ["title"]})
    tpl = ItemTextTemplate.from_config(cfg)
    book = Item("books", "b", "Dune", categories=("Sci-Fi", "Classic"), brand="Ace")
    film = Item("films", "f", "Alien (1979)", categories=("Horror",))
    assert tpl.render(book) == "Dune. Sci-Fi, Classic. Ace"
    assert tpl.render(film) == "Alien (1979)"
    assert tpl.key() != ItemTextTemplate.from_config(EncoderConfig()).key()


def test_a_training_run_reuses_this_machines_cache(tmp_path: Path) -> None:
    from training.encoding import run_item_vectors
    from training.storage import RunStorage

    cfg = EncoderConfig(cache_dir=str(tmp_path / "machine"))
    texts = ["a space opera", "a bread recipe", "a space opera", "knives and pans"]
    said: list[str] = []
    first = run_item_vectors(
        texts, "tpl", cfg, RunStorage(str(tmp_path / "runs"), "one"), on_message=said.append
    )
    head = "item texts: 4 (3 distinct); "
    assert said[0] == head + "0 in the run's cache, 0 in this machine's, 3 to encode"
    assert said[-1].startswith("encoded 3 item texts in ")
    namespace = TextEncoder.from_config(cfg).settings_key()
    assert len(EmbeddingCache(tmp_path / "machine", namespace)) == 3  # the machine's cache filled
    # A new run on this machine encodes nothing, and fills its own cache from the machine's.
    said.clear()
    second = run_item_vectors(
        texts, "tpl", cfg, RunStorage(str(tmp_path / "runs"), "two"), on_message=said.append
    )
    assert said == [head + "0 in the run's cache, 3 in this machine's, 0 to encode"]
    assert torch.equal(first, second)
    assert torch.equal(first[0], first[2])
    assert len(EmbeddingCache(tmp_path / "runs" / "two", namespace)) == 3
    said.clear()
    run_item_vectors(
        texts, "tpl", cfg, RunStorage(str(tmp_path / "runs"), "two"), on_message=said.append
    )
    assert said == [head + "3 in the run's cache, 0 in this machine's, 0 to encode"]


def test_long_encodings_report_progress() -> None:
    from training.encoding import _EncodingProgress

    said: list[str] = []
    progress = _EncodingProgress(30, said.append, every_s=0.0)
    progress(10)
    progress(30)  # the end is reported by the caller, with the time taken
    assert len(said) == 1
    assert said[0].startswith("encoding item texts: 10/30 (")
    assert "s left)" in said[0]
