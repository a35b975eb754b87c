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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from crossrec.adaptation import (
    DISTANCES,
    DomainDiscriminator,
    dann_lambda,
    grad_reverse,
)
from crossrec.batching import length_bucketed_batches
from crossrec.config import CrossRecConfig
from crossrec.data.splits import Split
from crossrec.evaluation import TargetDomainEvaluator
from crossrec.models.crossrec_model import CrossRecModel
from crossrec.models.view import ModelView
from crossrec.trainer.context import TrainContext, WindowBatches, _windows
from crossrec.trainer.objective import ADAPTER_PARAMETERS, StageObjective
from crossrec.trainer.state import EpochCallback, StageReport, StageState

logger = logging.getLogger(__name__)


# Pretraining stops once an epoch lowers the training loss by less than this fraction.
LOSS_PLATEAU = 0.002


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
            self.view,
            10,
            "valid",
            domains=[target or self.target],
            shard=(ctx.rank, ctx.world_size),
        )
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
            from crossrec.trainer.checkpoint import restore_stage

            restore_stage(resume_from, self, run)
            logger.info(
                "stage=%s target=%s resumed after epoch %d from %s",
                stage,
                self.target,
                run.state.epoch,
                resume_from,
            )
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
            StageObjective(
                self,
                wanted,
                torch.from_numpy(np.flatnonzero(wanted[self.item_domain])),
                method,
                run.discriminator,
            )
        )
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
            self._restore(run.best_state)
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

    def _restore(self, weights: dict[str, torch.Tensor]) -> None:
        """Copies kept weights back (the caller or the next epoch drops the item cache)."""
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                if name in weights:
                    param.copy_(weights[name])

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
        t = self.cfg.train
        if (
            state.bad_epochs >= t.patience
            and epoch < max_epochs
            and state.lr_drops < t.lr_drops
            and run.best_state is not None
        ):
            # A plateau: back to the best epoch's weights, a smaller step, and on.
            self._restore(run.best_state)
            for group in run.optimizer.param_groups:
                group["lr"] *= t.lr_drop_factor
            state.lr_drops += 1
            state.bad_epochs = 0
            record["lr_drop"] = float(state.lr_drops)
            logger.info(
                "stage=%s target=%s plateau after epoch %d: back to epoch %d, lr x %.2f "
                "(drop %d of %d)",
                run.stage,
                self.target,
                epoch,
                state.best_epoch,
                t.lr_drop_factor,
                state.lr_drops,
                t.lr_drops,
            )
        state.finished = state.bad_epochs >= t.patience or epoch >= max_epochs
        state.history.append(dict(record))
        logger.info(
            "stage=%s target=%s %s",
            run.stage,
            self.target,
            " ".join(f"{k}={v:.4f}" for k, v in record.items()),
        )
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
        if method in DISTANCES:
            return DISTANCES[method](source, target)
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
            cases,
            self.target,
            epochs=20 * self.cfg.train.ranker_epochs,
            seed=self.cfg.train.seed + 11,
        )

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
