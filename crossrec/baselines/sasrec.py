"""SASRec-style ID-based sequential baseline, trained on the target domain only.

Kang & McAuley, "Self-Attentive Sequential Recommendation" (ICDM 2018), with the softmax
cross-entropy loss that later work found much stronger than the original one-negative BCE
(Klenitskiy & Vasilev, RecSys 2023). One model per target domain sees only that domain's
item-ID sequences, so it knows nothing of other domains nor of item text: it is the "no transfer"
reference point.

Settings (from `model` and `train` config): hidden size ``model.dim`` (64), ``model.num_layers``
(2) pre-LN Transformer blocks with ``model.num_heads`` (2) heads, dropout ``model.dropout`` (0.2),
the last ``model.max_history`` (50) items, AdamW with ``train.lr`` (1e-3) and ``train.batch_size``
(128), up to ``train.max_epochs`` epochs with early stopping on validation NDCG@10 (patience
``train.patience``). Catalogues up to 5,000 items use the full softmax; larger ones a sampled
softmax over 512 uniform negatives shared by the batch.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from crossrec.batching import length_bucketed_batches
from crossrec.config import CrossRecConfig
from crossrec.data.splits import EvalCase, Split
from crossrec.recommender import Recommender

logger = logging.getLogger(__name__)

FULL_SOFTMAX_MAX_ITEMS = 5000
SAMPLED_NEGATIVES = 512


@dataclass
class SASRecSettings:
    dim: int = 64
    num_layers: int = 2
    num_heads: int = 2
    dropout: float = 0.2
    max_len: int = 50
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    max_epochs: int = 50
    patience: int = 3
    seed: int = 0


class SASRecNetwork(nn.Module):
    """Item-ID embeddings + learned positions + causal pre-LN Transformer."""

    def __init__(self, num_items: int, s: SASRecSettings) -> None:
        super().__init__()
        self.item_emb = nn.Embedding(num_items + 1, s.dim, padding_idx=0)
        self.pos_emb = nn.Embedding(s.max_len, s.dim)
        layer = nn.TransformerEncoderLayer(
            s.dim, s.num_heads, dim_feedforward=s.dim * 4, dropout=s.dropout,
            batch_first=True, norm_first=True, activation="gelu",
        )  # fmt: skip
        self.blocks = nn.TransformerEncoder(layer, s.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(s.dim)
        self.dropout = nn.Dropout(s.dropout)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """``seq`` is ``[B, L]`` left-padded item ids (1-based, 0 = pad) -> ``[B, L, dim]``."""
        length = seq.shape[1]
        positions = torch.arange(length, device=seq.device).unsqueeze(0)
        h = self.item_emb(seq) * math.sqrt(self.item_emb.embedding_dim) + self.pos_emb(positions)
        h = self.dropout(h)
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=seq.device), 1)
        h = self.blocks(h, mask=causal)
        return self.norm(h)

    def item_weights(self) -> torch.Tensor:
        return self.item_emb.weight[1:]


def _windows(sequences: list[np.ndarray], max_len: int) -> list[np.ndarray]:
    """Training windows of at most ``max_len + 1`` items (inputs + next-item targets)."""
    out = []
    for seq in sequences:
        if seq.size < 2:
            continue
        end = seq.size
        while end > 1:
            out.append(seq[max(0, end - max_len - 1) : end])
            end -= max_len
    return out


def _left_pad(rows: Sequence[np.ndarray], length: int) -> torch.Tensor:
    batch = torch.zeros(len(rows), length, dtype=torch.long)
    for i, r in enumerate(rows):
        if r.size:
            batch[i, length - r.size :] = torch.from_numpy(r[-length:])
    return batch


class SASRecRecommender(Recommender):
    """One SASRec per target domain, trained on that domain's item-ID sequences only.

    Example:
        >>> model = SASRecRecommender(SASRecSettings(max_epochs=20)); model.fit(split)
    """

    name = "sasrec"

    def __init__(self, settings: SASRecSettings | None = None) -> None:
        self.s = settings or SASRecSettings()
        self.models: dict[str, SASRecNetwork] = {}
        self.history: dict[str, list[dict[str, float]]] = {}
        self._offsets: list[int] = []
        self._domain_index: dict[str, int] = {}
        self._item_domain: np.ndarray | None = None

    @classmethod
    def from_config(cls, cfg: CrossRecConfig) -> SASRecRecommender:
        m, t = cfg.model, cfg.train
        return cls(
            SASRecSettings(
                dim=m.dim,
                num_layers=m.num_layers,
                num_heads=m.num_heads,
                dropout=m.dropout,
                max_len=m.max_history,
                lr=t.lr,
                weight_decay=t.weight_decay,
                batch_size=t.batch_size,
                max_epochs=t.max_epochs,
                patience=t.patience,
                seed=t.seed,
            )  # fmt: skip
        )

    def fit(self, split: Split) -> None:
        from crossrec.evaluation import TargetDomainEvaluator

        ds = split.dataset
        self._offsets = [int(o) for o in ds.offsets]
        self._domain_index = dict(ds.domain_index)
        self._item_domain = ds.item_domain
        evaluator = TargetDomainEvaluator.for_model_selection(split)
        for domain in split.target_domains:
            self._fit_domain(split, domain, evaluator)

    def _fit_domain(self, split: Split, domain: str, evaluator: object) -> None:
        from crossrec.evaluation import TargetDomainEvaluator

        assert isinstance(evaluator, TargetDomainEvaluator)
        s = self.s
        torch.manual_seed(s.seed)
        rng = np.random.default_rng(s.seed)
        d = self._domain_index[domain]
        offset = self._offsets[d]
        n_items = self._offsets[d + 1] - offset
        seqs = [seq - offset + 1 for seq in split.train_domain_sequences(domain)]
        windows = _windows(seqs, s.max_len)
        lengths = np.array([w.size for w in windows])
        net = SASRecNetwork(n_items, s)
        self.models[domain] = net
        opt = torch.optim.AdamW(net.parameters(), lr=s.lr, weight_decay=s.weight_decay)
        full_softmax = n_items <= FULL_SOFTMAX_MAX_ITEMS
        has_valid = any(c.domain == domain for c in split.valid)
        best, best_state, bad_epochs = -1.0, copy.deepcopy(net.state_dict()), 0
        self.history[domain] = []
        show = sys.stderr.isatty()
        for epoch in range(1, s.max_epochs + 1):
            net.train()
            total, steps = 0.0, 0
            batches = length_bucketed_batches(lengths, s.batch_size, rng)
            for batch_idx in tqdm(
                batches, desc=f"sasrec[{domain}] epoch {epoch}", disable=not show
            ):
                rows = [windows[i] for i in batch_idx]
                length = max(r.size for r in rows)
                batch = _left_pad(rows, length)
                inputs, targets = batch[:, :-1], batch[:, 1:]
                hidden = net(inputs)
                valid = (targets > 0) & (inputs > 0)
                h = hidden[valid]
                y = targets[valid] - 1
                weights = net.item_weights()
                if full_softmax:
                    logits = h @ weights.T
                    loss = nn.functional.cross_entropy(logits, y)
                else:
                    negs = torch.from_numpy(rng.integers(0, n_items, SAMPLED_NEGATIVES))
                    pos_logit = (h * weights[y]).sum(-1, keepdim=True)
                    neg_logits = h @ weights[negs].T
                    neg_logits = neg_logits.masked_fill(negs.unsqueeze(0) == y.unsqueeze(1), -1e9)
                    logits = torch.cat([pos_logit, neg_logits], dim=1)
                    loss = nn.functional.cross_entropy(logits, torch.zeros_like(y))
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item()
                steps += 1
            record = {"epoch": float(epoch), "loss": total / max(steps, 1)}
            if has_valid:
                net.eval()
                score = evaluator.ndcg_at(self, 10, "valid", domains=[domain])
                record["valid_ndcg@10"] = score
                if score > best:
                    best, best_state, bad_epochs = score, copy.deepcopy(net.state_dict()), 0
                else:
                    bad_epochs += 1
            self.history[domain].append(record)
            logger.info(
                "sasrec domain=%s %s", domain, " ".join(f"{k}={v:.4f}" for k, v in record.items())
            )
            if has_valid and bad_epochs >= s.patience:
                break
        if has_valid:
            net.load_state_dict(best_state)
        net.eval()

    def score(self, cases: Sequence[EvalCase], domain: str) -> torch.Tensor:
        net = self.models.get(domain)
        if net is None or self._item_domain is None:
            raise RuntimeError(f"no SASRec trained for domain {domain!r}; fit() first")
        d = self._domain_index[domain]
        offset = self._offsets[d]
        rows = []
        for case in cases:
            ctx = case.context[self._item_domain[case.context] == d] - offset + 1
            rows.append(ctx[-self.s.max_len :])
        # Rows without target history still need one position to read from: a pad token.
        length = max(1, max(r.size for r in rows))
        batch = _left_pad(rows, length)
        with torch.no_grad():
            hidden = net(batch)[:, -1]
            return hidden @ net.item_weights().T
