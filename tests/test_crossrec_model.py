"""The cross-domain model end to end on the synthetic world: transfer, adaptation, cold start,
checkpoints. Training is small but real (a few epochs on a few hundred users)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from crossrec.baselines.popularity import PopularityRecommender
from crossrec.config import CrossRecConfig, EvalConfig, SyntheticConfig, with_overrides
from crossrec.data.splits import Split, make_split
from crossrec.data.synthetic import generate_world
from crossrec.encoders.text_encoder import TextEncoder
from crossrec.evaluation import TargetDomainEvaluator
from crossrec.models.crossrec_model import CrossRecModel
from crossrec.models.variants import variant_config
from crossrec.trainer import CrossRecTrainer, measure_domain_gap
from crossrec.trainer.estimator import CrossRecRecommender

WORLD = SyntheticConfig(seed=11, num_users=700, items_per_domain=[300, 200])
FAST = [
    "train.max_epochs=6",
    "train.pretrain_max_epochs=5",
    "train.patience=3",
    "train.batch_size=64",
    "train.ranker_epochs=1",
]


@pytest.fixture(scope="module")
def world_split() -> Split:
    return make_split(generate_world(WORLD), EvalConfig(), ["films"])


@pytest.fixture(scope="module")
def base_cfg() -> CrossRecConfig:
    cfg = CrossRecConfig()
    cfg.data.synthetic = WORLD
    return with_overrides(cfg, FAST)


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder()


def _ndcg(split: Split, model: object, slice_name: str = "all") -> float:
    rows = TargetDomainEvaluator(split, EvalConfig(protocols=["full"])).evaluate(model)  # type: ignore[arg-type]
    return next(r.metrics["ndcg@10"] for r in rows if r.slice == slice_name)


def _recall50(split: Split, model: object, slice_name: str) -> float:
    rows = TargetDomainEvaluator(split, EvalConfig(protocols=["full"])).evaluate(model)  # type: ignore[arg-type]
    return next(r.metrics["recall@50"] for r in rows if r.slice == slice_name)


@pytest.fixture(scope="module")
def transfer(
    world_split: Split, base_cfg: CrossRecConfig, encoder: TextEncoder
) -> CrossRecRecommender:
    rec = CrossRecRecommender(variant_config("crossrec-transfer", base_cfg), encoder=encoder)
    rec.fit(world_split)
    return rec


@pytest.fixture(scope="module")
def target_only(
    world_split: Split, base_cfg: CrossRecConfig, encoder: TextEncoder
) -> CrossRecRecommender:
    rec = CrossRecRecommender(variant_config("crossrec-target-only", base_cfg), encoder=encoder)
    rec.fit(world_split)
    return rec


def test_transfer_beats_target_only(
    world_split: Split, transfer: CrossRecRecommender, target_only: CrossRecRecommender
) -> None:
    with_source = _ndcg(world_split, transfer)
    without = _ndcg(world_split, target_only)
    assert with_source > without + 0.03, (with_source, without)


def test_training_is_deterministic_by_seed(
    world_split: Split, base_cfg: CrossRecConfig, encoder: TextEncoder
) -> None:
    cfg = with_overrides(
        base_cfg, ["train.max_epochs=1", "train.stages=[adapt]", "train.ranker_epochs=0"]
    )
    scores = []
    for _ in range(2):
        rec = CrossRecRecommender(cfg, encoder=encoder)
        rec.fit(world_split)
        scores.append(rec.score(world_split.test[:5], "films"))
    assert torch.equal(scores[0], scores[1])


def test_cold_start_users_and_items(world_split: Split, transfer: CrossRecRecommender) -> None:
    popularity = PopularityRecommender()
    popularity.fit(world_split)
    assert _ndcg(world_split, transfer, "cold-users") > 3 * _ndcg(
        world_split, popularity, "cold-users"
    )
    # Cold-start items are retrieved from their text: random Recall@50 is 50 / 200 = 0.25.
    assert _recall50(world_split, transfer, "cold-items") > 0.4
    assert _recall50(world_split, popularity, "cold-items") == 0.0


def test_text_query_returns_on_topic_items(transfer: CrossRecRecommender) -> None:
    model = transfer.models["films"]
    query = model.encode_text(["a terrifying night with ghosts, demons and vampires"])
    scores = model.score([np.empty(0, dtype=np.int64)], "films", query_text_vectors=query)[0]
    top = scores.topk(10).indices + int(model.domain_items("films")[0])
    genres = [model.item_tower.texts[int(g)] for g in top]
    assert sum("Horror Movie" in g for g in genres) >= 8, genres


def test_new_item_from_text_is_retrievable(
    world_split: Split, transfer: CrossRecRecommender
) -> None:
    model = CrossRecModel.from_pretrained(_save(transfer, Path(_tmp()) / "ckpt"))
    films = model.domain_items("films")
    original = int(films[3])
    text = model.item_tower.texts[original] + " (Remastered)"
    [new] = model.add_items("films", ["remastered-1"], [text]).tolist()
    vectors = model.item_matrix("films")
    sims = vectors @ vectors[-1]
    # The film it duplicates is among its nearest neighbours (existing films also carry a
    # learned ID part, the new one only its text).
    assert 3 in sims[:-1].topk(5).indices.tolist()
    user = model.encode_users([np.array([original])], "films")
    assert model.score([np.array([original])], "films").shape[1] == films.numel() + 1
    assert float(user @ vectors[-1]) > float(torch.quantile(user @ vectors.T, 0.9))
    assert model.item_keys[new] == ("films", "remastered-1")


def _tmp() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="crossrec-test-")


def _save(rec: CrossRecRecommender, path: Path) -> Path:
    return rec.models["films"].save_pretrained(path)


def test_save_load_round_trip(
    world_split: Split, transfer: CrossRecRecommender, tmp_path: Path
) -> None:
    model = transfer.models["films"]
    path = model.save_pretrained(tmp_path / "films")
    loaded = CrossRecModel.from_pretrained(path)
    cases = world_split.test[:20]
    contexts = [c.context for c in cases]
    assert torch.equal(model.score(contexts, "films"), loaded.score(contexts, "films"))
    assert torch.equal(
        model.score(contexts, "films", rank=True), loaded.score(contexts, "films", rank=True)
    )
    import json

    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["stage"] == "joint"
    assert manifest["target_domain"] == "films"
    assert manifest["crossrec_version"]
    assert "joint_valid_ndcg@10" in manifest["metrics"]
    assert manifest["hybrid_ranker"] is True
    assert manifest["item_index_fingerprint"] == loaded.fingerprint()


def test_hybrid_ranker_ranks_by_logits_and_helps(
    world_split: Split, transfer: CrossRecRecommender
) -> None:
    model = transfer.models["films"]
    assert model.hybrid is not None
    assert transfer.rank
    cases = [c for c in world_split.test if c.context.size][:50]
    scores = model.score([c.context for c in cases], "films", rank=True)
    top = scores.topk(10).values
    assert bool((top[:, :-1] > top[:, 1:]).all()), "ties at the top of ranked scores"
    ranked = _ndcg(world_split, transfer)
    transfer.rank = False
    try:
        retrieval = _ndcg(world_split, transfer)
    finally:
        transfer.rank = True
    print(f"ndcg@10 ranked={ranked:.4f} retrieval={retrieval:.4f}")
    assert ranked >= retrieval - 0.02


def test_lora_mode_trains_and_round_trips(
    world_split: Split, base_cfg: CrossRecConfig, tmp_path: Path
) -> None:
    cfg = with_overrides(
        variant_config("crossrec-transfer-lora", base_cfg),
        [
            "train.stages=[adapt]",
            "train.max_epochs=1",
            "train.max_steps_per_epoch=2",
            "train.batch_size=16",
            "train.num_negatives=16",
            "train.ranker_epochs=0",
        ],
    )
    model = CrossRecModel.for_dataset(world_split.dataset, cfg, TextEncoder())
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    assert lora
    CrossRecTrainer(model, world_split, cfg, "films").fit()
    changed = [
        n for n, p in model.named_parameters() if "lora_B" in n and not torch.equal(p, lora[n])
    ]
    assert changed  # LoRA weights learned end to end
    path = model.save_pretrained(tmp_path / "lora")
    loaded = CrossRecModel.from_pretrained(path)
    contexts = [c.context for c in world_split.test[:4]]
    assert torch.allclose(
        model.score(contexts, "films"), loaded.score(contexts, "films"), atol=1e-5
    )


def test_adaptation_losses_shrink_their_domain_gap(
    world_split: Split, base_cfg: CrossRecConfig, encoder: TextEncoder
) -> None:
    gaps = {}
    histories = {}
    for method in ("none", "dann", "mmd", "coral"):
        cfg = with_overrides(
            base_cfg,
            [
                f"adaptation.method={method}",
                "adaptation.weight=1.0",
                "train.max_epochs=3",
                "train.patience=5",
                "train.ranker_epochs=0",
            ],
        )
        rec = CrossRecRecommender(cfg, encoder=encoder)
        rec.fit(world_split)  # shares one pretrain run across the four
        gaps[method] = measure_domain_gap(rec.models["films"], ["books"], "films")
        histories[method] = rec.reports["films"][-1].history
    base = gaps["none"]
    assert gaps["mmd"]["mmd"] < base["mmd"]
    assert gaps["coral"]["coral"] < base["coral"]
    # DANN trains against its discriminator every step (its loss is recorded per epoch); a
    # fresh discriminator trained to convergence still separates the domains afterwards on this
    # world (held-out accuracy 0.96-0.99 with or without DANN), so only the MMD and CORAL
    # distances are asserted to shrink.
    assert all(0.0 < record["dann_loss"] < 10.0 for record in histories["dann"])


def test_recommend_command_prints_one_json_document(
    transfer: CrossRecRecommender, tmp_path: Path
) -> None:
    import json

    from typer.testing import CliRunner

    from crossrec.cli import app

    path = _save(transfer, tmp_path / "films")
    query = "a terrifying night with ghosts, demons and vampires"
    result = CliRunner().invoke(
        app,
        [
            "recommend",
            "--checkpoint",
            str(path),
            "--domain",
            "films",
            "--query",
            query,
            "-k",
            "5",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["domain"] == "films"
    assert doc["query"] == query
    assert [r["rank"] for r in doc["items"]] == [1, 2, 3, 4, 5]
    scores = [r["score"] for r in doc["items"]]
    assert scores == sorted(scores, reverse=True)
    assert sum("Horror Movie" in r["title"] for r in doc["items"]) >= 3
