"""SASRec ID-based sequential baselines: per target domain (`sasrec`) and over mixed sequences
(`sasrec-mixed`).

Kang & McAuley, "Self-Attentive Sequential Recommendation" (ICDM 2018), trained with the softmax
cross-entropy loss that later work found much stronger than the original one-negative BCE
(Klenitskiy & Vasilev, RecSys 2023), in RecBole's form: item + position embeddings, LayerNorm and
dropout, post-LN blocks (attention, GELU feed-forward of 4x the hidden size), normal(0, 0.02)
initialisation, no sqrt(d) scaling of the embeddings.

* `SASRecRecommender` (``sasrec``): one model per target domain on that domain's item-ID
  sequences only, so it knows nothing of other domains nor of item text: the "no transfer"
  reference point.
* `MixedSASRecRecommender` (``sasrec-mixed``): one model over every user's merged cross-domain
  sequence (one shared ID space), trained on next-item prediction at every position; when the
  next item is in domain ``d`` the softmax runs over ``d``'s items only, and a target domain is
  scored by the logits of its items, from the case's full mixed context.

Training: every position of windows of at most ``max_len + 1`` items (positions count from the
window's first item, so with the causal mask this equals training on every prefix), full softmax
cross-entropy over the domain's catalogue (computed in chunks of positions when the logits would
be large), or above ``full_softmax_max_items`` a sampled softmax over ``num_negatives``
popularity-sampled items with log-Q correction. Early stopping on validation NDCG@10 (after
``min_epochs``, ``patience`` epochs without a new best), keeping the best epoch. Settings come
from ``baselines.sasrec`` (`SASRecConfig`); dropout 0.5 and 128 windows per step were chosen on
Food-Kitchen validation.

On a CPU shared with other jobs, ``torch.set_num_threads(1)`` (or ``OMP_NUM_THREADS=1``) can make
training several times faster: idle intra-op threads wait on each other.
"""

from __future__ import annotations

import copy
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812
from tqdm.auto import tqdm

from crossrec.batching import length_bucketed_batches
from crossrec.config import CrossRecConfig, SASRecConfig
from crossrec.data.splits import EvalCase, Split
from crossrec.recommender import Recommender

logger = logging.getLogger(__name__)

# Logits the full softmax computes at once (64 MB of float32, one buffer reused by every step):
# more positions are taken a chunk at a time, so memory stays bounded whatever the catalogue and
# batch size.
MAX_LOGITS_PER_CHUNK = 1 << 24


class _Block(nn.Module):
    """Post-LN Transformer block: causal self-attention, then a GELU feed-forward."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attn_dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout)
        )
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, length, dim = x.shape
        qkv = self.qkv(x).view(b, length, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.attn_dropout if self.training else 0.0
        )
        attn = attn.transpose(1, 2).reshape(b, length, dim)
        x = self.norm1(x + self.dropout(self.proj(attn)))
        return self.norm2(x + self.ff(x))


class SASRecNetwork(nn.Module):
    """Item-ID embeddings + learned positions + causal post-LN Transformer (RecBole's SASRec).

    Token 0 is padding; rows are left-padded and positions count from each row's first item.
    """

    def __init__(self, num_tokens: int, s: SASRecConfig) -> None:
        super().__init__()
        self.item_emb = nn.Embedding(num_tokens, s.dim, padding_idx=0)
        self.pos_emb = nn.Embedding(s.max_len, s.dim)
        self.norm = nn.LayerNorm(s.dim)
        self.dropout = nn.Dropout(s.dropout)
        self.blocks = nn.ModuleList(
            _Block(s.dim, s.num_heads, s.dropout) for _ in range(s.num_layers)
        )
        self.apply(self._init)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """``seq`` is ``[B, L]`` left-padded token ids (0 = pad) -> ``[B, L, dim]``."""
        length = seq.shape[1]
        real = seq > 0
        positions = (real.long().cumsum(1) - 1).clamp(min=0, max=self.pos_emb.num_embeddings - 1)
        h = self.dropout(self.norm(self.item_emb(seq) + self.pos_emb(positions)))
        # Causal, padding keys hidden; every position may attend to itself, so pad rows stay finite.
        causal = torch.ones(length, length, dtype=torch.bool, device=seq.device).tril()
        eye = torch.eye(length, dtype=torch.bool, device=seq.device)
        allowed = (causal & (real.unsqueeze(1) | eye)).unsqueeze(1)  # [B, 1, L, L]
        for block in self.blocks:
            h = block(h, allowed)
        return h


@dataclass
class _OutputGroup:
    """A softmax over the token range ``[lo, hi)`` (one domain's items)."""

    domain: str
    lo: int
    hi: int
    full: bool
    log_q: torch.Tensor | None = None  # sampled softmax: log sampling probabilities
    probs: np.ndarray | None = None

    @property
    def size(self) -> int:
        return self.hi - self.lo


def _windows(sequences: Sequence[np.ndarray], max_len: int) -> list[np.ndarray]:
    """Training windows of at most ``max_len + 1`` items (inputs + next-item targets)."""
    out = []
    for seq in sequences:
        end = seq.size
        while end > 1:
            out.append(seq[max(0, end - max_len - 1) : end])
            end -= max_len
    return out


def _left_pad(rows: Sequence[np.ndarray], length: int) -> torch.Tensor:
    batch = torch.zeros(len(rows), length, dtype=torch.long)
    for i, r in enumerate(rows):
        if r.size:
            batch[i, length - min(r.size, length) :] = torch.from_numpy(r[-length:])
    return batch


class _FullSoftmaxCE(torch.autograd.Function):
    """Summed cross-entropy of ``h @ weights.T`` against ``y``, fused: logits are made a chunk of
    positions at a time in ``buffer`` (reused across steps), turned into the softmax in place,
    and both gradients are accumulated right away, so no ``positions x items`` tensor is made."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        h: torch.Tensor,
        weights: torch.Tensor,
        y: torch.Tensor,
        buffer: torch.Tensor,
    ) -> torch.Tensor:
        n, v = h.shape[0], weights.shape[0]
        rows = max(1, min(n, buffer.numel() // v))
        if buffer.numel() < rows * v:
            buffer = torch.empty(rows * v, dtype=h.dtype, device=h.device)
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros_like(weights)
        total = h.new_zeros(())
        for start in range(0, n, rows):
            hc, yc = h[start : start + rows], y[start : start + rows]
            logits = buffer[: hc.shape[0] * v].view(hc.shape[0], v)
            torch.mm(hc, weights.T, out=logits)
            picked = logits.gather(1, yc.unsqueeze(1)).squeeze(1)
            peak = logits.amax(1, keepdim=True)
            logits.sub_(peak).exp_()
            norm = logits.sum(1, keepdim=True)
            total += (peak.squeeze(1) + norm.log().squeeze(1) - picked).sum()
            logits.div_(norm)  # softmax: d loss / d logits = softmax - one-hot
            logits[torch.arange(hc.shape[0], device=h.device), yc] -= 1.0
            torch.mm(logits, weights, out=grad_h[start : start + rows])
            grad_w.addmm_(logits.T, hc)
        ctx.save_for_backward(grad_h, grad_w)
        return total

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        grad_h, grad_w = ctx.saved_tensors  # type: ignore[attr-defined]
        return grad_h * grad_out, grad_w * grad_out, None, None


def _full_softmax_sum(
    h: torch.Tensor, weights: torch.Tensor, y: torch.Tensor, buffer: torch.Tensor
) -> torch.Tensor:
    """Summed full-softmax cross-entropy of ``h @ weights.T`` against ``y`` (``buffer``: a
    float scratch tensor for the logits, reused across calls)."""
    out = _FullSoftmaxCE.apply(h, weights, y, buffer)
    assert isinstance(out, torch.Tensor)
    return out


def _sampled_softmax_sum(
    h: torch.Tensor,
    weights: torch.Tensor,
    y: torch.Tensor,
    group: _OutputGroup,
    num_negatives: int,
    rng: np.random.Generator,
) -> torch.Tensor:
    """Summed sampled-softmax cross-entropy: the positive against ``num_negatives`` items drawn
    by popularity (shared by the batch), every logit corrected by ``-log q``."""
    assert group.log_q is not None
    assert group.probs is not None
    negs = torch.from_numpy(rng.choice(group.size, num_negatives, p=group.probs))
    pos = (h * weights[y]).sum(-1, keepdim=True) - group.log_q[y].unsqueeze(1)
    neg = h @ weights[negs].T - group.log_q[negs].unsqueeze(0)
    neg = neg.masked_fill(negs.unsqueeze(0) == y.unsqueeze(1), float("-inf"))
    logits = torch.cat([pos, neg], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(y), reduction="sum")


class _SASRecBase(Recommender):
    """The training loop and scoring shared by the per-domain and mixed SASRec."""

    def __init__(self, settings: SASRecConfig | None = None) -> None:
        self.s = settings or SASRecConfig()
        self.models: dict[str, SASRecNetwork] = {}
        self.history: dict[str, list[dict[str, float]]] = {}
        self.loss_kind: dict[str, str] = {}
        self.fit_seconds: dict[str, float] = {}
        self._offsets: list[int] = []
        self._domain_index: dict[str, int] = {}
        self._item_domain: np.ndarray | None = None

    @classmethod
    def from_config(cls, cfg: CrossRecConfig) -> _SASRecBase:
        """The baseline with ``cfg.baselines.sasrec``'s settings."""
        return cls(cfg.baselines.sasrec.model_copy())

    def _remember(self, split: Split) -> None:
        ds = split.dataset
        self._offsets = [int(o) for o in ds.offsets]
        self._domain_index = dict(ds.domain_index)
        self._item_domain = ds.item_domain

    def _group(self, split: Split, domain: str, lo: int) -> _OutputGroup:
        """The output softmax of ``domain``, whose items are tokens ``lo..lo + n - 1``."""
        d = self._domain_index[domain]
        n = self._offsets[d + 1] - self._offsets[d]
        full = n <= self.s.full_softmax_max_items
        self.loss_kind[domain] = "full" if full else "sampled"
        group = _OutputGroup(domain, lo, lo + n, full)
        if not full:
            counts = split.train_item_counts()[self._offsets[d] : self._offsets[d + 1]]
            probs = (counts + 1.0) / float((counts + 1.0).sum())
            group.probs = probs
            group.log_q = torch.from_numpy(np.log(probs)).float()
        logger.info(
            "%s[%s]: %d items, %s softmax",
            self.name,
            domain,
            n,
            "full" if full else f"sampled ({self.s.num_negatives} negatives, log-Q)",
        )
        return group

    def _train(
        self,
        split: Split,
        tag: str,
        num_tokens: int,
        windows: list[np.ndarray],
        groups: list[_OutputGroup],
        eval_domains: list[str],
    ) -> None:
        """Trains one network on ``windows`` and installs the best epoch of each of
        ``eval_domains`` (by its validation NDCG@10) as ``self.models[domain]``."""
        from crossrec.evaluation import TargetDomainEvaluator

        s = self.s
        start_time = time.perf_counter()
        torch.manual_seed(s.seed)
        rng = np.random.default_rng(s.seed)
        net = SASRecNetwork(num_tokens, s)
        for domain in eval_domains:
            self.models[domain] = net
        token_group = torch.full((num_tokens,), -1, dtype=torch.long)
        for gi, g in enumerate(groups):
            token_group[g.lo : g.hi] = gi
        opt = torch.optim.AdamW(net.parameters(), lr=s.lr, weight_decay=s.weight_decay)
        buffer = torch.empty(MAX_LOGITS_PER_CHUNK) if any(g.full for g in groups) else None
        lengths = np.array([w.size for w in windows])
        evaluator = TargetDomainEvaluator.for_model_selection(split)
        watched = [d for d in eval_domains if any(c.domain == d for c in split.valid)]
        best = dict.fromkeys(watched, -1.0)
        bad = dict.fromkeys(watched, 0)
        best_state = {d: copy.deepcopy(net.state_dict()) for d in watched}
        self.history[tag] = []
        show = sys.stderr.isatty()
        for epoch in range(1, s.max_epochs + 1):
            epoch_start = time.perf_counter()
            net.train()
            total, count = 0.0, 0
            batches = length_bucketed_batches(lengths, s.batch_size, rng)
            for batch_idx in tqdm(batches, desc=f"{tag} epoch {epoch}", disable=not show):
                rows = [windows[i] for i in batch_idx]
                batch = _left_pad(rows, max(r.size for r in rows))
                inputs, targets = batch[:, :-1], batch[:, 1:]
                hidden = net(inputs)
                keep = (targets > 0) & (inputs > 0)
                h, y = hidden[keep], targets[keep]
                which = token_group[y]
                weights = net.item_emb.weight
                loss_sum = h.new_zeros(())
                for gi, g in enumerate(groups):
                    sel = which == gi
                    if not bool(sel.any()):
                        continue
                    w, hy, yy = weights[g.lo : g.hi], h[sel], y[sel] - g.lo
                    if buffer is not None and g.full:
                        loss_sum = loss_sum + _full_softmax_sum(hy, w, yy, buffer)
                    else:
                        loss_sum = loss_sum + _sampled_softmax_sum(
                            hy, w, yy, g, s.num_negatives, rng
                        )
                loss = loss_sum / max(int(y.numel()), 1)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss_sum.item())
                count += int(y.numel())
            record = {"epoch": float(epoch), "loss": total / max(count, 1)}
            record["train_seconds"] = time.perf_counter() - epoch_start
            net.eval()
            for domain in watched:
                score = evaluator.ndcg_at(self, 10, "valid", domains=[domain])
                record["valid_ndcg@10" if len(watched) == 1 else f"valid_ndcg@10[{domain}]"] = score
                if score > best[domain]:
                    best[domain], bad[domain] = score, 0
                    best_state[domain] = copy.deepcopy(net.state_dict())
                else:
                    bad[domain] += 1
            record["seconds"] = time.perf_counter() - epoch_start
            self.history[tag].append(record)
            logger.info("%s %s", tag, " ".join(f"{k}={v:.4f}" for k, v in record.items()))
            if watched and epoch >= s.min_epochs and all(bad[d] >= s.patience for d in watched):
                break
        for domain in eval_domains:
            if domain in best_state:
                chosen = copy.deepcopy(net)
                chosen.load_state_dict(best_state[domain])
                chosen.eval()
                self.models[domain] = chosen
        net.eval()
        self.fit_seconds[tag] = time.perf_counter() - start_time
        logger.info(
            "%s: %d epochs in %.1fs, best valid ndcg@10 %s",
            tag,
            len(self.history[tag]),
            self.fit_seconds[tag],
            {d: round(v, 4) for d, v in best.items()},
        )

    def _rows(self, cases: Sequence[EvalCase], domain: str) -> list[np.ndarray]:
        """Each case's context as token ids, oldest first."""
        raise NotImplementedError

    def _token_range(self, domain: str) -> tuple[int, int]:
        raise NotImplementedError

    def score(self, cases: Sequence[EvalCase], domain: str) -> torch.Tensor:
        net = self.models.get(domain)
        if net is None or self._item_domain is None:
            raise RuntimeError(f"no {self.name} trained for domain {domain!r}; fit() first")
        rows = [r[-self.s.max_len :] for r in self._rows(cases, domain)]
        # Rows without history still need one position to read from: a pad token.
        batch = _left_pad(rows, max(1, max(r.size for r in rows)))
        lo, hi = self._token_range(domain)
        with torch.no_grad():
            hidden = net(batch)[:, -1]
            return hidden @ net.item_emb.weight[lo:hi].T


class SASRecRecommender(_SASRecBase):
    """One SASRec per target domain, trained on that domain's item-ID sequences only.

    Example:
        >>> model = SASRecRecommender(SASRecConfig(max_epochs=20)); model.fit(split)
    """

    name = "sasrec"

    def fit(self, split: Split) -> None:
        self._remember(split)
        for domain in split.target_domains:
            offset = self._offsets[self._domain_index[domain]]
            group = self._group(split, domain, lo=1)
            seqs = [seq - offset + 1 for seq in split.train_domain_sequences(domain)]
            windows = _windows(seqs, self.s.max_len)
            self._train(split, domain, group.hi, windows, [group], [domain])

    def _rows(self, cases: Sequence[EvalCase], domain: str) -> list[np.ndarray]:
        assert self._item_domain is not None
        d = self._domain_index[domain]
        offset = self._offsets[d]
        return [c.context[self._item_domain[c.context] == d] - offset + 1 for c in cases]

    def _token_range(self, domain: str) -> tuple[int, int]:
        d = self._domain_index[domain]
        return 1, 1 + self._offsets[d + 1] - self._offsets[d]


class MixedSASRecRecommender(_SASRecBase):
    """One SASRec over every user's merged cross-domain sequence, with a per-domain softmax.

    Example:
        >>> model = MixedSASRecRecommender(SASRecConfig(max_epochs=20)); model.fit(split)
    """

    name = "sasrec-mixed"

    def fit(self, split: Split) -> None:
        self._remember(split)
        ds = split.dataset
        groups = [
            self._group(split, name, lo=self._offsets[d] + 1) for d, name in enumerate(ds.domains)
        ]
        windows = _windows([seq + 1 for seq in split.train_sequences], self.s.max_len)
        self._train(split, "mixed", ds.num_items + 1, windows, groups, list(split.target_domains))

    def _rows(self, cases: Sequence[EvalCase], domain: str) -> list[np.ndarray]:
        return [c.context + 1 for c in cases]

    def _token_range(self, domain: str) -> tuple[int, int]:
        d = self._domain_index[domain]
        return self._offsets[d] + 1, self._offsets[d + 1] + 1
