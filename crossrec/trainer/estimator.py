"""`CrossRecRecommender`: trains one `CrossRecModel` per target domain behind the common
`Recommender` interface, so it is evaluated exactly like the baselines."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from crossrec.config import RUNTIME_TRAIN_FIELDS, CrossRecConfig
from crossrec.data.splits import EvalCase, Split
from crossrec.encoders.text_encoder import TextEncoder
from crossrec.models.crossrec_model import CrossRecModel
from crossrec.models.view import ModelView
from crossrec.recommender import Recommender
from crossrec.trainer.loop import CrossRecTrainer
from crossrec.trainer.state import EpochCallback, StageReport

logger = logging.getLogger(__name__)

# Pretraining on the source domains does not depend on how `adapt` is done (adaptation loss,
# fine-tuning mode), so variants that share it in one process reuse it.
_PRETRAINED: dict[str, tuple[dict[str, torch.Tensor], StageReport]] = {}
_PRETRAINED_MAX = 4


def pretrain_key(cfg: CrossRecConfig, split: Split, target: str, encoder_key: str) -> str:
    """Everything a pretrain run depends on."""
    ds = split.dataset
    train = cfg.train.model_dump(exclude={"finetune", *RUNTIME_TRAIN_FIELDS})
    digest = hashlib.sha256()
    for seq in split.train_sequences:
        digest.update(seq.astype(np.int64).tobytes() + b"|")
    digest.update(str(sorted(split.cold_items)).encode())
    parts = {
        "data": [ds.name, ds.num_items, ds.num_interactions, split.protocol, digest.hexdigest()],
        "encoder_weights": encoder_key,
        "target": target,
        "model": cfg.model.model_dump(),
        "train": train,
        "encoder": cfg.encoder.model_dump(),
        "sources": cfg.adaptation.source_domains,
        "eval": cfg.eval.model_dump(),
    }
    return json.dumps(parts, sort_keys=True, default=str)


class CrossRecRecommender(Recommender):
    """One model per target domain of the split; the other domains are its sources.

    Args:
        cfg: the whole config (model, train, adaptation, encoder sections are used).
        name: the name reported in result rows (e.g. ``crossrec-transfer-dann``).
        rank: score with retrieve+rank instead of retrieval only.

    Example:
        >>> rec = CrossRecRecommender(cfg, name="crossrec-transfer"); rec.fit(split)
    """

    name = "crossrec"

    def __init__(
        self,
        cfg: CrossRecConfig,
        name: str | None = None,
        *,
        rank: bool | None = None,
        encoder: TextEncoder | None = None,
        on_epoch: EpochCallback | None = None,
        reuse_pretraining: bool = True,
    ) -> None:
        self.cfg = cfg
        if name:
            self.name = name  # type: ignore[misc]
        # By default the hybrid ranker orders what it was trained for (the linear ranker is
        # for serving only: it does not beat retrieval offline).
        if rank is None:
            rank = cfg.model.ranker == "hybrid" and cfg.train.ranker_epochs > 0
        self.rank = rank
        self.encoder = encoder
        self.on_epoch = on_epoch
        self.reuse_pretraining = reuse_pretraining
        self.models: dict[str, CrossRecModel] = {}
        self.reports: dict[str, list[StageReport]] = {}

    def shares_one_run(self, split: Split) -> bool:
        """Whether one joint run serves every target domain: the joint recipe learns every
        domain at once, so only the kept epoch differs per target."""
        t = self.cfg.train
        return list(t.stages) == ["joint"] and not t.target_only and len(split.target_domains) > 1

    def fit(self, split: Split) -> None:
        encoder = self.encoder or TextEncoder.from_config(self.cfg.encoder)
        if self.shares_one_run(split):
            self._fit_shared(split, encoder)
            return
        for target in split.target_domains:
            torch.manual_seed(self.cfg.train.seed)
            model = CrossRecModel.for_dataset(split.dataset, self.cfg, encoder)
            trainer = CrossRecTrainer(model, split, self.cfg, target, on_epoch=self.on_epoch)
            key = pretrain_key(self.cfg, split, target, encoder.settings_key())
            reuse = self.reuse_pretraining and "pretrain" in self.cfg.train.stages
            self.reports[target] = trainer.fit(_PRETRAINED.get(key) if reuse else None)
            if reuse and key not in _PRETRAINED:
                pre = next(r for r in self.reports[target] if r.stage == "pretrain")
                if len(_PRETRAINED) >= _PRETRAINED_MAX:
                    _PRETRAINED.pop(next(iter(_PRETRAINED)))
                _PRETRAINED[key] = (trainer.pretrained_state or {}, pre)
            self.models[target] = model

    def _fit_shared(self, split: Split, encoder: TextEncoder) -> None:
        """One joint run for every target; each target keeps the weights of its own best
        validation epoch (and fits its own ranker)."""
        first, *others = split.target_domains
        torch.manual_seed(self.cfg.train.seed)
        model = CrossRecModel.for_dataset(split.dataset, self.cfg, encoder)
        trainer = CrossRecTrainer(
            model, split, self.cfg, first, on_epoch=self.on_epoch, also_targets=others
        )
        self.reports[first] = trainer.fit()
        self.models[first] = model
        for target in others:
            copy_ = copy.deepcopy(model)
            kept = trainer.target_states.get(target)
            if kept is not None:
                score, epoch, weights = kept
                copy_.load_state_dict(weights, strict=False)
                copy_.metrics["joint_valid_ndcg@10"] = score
                copy_.metrics["joint_best_epoch"] = epoch
            other = CrossRecTrainer(copy_, split, self.cfg, target)
            other.fit_rankers()
            copy_.eval()
            report = copy.deepcopy(self.reports[first][-1])
            if kept is not None:
                report.best_valid_ndcg, report.best_epoch = kept[0], kept[1]
            self.reports[target] = [report]
            self.models[target] = copy_

    def view(self, domain: str) -> ModelView:
        model = self.models.get(domain)
        if model is None:
            raise RuntimeError(f"no crossrec model trained for domain {domain!r}; fit() first")
        return ModelView(model, target_only=self.cfg.train.target_only, rank=self.rank)

    def score(self, cases: Sequence[EvalCase], domain: str) -> torch.Tensor:
        return self.view(domain).score(cases, domain)

    def summary(self) -> dict[str, Any]:
        return {
            target: [
                {
                    "stage": r.stage,
                    "epochs": r.epochs,
                    "best_epoch": r.best_epoch,
                    "best_valid_ndcg@10": r.best_valid_ndcg,
                    "samples": r.samples,
                    "seconds": round(r.seconds, 1),
                }
                for r in reports
            ]
            for target, reports in self.reports.items()
        }
