"""One incremental fine-tune: from a model version and a round's samples to a *candidate*
version, scored beside its parent on the gate's holdout and regression sets.

Plain PyTorch, so it runs in the learner's process, in a Ray task (``training.incremental``),
or on a GPU box without Ray. The objective: InfoNCE of the user vector (from the sample's
context) against the target item, in-batch positives and sampled negatives of the target domain,
at the model's own softmax scale (training's full softmax would cost a whole catalogue per step).
Only the weights ``online.finetune`` names learn; the text encoder and the rankers (and the
hybrid ranker's co-visitation counts) stay as they are.

Example:
    >>> result = train_candidate(pointer.uri, pointer.version, batch, cfg.online, "cand/")
    >>> result.targets["films"].candidate["recall@20"]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from crossrec.config import OnlineConfig
from crossrec.feature_store.samples import Sample
from crossrec.models.bundle import checkpoint_dirs
from crossrec.models.crossrec_model import MIN_RANKER_CASES, CrossRecModel
from crossrec.ranking_metrics import mrr_at_k, ndcg_at_k, recall_at_k, target_ranks
from crossrec.trainer import ADAPTER_PARAMETERS

logger = logging.getLogger(__name__)

# Corrupted rounds the gate must reject. ``shuffle-labels`` puts every label on a wrong context
# (the labels' popularity stays, so a shift that is mostly a popularity trend survives it in
# part); ``remap-items`` maps every label through one random permutation of the domain's items,
# as an item-id mapping bug would: the learned transitions and the trend both land on the
# wrong items.
DRILLS = ("shuffle-labels", "remap-items")


@dataclass
class RoundData:
    """What one round trains and is judged on (samples of every domain; each target model
    takes its own)."""

    train: list[Sample]
    holdout: list[Sample]
    regression: list[Sample]


@dataclass
class ModelSamples:
    """Samples of one domain in a model's item indices."""

    contexts: list[np.ndarray]
    targets: np.ndarray  # global item indices
    skipped: int = 0  # samples whose target the model does not know (items added later)

    def __len__(self) -> int:
        return int(self.targets.size)


def model_samples(model: CrossRecModel, samples: Sequence[Sample], domain: str) -> ModelSamples:
    """The samples of ``domain`` the model can use: contexts keep only known items (as serving
    does); a sample whose target is unknown is counted in ``skipped``."""
    index = model.key_index
    d = model.domain_index[domain]
    item_domain = model.item_tower.item_domain.cpu().numpy()
    contexts, targets, skipped = [], [], 0
    for s in samples:
        if s.domain != domain:
            continue
        target = index.get((s.domain, s.item_id))
        if target is None:
            skipped += 1
            continue
        ctx = np.asarray([index[k] for k in s.context if k in index], dtype=np.int64)
        if model.cfg.train.target_only:
            ctx = ctx[item_domain[ctx] == d]
        contexts.append(ctx)
        targets.append(target)
    return ModelSamples(contexts, np.asarray(targets, dtype=np.int64), skipped)


def metric_ks(gate_metric: str) -> list[int]:
    return sorted({10, 20, int(gate_metric.partition("@")[2])})


@torch.no_grad()
def evaluate_samples(
    model: CrossRecModel,
    data: ModelSamples,
    domain: str,
    ks: Sequence[int] = (10, 20),
    *,
    rank: bool = True,
    batch_size: int = 256,
) -> dict[str, float]:
    """Recall, NDCG and MRR at ``ks`` of predicting each sample's target, ranked over every item
    of ``domain`` with the items already in its context left out (the evaluation protocol)."""
    out: dict[str, float] = {"n": float(len(data))}
    if not len(data):
        return out
    model.eval()
    model.invalidate_item_cache()
    domain_ids = model.domain_items(domain).cpu()
    sums = {f"{m}@{k}": 0.0 for m in ("recall", "ndcg", "mrr") for k in ks}
    for start in range(0, len(data), batch_size):
        ctx = data.contexts[start : start + batch_size]
        tgt = torch.from_numpy(data.targets[start : start + batch_size])
        scores = model.score(ctx, domain, rank=rank).cpu()
        cols = torch.searchsorted(domain_ids, tgt)
        exclude = torch.zeros_like(scores, dtype=torch.bool)
        for row, c in enumerate(ctx):
            seen = torch.from_numpy(c)
            hit = torch.searchsorted(domain_ids, seen).clamp(max=domain_ids.numel() - 1)
            hit = hit[domain_ids[hit] == seen]
            exclude[row, hit] = True
        exclude[torch.arange(len(ctx)), cols] = False
        ranks = target_ranks(scores, cols, exclude)
        for k in ks:
            sums[f"recall@{k}"] += float(recall_at_k(ranks, k).sum())
            sums[f"ndcg@{k}"] += float(ndcg_at_k(ranks, k).sum())
            sums[f"mrr@{k}"] += float(mrr_at_k(ranks, k).sum())
    out.update({name: value / len(data) for name, value in sums.items()})
    return out


def trainable_parameters(model: CrossRecModel, what: str) -> list[nn.Parameter]:
    """Marks the weights a round trains (``adapter`` or ``full``) and returns them."""
    chosen = []
    for name, param in model.named_parameters():
        if name.startswith("ranker.") or ".encoder." in name:
            wanted = False
        elif what == "full":
            wanted = True
        else:
            wanted = name.startswith(ADAPTER_PARAMETERS)
        param.requires_grad_(wanted)
        if wanted:
            chosen.append(param)
    return chosen


@dataclass
class FineTuneReport:
    steps: int = 0
    samples: int = 0
    first_loss: float = float("nan")
    last_loss: float = float("nan")
    seconds: float = 0.0


def corrupt_labels(
    targets: np.ndarray, pool: np.ndarray, drill: str, rng: np.random.Generator
) -> np.ndarray:
    """The labels of a drill round (see `DRILLS`); ``pool`` holds the domain's item indices."""
    if drill == "shuffle-labels":
        return rng.permutation(targets)  # every label on a wrong context
    if drill == "remap-items":
        mapping = dict(zip(pool.tolist(), rng.permutation(pool).tolist(), strict=True))
        return np.array([mapping.get(int(t), int(t)) for t in targets], dtype=targets.dtype)
    raise ValueError(f"unknown drill {drill!r}; known: {', '.join(DRILLS)}")


def fine_tune(
    model: CrossRecModel,
    data: ModelSamples,
    domain: str,
    cfg: OnlineConfig,
    *,
    drill: str | None = None,
) -> FineTuneReport:
    """``cfg.steps`` AdamW steps of next-item InfoNCE on ``data`` (in place)."""
    report = FineTuneReport(samples=len(data))
    if not len(data):
        return report
    started = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    targets = data.targets
    if drill is not None:
        targets = corrupt_labels(targets, model.domain_items(domain).cpu().numpy(), drill, rng)
    # With the hybrid ranker, a share of the round's samples never reaches the towers: the
    # ranker is refitted on them afterwards, so it learns how far to trust the updated towers
    # (as in training, only on positions they did not train on).
    tower_rows = np.arange(len(data))
    ranker_rows = np.empty(0, dtype=np.int64)
    if model.hybrid is not None and cfg.ranker_share > 0:
        n = int(round(cfg.ranker_share * len(data)))
        if n >= MIN_RANKER_CASES and len(data) - n >= 1:
            picked = rng.permutation(len(data))
            ranker_rows, tower_rows = np.sort(picked[:n]), np.sort(picked[n:])
    params = trainable_parameters(model, cfg.finetune)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    pool = model.domain_items(domain)
    # The served model's own softmax scale (learned, or 1 / temperature; 1 for dot products).
    scale = model.score_scale().detach()
    batch = min(cfg.batch_size, tower_rows.size)
    losses = []
    model.train()
    for _ in range(cfg.steps):
        rows = rng.choice(tower_rows, size=batch, replace=False)
        positives = torch.from_numpy(targets[rows]).to(model.device)
        users = model.encode_users([data.contexts[r] for r in rows], domain)
        k = min(cfg.num_negatives, pool.numel())
        negatives = pool[torch.randint(pool.numel(), (k,), device=pool.device)]
        candidates, inverse = torch.unique(torch.cat([positives, negatives]), return_inverse=True)
        logits = users @ model.item_vectors(candidates).T * scale
        loss = nn.functional.cross_entropy(logits, inverse[:batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    model.invalidate_item_cache()
    for p in model.parameters():
        p.requires_grad_(False)
    if model.covis is not None:
        # The hybrid ranker reads co-visitation and popularity: the round's events count too,
        # or its frozen counts would hold back what the towers just learned (a trend). The
        # ranker's own cases are counted only after it is refitted on them.
        window = model.covis.window

        def recent(rows: np.ndarray) -> list[np.ndarray]:
            return [np.append(data.contexts[i][-window:], targets[i]) for i in rows]

        model.covis = model.covis.with_sequences(recent(tower_rows))
        if ranker_rows.size:
            cases = [(data.contexts[i], int(targets[i])) for i in ranker_rows]
            model.fit_hybrid(cases, domain, epochs=30, seed=cfg.seed, warm_start=True)
            model.covis = model.covis.with_sequences(recent(ranker_rows))
    report.steps = len(losses)
    report.first_loss = float(np.mean(losses[: max(1, len(losses) // 10)]))
    report.last_loss = float(np.mean(losses[-max(1, len(losses) // 10) :]))
    report.seconds = time.perf_counter() - started
    logger.info(
        "fine-tune domain=%s samples=%d steps=%d loss %.4f -> %.4f (%.1fs)%s",
        domain,
        len(data),
        report.steps,
        report.first_loss,
        report.last_loss,
        report.seconds,
        f" drill={drill}" if drill else "",
    )
    return report


@dataclass
class TargetResult:
    """One target domain's candidate beside its parent."""

    domain: str
    parent: dict[str, dict[str, float]] = field(default_factory=dict)  # set -> metrics
    candidate: dict[str, dict[str, float]] = field(default_factory=dict)
    fine_tune: dict[str, Any] = field(default_factory=dict)
    skipped_unknown: int = 0


@dataclass
class CandidateResult:
    """What :func:`train_candidate` made: the candidate's folder and every score."""

    path: str
    parent_version: str
    targets: dict[str, TargetResult]
    seconds: float
    device: str

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "parent_version": self.parent_version,
            "targets": {k: asdict(v) for k, v in self.targets.items()},
            "seconds": self.seconds,
            "device": self.device,
        }


def train_candidate(
    parent_uri: str,
    parent_version: str,
    data: RoundData,
    cfg: OnlineConfig,
    out_dir: str | Path,
    *,
    rank: bool = True,
    drill: str | None = None,
    device: str | None = None,
) -> CandidateResult:
    """Loads the parent version, scores it, fine-tunes each target model on its domain's
    samples, scores the candidate, and saves it to ``out_dir`` (same layout as the parent)."""
    started = time.perf_counter()
    dev = torch.device(
        device or ("cuda" if cfg.num_gpus > 0 and torch.cuda.is_available() else "cpu")
    )
    out = Path(out_dir)
    ks = metric_ks(cfg.gate_metric)
    results: dict[str, TargetResult] = {}
    for name, ckpt in checkpoint_dirs(parent_uri).items():
        model = CrossRecModel.from_pretrained(ckpt).to_device(dev)
        target = model.target_domain or name or model.domains[-1]
        result = TargetResult(domain=target)
        sets = {"holdout": data.holdout, "regression": data.regression}
        prepared = {k: model_samples(model, v, target) for k, v in sets.items()}
        train = model_samples(model, data.train, target)
        result.skipped_unknown = train.skipped + sum(p.skipped for p in prepared.values())
        for set_name, prep in prepared.items():
            result.parent[set_name] = evaluate_samples(model, prep, target, ks, rank=rank)
        report = fine_tune(model, train, target, cfg, drill=drill)
        result.fine_tune = asdict(report)
        for set_name, prep in prepared.items():
            result.candidate[set_name] = evaluate_samples(model, prep, target, ks, rank=rank)
        model.stage = "online"
        model.metrics = {
            **model.metrics,
            "online": {
                "parent_version": parent_version,
                "holdout": result.candidate.get("holdout"),
                "regression": result.candidate.get("regression"),
                "fine_tune": result.fine_tune,
            },
        }
        model.to_device("cpu").save_pretrained(out / name if name else out)
        results[target] = result
    seconds = time.perf_counter() - started
    return CandidateResult(str(out), parent_version, results, seconds, str(dev))
