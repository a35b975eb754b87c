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
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
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
        dom = self.model.item_tower.item_domain.numpy()
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


class CrossRecTrainer:
    """Trains one `CrossRecModel` for one target domain.

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
        self.item_domain = model.item_tower.item_domain.numpy()
        self.target_idx = model.domain_index[target]
        model.target_domain = target
        model.split_targets = list(split.target_domains)
        model.item_tower.set_trained_items(torch.from_numpy(split.train_item_counts() > 0))
        sequences = split.train_sequences
        if cfg.train.target_only:
            sequences = [s[self.item_domain[s] == self.target_idx] for s in sequences]
        self.sequences = [s for s in sequences if s.size]
        self.view = ModelView(model, target_only=cfg.train.target_only)
        self.evaluator = TargetDomainEvaluator.for_model_selection(split)
        self.has_valid = any(c.domain == target for c in split.valid)
        self.discriminator: DomainDiscriminator | None = None
        self.pretrained_state: dict[str, torch.Tensor] | None = None

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
        if self.cfg.train.ranker_epochs:
            self.fit_ranker()
        self.model.eval()
        return reports

    def validate(self) -> float:
        self.model.eval()
        self.model.invalidate_item_cache()
        score = self.evaluator.ndcg_at(self.view, 10, "valid", domains=[self.target])
        self.model.invalidate_item_cache()
        return score

    # ------------------------------------------------------------------ stages
    def _trainable(self, stage: str) -> list[nn.Parameter]:
        finetune = self.cfg.train.finetune if stage == "adapt" else "full"
        chosen: list[nn.Parameter] = []
        for name, param in self.model.named_parameters():
            if name.startswith("ranker."):
                wanted = False
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
                wanted = name.startswith(
                    ("item_tower.adapter", "item_tower.domain_emb", "item_tower.id_emb",
                     "user_tower.target_query", "user_tower.out")
                )  # fmt: skip
            param.requires_grad_(wanted)
            if wanted:
                chosen.append(param)
        return chosen

    def run_stage(self, stage: str) -> StageReport:
        t = self.cfg.train
        domains = self.sources if stage == "pretrain" else [self.target]
        if not domains:
            logger.warning("stage=%s skipped: no source domain besides %s", stage, self.target)
            return StageReport(stage=stage, domains=[])
        stage_idx = np.array([self.model.domain_index[d] for d in domains], dtype=np.int64)
        wanted = np.zeros(len(self.model.domains), dtype=bool)
        wanted[stage_idx] = True

        def keep(part: np.ndarray) -> bool:
            return bool(wanted[self.item_domain[part]].any())

        windows, starts = _windows(self.sequences, self.cfg.model.max_history, keep)
        report = StageReport(stage=stage, domains=domains)
        if not windows:
            logger.warning("stage=%s has no training positions in %s; skipped", stage, domains)
            return report
        seed = t.seed + (0 if stage == "pretrain" else 1)
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        params = self._trainable(stage)
        method = self.cfg.adaptation.method if stage == "adapt" and self.sources else "none"
        if method == "dann":
            self.discriminator = DomainDiscriminator(self.cfg.model.dim)
            params = params + list(self.discriminator.parameters())
        optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
        lengths = np.array([w.size for w in windows])
        pool = torch.from_numpy(np.flatnonzero(wanted[self.item_domain]))
        max_epochs = t.pretrain_max_epochs if stage == "pretrain" else t.max_epochs
        best_state: dict[str, torch.Tensor] | None = None
        best_loss = float("inf")
        bad = 0
        started = time.perf_counter()
        steps_per_epoch = math.ceil(len(windows) / t.batch_size)
        if t.max_steps_per_epoch:
            steps_per_epoch = min(steps_per_epoch, t.max_steps_per_epoch)
        total_steps = max(1, steps_per_epoch * max_epochs)
        for epoch in range(1, max_epochs + 1):
            epoch_start = time.perf_counter()
            self.model.train()
            self.model.invalidate_item_cache()
            batches = length_bucketed_batches(lengths, t.batch_size, rng)[:steps_per_epoch]
            losses: list[float] = []
            da_values: list[float] = []
            show = sys.stderr.isatty()
            for step, batch in enumerate(
                tqdm(batches, desc=f"{stage}[{self.target}] epoch {epoch}", disable=not show)
            ):
                progress = ((epoch - 1) * steps_per_epoch + step) / total_steps
                loss, n_pos = self._step_loss([windows[i] for i in batch],
                                              [starts[i] for i in batch], wanted, pool)  # fmt: skip
                if method != "none":
                    da = self._adaptation_loss(method, progress)
                    da_values.append(float(da.detach()))
                    loss = loss + self.cfg.adaptation.weight * da
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
                report.samples += n_pos
            record: dict[str, float] = {
                "epoch": float(epoch),
                "loss": float(np.mean(losses)) if losses else float("nan"),
                "seconds": time.perf_counter() - epoch_start,
            }
            if da_values:
                record[f"{method}_loss"] = float(np.mean(da_values))
            report.epochs = epoch
            if self.has_valid:
                record["valid_ndcg@10"] = self.validate()
            keep_last = stage == "pretrain" or not self.has_valid
            if keep_last:
                # Pretraining learns the source domain: it keeps its last epoch and stops when
                # the training loss stops falling. Target NDCG is only logged: selecting the
                # source model on it favours barely trained models, which adapt worse.
                improved = record["loss"] < best_loss * (1 - LOSS_PLATEAU)
                best_loss = min(best_loss, record["loss"])
                report.best_epoch = epoch
                report.best_valid_ndcg = record.get("valid_ndcg@10", float("nan"))
            else:
                score = record["valid_ndcg@10"]
                improved = not (score <= report.best_valid_ndcg)  # NaN-safe: first epoch wins
                if improved:
                    report.best_valid_ndcg, report.best_epoch = score, epoch
                    best_state = {n: p.detach().clone() for n, p in self.model.named_parameters()}
            bad = 0 if improved else bad + 1
            report.history.append(record)
            logger.info(
                "stage=%s target=%s %s", stage, self.target,
                " ".join(f"{k}={v:.4f}" for k, v in record.items()),
            )  # fmt: skip
            if self.on_epoch is not None:
                self.on_epoch({"stage": stage, "target": self.target, **record})
            if bad >= t.patience:
                break
        if best_state is not None:
            with torch.no_grad():
                for name, param in self.model.named_parameters():
                    param.copy_(best_state[name])
        self.model.invalidate_item_cache()
        self.model.stage = stage
        report.seconds = time.perf_counter() - started
        self.model.metrics[f"{stage}_valid_ndcg@10"] = report.best_valid_ndcg
        if stage == "pretrain":
            self.pretrained_state = {
                n: p.detach().clone() for n, p in self.model.named_parameters()
            }
        return report

    # ------------------------------------------------------------------ losses
    def _step_loss(
        self,
        rows: list[np.ndarray],
        starts: list[bool],
        wanted: np.ndarray,
        pool: torch.Tensor,
    ) -> tuple[torch.Tensor, int]:
        model = self.model
        n_max = max(r.size for r in rows)
        hist = torch.zeros(len(rows), max(1, n_max - 1), dtype=torch.long)
        targets = torch.full((len(rows), n_max), -1, dtype=torch.long)
        lengths = torch.zeros(len(rows), dtype=torch.long)
        for b, r in enumerate(rows):
            hist[b, : r.size - 1] = torch.from_numpy(r[:-1])
            targets[b, : r.size] = torch.from_numpy(r)
            lengths[b] = r.size - 1
        states = model.user_states(hist, lengths)[:, :n_max]
        mask = targets >= 0
        mask &= torch.from_numpy(wanted)[model.item_tower.item_domain[targets.clamp(min=0)]]
        not_start = torch.tensor([not s for s in starts])
        mask[:, 0] &= ~not_start
        positives = targets[mask]
        domains = model.item_tower.item_domain[positives]
        users = model.user_tower.user_vector(states[mask], domains)
        k = min(self.cfg.train.num_negatives, pool.numel())
        negatives = pool[torch.randint(pool.numel(), (k,))]
        candidates, inverse = torch.unique(torch.cat([positives, negatives]), return_inverse=True)
        labels = inverse[: positives.numel()]
        logits = users @ model.item_vectors(candidates).T / self.cfg.model.temperature
        cand_domains = model.item_tower.item_domain[candidates]
        logits = logits.masked_fill(cand_domains.unsqueeze(0) != domains.unsqueeze(1), -1e4)
        return nn.functional.cross_entropy(logits, labels), int(positives.numel())

    def _sample_representations(self, domains: list[str], n: int) -> torch.Tensor:
        ids = torch.cat([self.model.domain_items(d) for d in domains])
        pick = ids[torch.randint(ids.numel(), (n,))]
        tower = self.model.item_tower
        return tower.represent(tower.text_features(pick))

    def _adaptation_loss(self, method: str, progress: float) -> torch.Tensor:
        n = self.cfg.adaptation.samples_per_domain
        source = self._sample_representations(self.sources, n)
        target = self._sample_representations([self.target], n)
        if method == "mmd":
            return mmd_distance(source, target)
        if method == "coral":
            return coral_distance(source, target)
        assert self.discriminator is not None
        lambd = dann_lambda(progress)
        loss, _ = self.discriminator.loss_and_accuracy(
            grad_reverse(source, lambd), grad_reverse(target, lambd)
        )
        return loss

    # ------------------------------------------------------------------ ranker
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
                    pos = torch.searchsorted(domain_ids, torch.tensor([positives[i] for i in idx]))
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
