"""The single-process training loop of the cross-domain model (Ray Train distributes the same
loop). Stages:

* ``pretrain`` — next-item prediction on the source domain(s): for every position of a user's
  mixed-domain sequence whose next item is a source item, InfoNCE over the in-batch positives and
  ``train.num_negatives`` uniformly sampled items of that domain.
* ``adapt`` — the same objective on the target domain, from the pretrained weights, training the
  adapter only, LoRA + adapter, or everything (``train.finetune``); optionally plus a domain
  adaptation loss (``adaptation.method``) that aligns source and target item representations.

``adapt`` stops early on validation NDCG@10 of the target domain (patience ``train.patience``)
and keeps its best epoch; ``pretrain`` keeps its last epoch and stops when its training loss
plateaus. After ``adapt`` the ranker is fitted on retrieved hard negatives.

The loop is written once: a `TrainContext` says where it runs. The default is one process; under
Ray Train (``training/``) the same loop runs on every worker with DDP, sharded batches, sharded
validation and per-epoch checkpoints from which an interrupted stage resumes (`StageState`).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from crossrec.adaptation import (
    DomainDiscriminator,
    coral_distance,
    dann_lambda,
    grad_reverse,
    mmd_distance,
)
from crossrec.batching import length_bucketed_batches
from crossrec.config import CrossRecConfig
from crossrec.data.splits import EvalCase, Split
from crossrec.evaluation import TargetDomainEvaluator
from crossrec.models.crossrec_model import CrossRecModel
from crossrec.recommender import Recommender

logger = logging.getLogger(__name__)

EpochCallback = Callable[[dict[str, Any]], None]

# What adapter-only fine-tuning trains (in `adapt`, and in online rounds): the item adapter,
# the item and domain embeddings, and the user tower's target query and output layers.
ADAPTER_PARAMETERS = (
    "item_tower.adapter", "item_tower.domain_emb", "item_tower.id_emb",
    "user_tower.target_query", "user_tower.out",
)  # fmt: skip

# Pretraining stops once an epoch lowers the training loss by less than this fraction.
LOSS_PLATEAU = 0.002


@dataclass
class StageReport:
    """What one stage did: epochs run, the best validation NDCG@10 and where it was reached."""

    stage: str
    domains: list[str]
    epochs: int = 0
    best_epoch: int = 0
    best_valid_ndcg: float = float("nan")
    samples: int = 0
    seconds: float = 0.0
    train_seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


class ModelView(Recommender):
    """Lets the evaluator score a `CrossRecModel` (one target domain)."""

    name = "crossrec"

    def __init__(self, model: CrossRecModel, target_only: bool = False, rank: bool = False) -> None:
        self.model = model
        self.target_only = target_only
        self.rank = rank

    def fit(self, split: Split) -> None:  # trained by CrossRecTrainer
        raise NotImplementedError("train with CrossRecTrainer")

    def contexts(self, cases: Sequence[EvalCase], domain: str) -> list[np.ndarray]:
        if not self.target_only:
            return [c.context for c in cases]
        d = self.model.domain_index[domain]
        dom = self.model.item_tower.item_domain.cpu().numpy()
        return [c.context[dom[c.context] == d] for c in cases]

    def score(self, cases: Sequence[EvalCase], domain: str) -> torch.Tensor:
        return self.model.score(self.contexts(cases, domain), domain, rank=self.rank)


def _windows(
    sequences: Sequence[np.ndarray], max_len: int, keep: Callable[[np.ndarray], bool]
) -> tuple[list[np.ndarray], list[bool]]:
    """Windows of at most ``max_len + 1`` items; the flag says whether a window starts its
    sequence (only then does its first item have a known, empty, history)."""
    windows: list[np.ndarray] = []
    starts: list[bool] = []
    for seq in sequences:
        end = seq.size
        while end > 0:
            begin = max(0, end - max_len - 1)
            w = seq[begin:end]
            if keep(w if begin == 0 else w[1:]):
                windows.append(w)
                starts.append(begin == 0)
            end -= max_len
            if begin == 0:
                break
    return windows, starts


@dataclass
class StageState:
    """Where a stage's loop stands: saved in every checkpoint, so a restarted run resumes after
    the last finished epoch with the same early-stopping state."""

    stage: str
    epoch: int = 0
    best_epoch: int = 0
    best_valid_ndcg: float = float("nan")
    best_loss: float = float("inf")
    bad_epochs: int = 0
    samples: int = 0
    train_seconds: float = 0.0
    finished: bool = False
    history: list[dict[str, float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = json_safe(self.__dict__)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StageState:
        return cls(**{k: _from_json_number(v) for k, v in data.items()})


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (JSON has no NaN / infinity) written as a string,
    in nested dicts and lists too."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def _from_json_number(value: Any) -> Any:
    if value in ("nan", "inf", "-inf"):
        return float(value)
    return value


class TrainContext:
    """Where the training loop runs. This one is a single process; Ray Train workers use a
    subclass (``training.loop.RayTrainContext``) that wraps the model in DDP, shards the batches
    and the validation cases, reduces metrics and reports checkpoints.

    The loop sees ``world_size`` workers; ``train.batch_size`` is the global batch, so each
    worker's batch is ``ceil(batch_size / world_size)`` and an epoch has the same number of
    optimizer steps however many workers there are.
    """

    world_size: int = 1
    rank: int = 0
    device: torch.device = torch.device("cpu")

    def wrap_model(self, module: nn.Module) -> nn.Module:
        """The module the loop calls forward/backward on (DDP under Ray Train)."""
        return module

    def wrap_loader(self, loader: DataLoader[dict[str, torch.Tensor]]) -> Iterable[Any]:
        """The batches this worker trains on (its shard under Ray Train)."""
        return loader

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over workers."""
        return values

    def resume(self, stage: str) -> Path | None:
        """A stage checkpoint directory to resume from (the latest one of an interrupted run)."""
        return None

    def end_epoch(self, run: StageRun, record: dict[str, float]) -> None:
        """Called by every worker after each epoch (Ray Train reports and checkpoints here)."""

    def fault_point(self, stage: str, epoch: int, step: int, steps: int) -> None:
        """Called before every step; fault injection lives here (off unless configured)."""

    @property
    def is_chief(self) -> bool:
        return self.rank == 0


class WindowBatches(Dataset[dict[str, torch.Tensor]]):
    """One epoch's batches of training windows, collated to padded tensors (a map-style
    dataset of whole batches, so a distributed sampler hands each worker whole batches)."""

    def __init__(
        self, windows: Sequence[np.ndarray], starts: Sequence[bool], batches: Sequence[np.ndarray]
    ) -> None:
        self.windows = windows
        self.starts = starts
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rows = [self.windows[i] for i in self.batches[index]]
        n_max = max(r.size for r in rows)
        hist = torch.zeros(len(rows), max(1, n_max - 1), dtype=torch.long)
        targets = torch.full((len(rows), n_max), -1, dtype=torch.long)
        lengths = torch.zeros(len(rows), dtype=torch.long)
        for b, r in enumerate(rows):
            hist[b, : r.size - 1] = torch.from_numpy(r[:-1])
            targets[b, : r.size] = torch.from_numpy(r)
            lengths[b] = r.size - 1
        not_start = torch.tensor([not self.starts[i] for i in self.batches[index]])
        return {"hist": hist, "targets": targets, "lengths": lengths, "not_start": not_start}


class StageObjective(nn.Module):
    """One stage's training loss as a module, so DDP sees every parameter it touches: the
    next-item loss (``train.loss``) plus, when configured, the domain adaptation loss.

    The next-item loss of a position whose next item lies in domain ``d`` is a softmax over
    ``d``'s items only (a per-domain output): over the whole catalogue (``softmax``; sampled
    with log-Q correction above ``train.full_softmax_max_items`` items or when the item tower
    runs the text encoder), or over in-batch positives and uniform negatives (``infonce``).
    """

    def __init__(
        self,
        trainer: CrossRecTrainer,
        wanted: np.ndarray,
        pool: torch.Tensor,
        method: str,
        discriminator: DomainDiscriminator | None,
    ) -> None:
        super().__init__()
        self.model = trainer.model
        self.discriminator = discriminator
        self.trainer = [trainer]  # a list: not a submodule
        self.method = method
        device = trainer.model.device
        self.wanted = torch.from_numpy(wanted).to(device)
        self.pool = pool.to(device)
        t = trainer.cfg.train
        self.loss_kind = t.loss
        # Per domain: its items (sorted global indices), whether its softmax is full, and the
        # log of the sampling distribution of its negatives (training popularity, smoothed).
        counts = torch.from_numpy(trainer.train_counts.astype(np.float64))
        encoder_items = self.model.item_tower.mode != "frozen"
        self.domain_ids: dict[int, torch.Tensor] = {}
        self.full: dict[int, bool] = {}
        self.log_q: dict[int, torch.Tensor] = {}
        for d in np.flatnonzero(wanted).tolist():
            ids = self.model.domain_items(d)
            self.domain_ids[d] = ids
            self.full[d] = not encoder_items and ids.numel() <= t.full_softmax_max_items
            weights = (counts[ids.cpu()] + 1.0) ** 0.75
            self.log_q[d] = torch.log(weights / weights.sum()).float().to(device)

    def forward(
        self,
        hist: torch.Tensor,
        targets: torch.Tensor,
        lengths: torch.Tensor,
        not_start: torch.Tensor,
        progress: float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (total loss, next-item loss, positions trained on)."""
        trainer = self.trainer[0]
        model = self.model
        n_max = targets.shape[1]
        states = model.user_states(hist, lengths)[:, :n_max]
        mask = targets >= 0
        mask &= self.wanted[model.item_tower.item_domain[targets.clamp(min=0)]]
        mask[:, 0] &= ~not_start
        positives = targets[mask]
        domains = model.item_tower.item_domain[positives]
        users = model.user_tower.user_vector(states[mask], domains, normalize=model.cosine)
        if self.loss_kind == "infonce":
            next_item = self._infonce(users, positives, domains)
        else:
            next_item = self._softmax(users, positives, domains)
        loss = next_item
        if self.method != "none":
            da = trainer.adaptation_loss(self.method, progress, self.discriminator)
            loss = loss + trainer.cfg.adaptation.weight * da
            next_item = torch.stack([next_item, da.detach()])
        return loss, next_item.detach(), torch.tensor(positives.numel())

    def _infonce(
        self, users: torch.Tensor, positives: torch.Tensor, domains: torch.Tensor
    ) -> torch.Tensor:
        model = self.model
        k = min(self.trainer[0].cfg.train.num_negatives, self.pool.numel())
        negatives = self.pool[torch.randint(self.pool.numel(), (k,), device=self.pool.device)]
        candidates, inverse = torch.unique(torch.cat([positives, negatives]), return_inverse=True)
        labels = inverse[: positives.numel()]
        logits = users @ model.item_vectors(candidates).T * model.score_scale()
        cand_domains = model.item_tower.item_domain[candidates]
        logits = logits.masked_fill(cand_domains.unsqueeze(0) != domains.unsqueeze(1), -1e4)
        return nn.functional.cross_entropy(logits, labels)

    def _softmax(
        self, users: torch.Tensor, positives: torch.Tensor, domains: torch.Tensor
    ) -> torch.Tensor:
        """Mean cross-entropy over positions; each domain's positions against its catalogue."""
        model = self.model
        scale = model.score_scale()
        total = users.new_zeros(())
        for d, ids in self.domain_ids.items():
            rows = domains == d
            n = int(rows.sum())
            if not n:
                continue
            u, pos = users[rows], positives[rows]
            if self.full[d]:
                logits = u @ model.item_vectors(ids).T * scale
                labels = torch.searchsorted(ids, pos)
                total = total + nn.functional.cross_entropy(logits, labels, reduction="sum")
                continue
            # Sampled softmax with log-Q correction: negatives shared by the batch, drawn by
            # smoothed popularity; subtracting log q keeps the estimate unbiased.
            k = min(self.trainer[0].cfg.train.num_negatives, ids.numel())
            log_q = self.log_q[d]
            picks = torch.multinomial(log_q.exp(), k, replacement=True)
            negatives = ids[picks]
            pos_logit = (u * model.item_vectors(pos)).sum(-1, keepdim=True) * scale
            pos_logit = pos_logit - log_q[torch.searchsorted(ids, pos)].unsqueeze(1)
            neg_logits = u @ model.item_vectors(negatives).T * scale - log_q[picks].unsqueeze(0)
            neg_logits = neg_logits.masked_fill(negatives.unsqueeze(0) == pos.unsqueeze(1), -1e4)
            logits = torch.cat([pos_logit, neg_logits], dim=1)
            labels = torch.zeros(n, dtype=torch.long, device=logits.device)
            total = total + nn.functional.cross_entropy(logits, labels, reduction="sum")
        return total / max(positives.numel(), 1)


@dataclass
class StageRun:
    """Everything one stage's loop holds: what a checkpoint saves and a resume restores."""

    stage: str
    state: StageState
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    discriminator: DomainDiscriminator | None
    best_state: dict[str, torch.Tensor] | None = None
    # Joint training for several targets at once: each extra target's best score, epoch and
    # weights (the primary target's are `best_state`).
    target_best: dict[str, tuple[float, int, dict[str, torch.Tensor]]] = field(default_factory=dict)


class CrossRecTrainer:
    """Trains one `CrossRecModel` for one target domain.

    The same loop runs in one process (``TrainContext()``, the default) and on every Ray Train
    worker (``training.loop.RayTrainContext``).

    Example:
        >>> trainer = CrossRecTrainer(model, split, cfg, target="films")
        >>> reports = trainer.fit()
    """

    def __init__(
        self,
        model: CrossRecModel,
        split: Split,
        cfg: CrossRecConfig,
        target: str,
        on_epoch: EpochCallback | None = None,
        also_targets: Sequence[str] = (),
    ) -> None:
        self.model = model
        self.split = split
        self.cfg = cfg
        self.target = target
        self.on_epoch = on_epoch
        ds = split.dataset
        self.sources = list(cfg.adaptation.source_domains or [d for d in ds.domains if d != target])
        bad = [d for d in self.sources if d not in ds.domain_index or d == target]
        if bad:
            from crossrec.errors import ConfigError

            raise ConfigError(
                "adaptation.source_domains",
                f"{bad} must be domains of the dataset ({', '.join(ds.domains)}) other than "
                f"the target {target!r}",
            )
        self.item_domain = model.item_tower.item_domain.cpu().numpy()
        self.target_idx = model.domain_index[target]
        model.target_domain = target
        model.split_targets = list(split.target_domains)
        self.train_counts = split.train_item_counts()
        model.item_tower.set_trained_items(torch.from_numpy(self.train_counts > 0))
        sequences = split.train_sequences
        if cfg.train.target_only:
            sequences = [s[self.item_domain[s] == self.target_idx] for s in sequences]
        self.sequences = [s for s in sequences if s.size]
        self.ranker_cases = self._hold_out_ranker_positions()
        self.view = ModelView(model, target_only=cfg.train.target_only)
        self.evaluator = TargetDomainEvaluator.for_model_selection(split)
        self.has_valid = any(c.domain == target for c in split.valid)
        # A joint stage can serve several targets from one run: it keeps each target's best
        # epoch (`target_states`), and stops when none of them improves any more.
        self.also_targets = [t for t in also_targets if t != target]
        self.target_states: dict[str, tuple[float, int, dict[str, torch.Tensor]]] = {}
        self.discriminator: DomainDiscriminator | None = None
        self.pretrained_state: dict[str, torch.Tensor] | None = None

    def _hold_out_ranker_positions(self) -> list[tuple[np.ndarray, int]]:
        """With the hybrid ranker, a seeded share of users' last items leave the towers'
        training data and become the ranker's training cases ``(context, item)``: the ranker
        must learn where the towers were not fitted. The draw depends only on the sequences
        and the seed, so every trainer over the same data holds out the same positions."""
        t = self.cfg.train
        if self.cfg.model.ranker != "hybrid" or not t.ranker_epochs or t.ranker_holdout <= 0:
            return []
        # A user's last position in a target domain of the split (the same for every target's
        # trainer), after at least one earlier item.
        targets = np.zeros(len(self.model.domains), dtype=bool)
        targets[[self.model.domain_index[d] for d in self.split.target_domains]] = True
        cut: dict[int, int] = {}
        for i, seq in enumerate(self.sequences):
            found = np.flatnonzero(targets[self.item_domain[seq]])
            if found.size and found[-1] >= 1:
                cut[i] = int(found[-1])
        n = int(round(t.ranker_holdout * len(cut)))
        if not n:
            return []
        rng = np.random.default_rng([t.seed, 13])
        picked = rng.choice(np.array(sorted(cut)), size=n, replace=False)
        cases = []
        for i in sorted(picked.tolist()):
            seq, p = self.sequences[i], cut[i]
            if t.ranker_holdout_unit == "user":
                # The whole user leaves the towers' data; every target position after the
                # first item is a case (as a new user's requests are at serving time).
                for q in np.flatnonzero(targets[self.item_domain[seq]]):
                    if q >= 1:
                        cases.append((seq[:q], int(seq[q])))
                self.sequences[i] = seq[:0]
            else:
                cases.append((seq[:p], int(seq[p])))
                self.sequences[i] = seq[:p]
        return cases

    # ------------------------------------------------------------------ public
    def fit(
        self, pretrained: tuple[dict[str, torch.Tensor], StageReport] | None = None
    ) -> list[StageReport]:
        """Runs the configured stages; ``pretrained`` (weights and report of an identical
        ``pretrain`` run) replaces the pretrain stage."""
        reports = []
        for stage in self.cfg.train.stages:
            if stage == "pretrain" and pretrained is not None:
                state, report = pretrained
                self.model.load_state_dict(state, strict=False)
                self.model.stage = "pretrain"
                self.model.metrics["pretrain_valid_ndcg@10"] = report.best_valid_ndcg
                logger.info("stage=pretrain target=%s reused an identical earlier run", self.target)
                reports.append(report)
                continue
            reports.append(self.run_stage(stage))
        self.fit_rankers()
        self.model.eval()
        return reports

    def fit_rankers(self) -> None:
        """Fits the configured ranker (none when ``train.ranker_epochs`` is 0)."""
        if not self.cfg.train.ranker_epochs:
            return
        if self.cfg.model.ranker == "hybrid":
            self.fit_hybrid()
        else:
            self.fit_ranker()

    def validate_targets(self, ctx: TrainContext | None = None) -> dict[str, float]:
        """Validation NDCG@10 of the target and of every ``also_targets`` domain."""
        out = {self.target: self.validate(ctx)}
        for target in self.also_targets:
            out[target] = self.validate(ctx, target)
        return out

    def validate(self, ctx: TrainContext | None = None, target: str | None = None) -> float:
        """Validation NDCG@10 on the target domain; under Ray Train each worker scores its
        shard of the cases and the sums are reduced."""
        ctx = ctx or TrainContext()
        self.model.eval()
        self.model.invalidate_item_cache()
        total, count = self.evaluator.ndcg_sum_at(
            self.view, 10, "valid", domains=[target or self.target],
            shard=(ctx.rank, ctx.world_size),
        )  # fmt: skip
        self.model.invalidate_item_cache()
        reduced = ctx.all_reduce_sum([total, float(count)])
        return reduced[0] / max(reduced[1], 1.0)

    # ------------------------------------------------------------------ stages
    def _trainable(self, stage: str) -> list[nn.Parameter]:
        finetune = self.cfg.train.finetune if stage == "adapt" else "full"
        chosen: list[nn.Parameter] = []
        m = self.cfg.model
        for name, param in self.model.named_parameters():
            if name.startswith("ranker."):
                wanted = False
            elif name == "logit_scale":
                learned = m.learn_temperature and m.similarity == "cosine"
                wanted = learned and finetune == "full"
            elif ".encoder." in name:
                # LoRA weights learn in lora mode (pretrain, or adapt with lora/full); base encoder
                # weights only in item_mode=full with full fine-tuning.
                if "lora_" in name:
                    wanted = finetune in ("lora", "full")
                else:
                    wanted = self.model.item_tower.mode == "full" and finetune == "full"
            elif finetune == "full":
                wanted = True
            else:  # adapter / lora: the item adapter, item embeddings and the target query
                wanted = name.startswith(ADAPTER_PARAMETERS)
            param.requires_grad_(wanted)
            if wanted:
                chosen.append(param)
        return chosen

    def stage_domains(self, stage: str) -> list[str]:
        """The domains whose next items a stage trains on: the sources (pretrain), the target
        (adapt), or every domain (joint; the target alone when training target-only)."""
        if stage == "pretrain":
            return self.sources
        if stage == "joint" and not self.cfg.train.target_only:
            return [d for d in self.split.dataset.domains if d in self.sources or d == self.target]
        return [self.target]

    def keeps_last_epoch(self, stage: str) -> bool:
        """Pretraining (and a stage without validation cases) keeps its last epoch; ``adapt``
        keeps its best epoch by validation NDCG@10."""
        return stage == "pretrain" or not self.has_valid

    def start_stage(self, stage: str, resume_from: Path | None = None) -> StageRun:
        """Sets up a stage's trainable parameters and optimizer, restored from a stage
        checkpoint when ``resume_from`` is given."""
        t = self.cfg.train
        params = self._trainable(stage)
        method = self.adaptation_method(stage)
        discriminator = None
        if method == "dann":
            torch.manual_seed(t.seed + 2)
            discriminator = DomainDiscriminator(self.cfg.model.dim).to(self.model.device)
            params = params + list(discriminator.parameters())
        self.discriminator = discriminator
        # The ID embeddings get their own learning rate and weight decay (an ID model's).
        id_params = [p for n, p in self.model.named_parameters() if n == "item_tower.id_emb.weight"]
        id_set = {id(p) for p in id_params}
        groups: list[dict[str, Any]] = [
            {"params": [p for p in params if id(p) not in id_set]},
        ]
        chosen_ids = [p for p in params if id(p) in id_set]
        if chosen_ids:
            groups.append(
                {"params": chosen_ids, "lr": t.id_lr or t.lr, "weight_decay": t.id_weight_decay}
            )
        optimizer = torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay)
        run = StageRun(stage, StageState(stage), params, optimizer, discriminator)
        if resume_from is not None:
            from crossrec.stage_checkpoint import restore_stage

            restore_stage(resume_from, self, run)
            logger.info(
                "stage=%s target=%s resumed after epoch %d from %s",
                stage, self.target, run.state.epoch, resume_from,
            )  # fmt: skip
        return run

    def adaptation_method(self, stage: str) -> str:
        if stage in ("adapt", "joint") and self.sources and not self.cfg.train.target_only:
            return self.cfg.adaptation.method
        return "none"

    def run_stage(self, stage: str, ctx: TrainContext | None = None) -> StageReport:
        """Runs one stage's epochs (resuming from ``ctx.resume(stage)`` when it gives a
        checkpoint) and leaves the model with the stage's kept weights."""
        ctx = ctx or TrainContext()
        t = self.cfg.train
        domains = self.stage_domains(stage)
        report = StageReport(stage=stage, domains=domains)
        if not domains:
            logger.warning("stage=%s skipped: no source domain besides %s", stage, self.target)
            return report
        stage_idx = np.array([self.model.domain_index[d] for d in domains], dtype=np.int64)
        wanted = np.zeros(len(self.model.domains), dtype=bool)
        wanted[stage_idx] = True

        def keep(part: np.ndarray) -> bool:
            return bool(wanted[self.item_domain[part]].any())

        windows, starts = _windows(self.sequences, self.cfg.model.max_history, keep)
        if not windows:
            logger.warning("stage=%s has no training positions in %s; skipped", stage, domains)
            return report
        run = self.start_stage(stage, ctx.resume(stage))
        method = self.adaptation_method(stage)
        objective = ctx.wrap_model(
            StageObjective(self, wanted, torch.from_numpy(np.flatnonzero(wanted[self.item_domain])),
                           method, run.discriminator)
        )  # fmt: skip
        lengths = np.array([w.size for w in windows])
        max_epochs = t.pretrain_max_epochs if stage == "pretrain" else t.max_epochs
        local_batch = math.ceil(t.batch_size / ctx.world_size)
        steps_per_epoch = math.ceil(len(windows) / t.batch_size)
        if t.max_steps_per_epoch:
            steps_per_epoch = min(steps_per_epoch, t.max_steps_per_epoch)
        total_steps = max(1, steps_per_epoch * max_epochs)
        stage_no = list(t.stages).index(stage) if stage in t.stages else len(t.stages)
        started = time.perf_counter()
        while not run.state.finished and run.state.epoch < max_epochs:
            epoch = run.state.epoch + 1
            epoch_start = time.perf_counter()
            # The batch order is the same on every worker (seeded by epoch, so a resumed run
            # repeats it); negatives and dropout differ per worker.
            rng = np.random.default_rng([t.seed, stage_no, epoch])
            torch.manual_seed(t.seed * 1_000_003 + stage_no * 10_007 + epoch * 101 + ctx.rank)
            batches = length_bucketed_batches(lengths, local_batch, rng)
            batches = batches[: steps_per_epoch * ctx.world_size]
            loader: DataLoader[dict[str, torch.Tensor]] = DataLoader(
                WindowBatches(windows, starts, batches), batch_size=None, shuffle=False
            )
            shard = ctx.wrap_loader(loader)
            self.model.train()
            self.model.invalidate_item_cache()
            sums = torch.zeros(2 if method != "none" else 1)
            steps = positions = 0
            show = sys.stderr.isatty() and ctx.is_chief
            n_local = math.ceil(len(batches) / ctx.world_size)
            desc = f"{stage}[{self.target}] epoch {epoch}"
            for step, batch in enumerate(tqdm(shard, desc=desc, total=n_local, disable=not show)):
                ctx.fault_point(stage, epoch, step, n_local)
                progress = ((epoch - 1) * steps_per_epoch + step) / total_steps
                loss, parts, n_pos = objective(**batch, progress=progress)
                run.optimizer.zero_grad()
                loss.backward()
                run.optimizer.step()
                sums += parts.float().cpu().reshape(-1)
                steps += 1
                positions += int(n_pos)
            train_seconds = time.perf_counter() - epoch_start
            reduced = ctx.all_reduce_sum([*sums.tolist(), float(steps), float(positions)])
            total_steps_done = max(reduced[-2], 1.0)
            record: dict[str, float] = {
                "epoch": float(epoch),
                "loss": reduced[0] / total_steps_done,
            }
            if method != "none":
                record[f"{method}_loss"] = reduced[1] / total_steps_done
            record["samples"] = reduced[-1]
            record["train_seconds"] = train_seconds
            if self.has_valid:
                if stage == "joint" and self.also_targets:
                    for target, score in self.validate_targets(ctx).items():
                        record[f"valid_ndcg@10[{target}]"] = score
                record["valid_ndcg@10"] = self.validate(ctx)
            record["seconds"] = time.perf_counter() - epoch_start
            self._end_epoch(run, record, ctx)
        self.target_states = dict(run.target_best)
        if run.best_state is not None:
            with torch.no_grad():
                for name, param in self.model.named_parameters():
                    if name in run.best_state:
                        param.copy_(run.best_state[name])
        self.model.invalidate_item_cache()
        self.model.stage = stage
        state = run.state
        report.epochs = state.epoch
        report.best_epoch = state.best_epoch
        report.best_valid_ndcg = state.best_valid_ndcg
        report.samples = state.samples
        report.history = list(state.history)
        report.seconds = time.perf_counter() - started
        report.train_seconds = state.train_seconds
        self.model.metrics[f"{stage}_valid_ndcg@10"] = state.best_valid_ndcg
        if stage == "pretrain":
            self.pretrained_state = {
                n: p.detach().clone() for n, p in self.model.named_parameters()
            }
        return report

    def _trained_weights(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def _end_epoch(self, run: StageRun, record: dict[str, float], ctx: TrainContext) -> None:
        """Early stopping and the kept weights; then the context reports / checkpoints."""
        state = run.state
        epoch = int(record["epoch"])
        state.epoch = epoch
        state.samples += int(record["samples"])
        state.train_seconds += record["train_seconds"]
        max_epochs = (
            self.cfg.train.pretrain_max_epochs
            if run.stage == "pretrain"
            else self.cfg.train.max_epochs
        )
        if self.keeps_last_epoch(run.stage):
            # Pretraining learns the source domain: it keeps its last epoch and stops when the
            # training loss stops falling. Target NDCG is only logged: selecting the source
            # model on it favours barely trained models, which adapt worse.
            improved = record["loss"] < state.best_loss * (1 - LOSS_PLATEAU)
            state.best_loss = min(state.best_loss, record["loss"])
            state.best_epoch = epoch
            state.best_valid_ndcg = record.get("valid_ndcg@10", float("nan"))
        else:
            score = record["valid_ndcg@10"]
            improved = not (score <= state.best_valid_ndcg)  # NaN-safe: first epoch wins
            if improved:
                state.best_valid_ndcg, state.best_epoch = score, epoch
                run.best_state = self._trained_weights()
            for target in self.also_targets if run.stage == "joint" else ():
                other = record.get(f"valid_ndcg@10[{target}]", float("nan"))
                if not (other <= run.target_best.get(target, (float("nan"),))[0]):
                    run.target_best[target] = (other, epoch, self._trained_weights())
                    improved = True
        state.bad_epochs = 0 if improved else state.bad_epochs + 1
        state.finished = state.bad_epochs >= self.cfg.train.patience or epoch >= max_epochs
        state.history.append(dict(record))
        logger.info(
            "stage=%s target=%s %s", run.stage, self.target,
            " ".join(f"{k}={v:.4f}" for k, v in record.items()),
        )  # fmt: skip
        if self.on_epoch is not None and ctx.is_chief:
            self.on_epoch({"stage": run.stage, "target": self.target, **record})
        ctx.end_epoch(run, record)

    # ------------------------------------------------------------------ losses
    def _sample_representations(self, domains: list[str], n: int) -> torch.Tensor:
        ids = torch.cat([self.model.domain_items(d) for d in domains])
        pick = ids[torch.randint(ids.numel(), (n,), device=ids.device)]
        tower = self.model.item_tower
        return tower.represent(tower.text_features(pick))

    def adaptation_loss(
        self, method: str, progress: float, discriminator: DomainDiscriminator | None
    ) -> torch.Tensor:
        n = self.cfg.adaptation.samples_per_domain
        source = self._sample_representations(self.sources, n)
        target = self._sample_representations([self.target], n)
        if method == "mmd":
            return mmd_distance(source, target)
        if method == "coral":
            return coral_distance(source, target)
        assert discriminator is not None
        lambd = dann_lambda(progress)
        loss, _ = discriminator.loss_and_accuracy(
            grad_reverse(source, lambd), grad_reverse(target, lambd)
        )
        return loss

    # ------------------------------------------------------------------ ranker
    def fit_hybrid(self) -> list[float]:
        """Counts co-visitation on the towers' training sequences and fits the hybrid ranker
        on the held-out positions of the target domain (`CrossRecModel.fit_hybrid`)."""
        from crossrec.models.hybrid import CoVisitation

        model = self.model
        model.hybrid = None  # each target's own (a copy of another target's model has one)
        model.covis = CoVisitation.from_sequences(self.sequences, model.num_items)
        cases = [(c, t) for c, t in self.ranker_cases if self.item_domain[t] == self.target_idx]
        return model.fit_hybrid(
            cases, self.target, epochs=20 * self.cfg.train.ranker_epochs,
            seed=self.cfg.train.seed + 11,
        )  # fmt: skip

    def fit_ranker(self, max_samples: int = 20000, lr: float = 5e-3) -> list[float]:
        """Fits the ranker with BCE on each training position's top retrieved items (hard
        negatives) plus the true next item."""
        model = self.model
        model.eval()
        model.invalidate_item_cache()
        rng = np.random.default_rng(self.cfg.train.seed + 7)
        contexts: list[np.ndarray] = []
        positives: list[int] = []
        for seq in self.sequences:
            for p in np.flatnonzero(self.item_domain[seq] == self.target_idx):
                if p > 0:
                    contexts.append(seq[:p])
                    positives.append(int(seq[p]))
        if not positives:
            return []
        order = rng.permutation(len(positives))[:max_samples]
        items = model.item_matrix(self.target)
        domain_ids = model.domain_items(self.target)
        n = min(self.cfg.model.ranker_candidates, items.shape[0])
        model.ranker.requires_grad_(True)
        optimizer = torch.optim.Adam(model.ranker.parameters(), lr=lr)
        losses: list[float] = []
        batch = 256
        for _ in range(self.cfg.train.ranker_epochs):
            for start in range(0, order.size, batch):
                idx = order[start : start + batch]
                with torch.no_grad():
                    users = model.encode_users([contexts[i] for i in idx], self.target)
                    top = (users @ items.T).topk(n, dim=1).indices
                    pos = torch.searchsorted(
                        domain_ids, torch.tensor([positives[i] for i in idx], device=items.device)
                    )
                    present = (top == pos.unsqueeze(1)).any(1)
                    top[~present, -1] = pos[~present]
                    labels = (top == pos.unsqueeze(1)).float()
                logits = model.ranker.logits(users.unsqueeze(1), items[top])
                loss = nn.functional.binary_cross_entropy_with_logits(logits, labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
        logger.info("ranker target=%s samples=%d loss=%.4f", self.target, order.size, losses[-1])
        return losses


@torch.no_grad()
def measure_domain_gap(
    model: CrossRecModel, sources: list[str], target: str, n: int = 512, seed: int = 0
) -> dict[str, float]:
    """Source-target gap of item representations: MMD, CORAL distance, and the held-out accuracy
    of a freshly trained domain discriminator (0.5 = indistinguishable)."""
    gen = torch.Generator().manual_seed(seed)
    tower = model.item_tower
    model.eval()

    def halves(domains: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Representations of two disjoint random halves of the domains' items (<= n each)."""
        ids = torch.cat([model.domain_items(d) for d in domains])
        ids = ids[torch.randperm(ids.numel(), generator=gen)]
        half = ids.numel() // 2
        first, second = ids[:half][:n], ids[half:][:n]
        return (
            tower.represent(tower.text_features(first)),
            tower.represent(tower.text_features(second)),
        )

    src_train, src_test = halves(sources)
    tgt_train, tgt_test = halves([target])
    gap = {
        "mmd": float(mmd_distance(src_test, tgt_test)),
        "coral": float(coral_distance(src_test, tgt_test)),
    }
    torch.manual_seed(seed)
    disc = DomainDiscriminator(src_train.shape[1])
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3)
    with torch.enable_grad():
        for _ in range(200):
            loss, _ = disc.loss_and_accuracy(src_train, tgt_train)
            opt.zero_grad()
            loss.backward()
            opt.step()
    _, accuracy = disc.loss_and_accuracy(src_test, tgt_test)
    gap["discriminator_accuracy"] = accuracy
    return gap
