"""`CrossRecModel`: item tower + user tower + ranker, with self-describing checkpoints."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from crossrec import __version__
from crossrec.config import CrossRecConfig
from crossrec.data.dataset import CrossDomainDataset
from crossrec.encoders.cache import cache_root
from crossrec.encoders.items import item_texts
from crossrec.encoders.template import ItemTextTemplate
from crossrec.encoders.text_encoder import TextEncoder, encode_texts_cached
from crossrec.errors import CrossRecError
from crossrec.models.hybrid import (
    FEATURES,
    CandidateSizes,
    CoVisitation,
    HybridRanker,
    candidate_columns,
    fit_hybrid_ranker,
)
from crossrec.models.item_tower import ItemTower
from crossrec.models.ranker import Ranker
from crossrec.models.user_tower import UserTower

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"
ITEMS_FILE = "items.jsonl"
COVIS_FILE = "covisitation.safetensors"
CARD_FILE = "README.md"
# The hybrid ranker is not fitted on fewer cases than this (it would learn noise).
MIN_RANKER_CASES = 50


@dataclass
class Recommendation:
    """One recommended item: its id, its text (the title for most data) and its score."""

    item_id: str
    title: str
    score: float


# A history entry: ``(domain, item_id)``, or a bare item id that only one domain has.
HistoryItem = tuple[str, str] | str


def item_fingerprint(keys: Sequence[tuple[str, str]], texts: Sequence[str]) -> str:
    """Identifies an item catalogue: its (domain, item_id) keys and texts, in order."""
    digest = hashlib.sha256()
    for (domain, item_id), text in zip(keys, texts, strict=True):
        digest.update(f"{domain}\x1f{item_id}\x1f{text}\x1e".encode())
    return digest.hexdigest()[:20]


def _rank_match(x: torch.Tensor, y: torch.Tensor, fit_on: torch.Tensor) -> torch.Tensor:
    """Places each entry where ``x`` ranks it among the entries ``fit_on``, on the ``y``
    scale: an entry that ``x`` puts k-th among them gets just above the k-th highest ``y``
    (per row; below the lowest when ``x`` puts it last). Entries that tie on that slot keep
    their ``x`` order."""
    low = torch.finfo(y.dtype).min
    ref = x.masked_fill(~fit_on, float("-inf"))
    slot = (ref.unsqueeze(1) > x.unsqueeze(2)).sum(-1)  # [B, C]: reference entries above
    ordered = y.masked_fill(~fit_on, low).sort(dim=1, descending=True).values
    n = fit_on.sum(1, keepdim=True)
    last = ordered.gather(1, (n - 1).clamp(min=0))
    spread = (ordered[:, :1] - last).clamp(min=1.0) * 1e-4
    tie_break = spread * torch.sigmoid(x - x.mean(1, keepdim=True))
    above = ordered.gather(1, slot.clamp(max=ordered.shape[1] - 1)) + tie_break
    return torch.where(slot < n, above, last - spread * 2 + tie_break)


class CrossRecModel(nn.Module):
    """The cross-domain recommender.

    Example:
        >>> model = CrossRecModel.for_dataset(dataset, cfg)
        >>> scores = model.score([context], "films")  # [1, num films]
        >>> model.save_pretrained("ckpt/"); CrossRecModel.from_pretrained("ckpt/")
    """

    def __init__(
        self,
        cfg: CrossRecConfig,
        domains: Sequence[str],
        item_keys: Sequence[tuple[str, str]],
        texts: Sequence[str],
        text_vectors: torch.Tensor,
        *,
        encoder: TextEncoder | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.domains = list(domains)
        self.domain_index = {d: i for i, d in enumerate(self.domains)}
        self.item_keys = [tuple(k) for k in item_keys]
        self.key_index = {k: i for i, k in enumerate(self.item_keys)}
        item_domain = torch.tensor([self.domain_index[d] for d, _ in self.item_keys])
        m = cfg.model
        self.item_tower = ItemTower(
            text_vectors,
            item_domain,
            len(self.domains),
            m.dim,
            mode=m.item_mode,
            num_experts=m.num_experts,
            dropout=m.dropout,
            texts=texts,
            encoder=encoder,
            lora_r=m.lora_r,
            lora_alpha=m.lora_alpha,
            lora_dropout=m.lora_dropout,
            id_embeddings=m.id_embeddings,
            id_init_std=m.id_init_std,
            text_part=m.text_part,
            id_dropout=m.id_dropout,
        )
        self.user_tower = UserTower(
            m.dim, len(self.domains), m.max_history, m.num_layers, m.num_heads, m.dropout
        )
        self.ranker = Ranker(m.dim, retrieval_scale=1.0 / m.temperature)
        # log(1 / temperature) of the softmax over cosine scores; learned unless
        # model.learn_temperature is false (the trainer decides what trains).
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / m.temperature)))
        self.stage = "init"
        self.target_domain: str | None = None
        self.split_targets: list[str] = []
        self.metrics: dict[str, Any] = {}
        self._item_cache: dict[int, torch.Tensor] = {}
        # The hybrid ranker and the co-visitation counts it reads (set by the trainer when
        # model.ranker=hybrid; saved beside the weights).
        self.covis: CoVisitation | None = None
        self.hybrid: HybridRanker | None = None
        self.candidate_sizes = CandidateSizes(
            m.hybrid_tower_candidates, m.hybrid_covis_candidates, m.hybrid_popular_candidates
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def for_dataset(
        cls,
        dataset: CrossDomainDataset,
        cfg: CrossRecConfig,
        encoder: TextEncoder | None = None,
        *,
        text_vectors: torch.Tensor | None = None,
    ) -> CrossRecModel:
        """A fresh model over ``dataset``'s catalogue. Text vectors are ``text_vectors`` when
        given (e.g. computed by a distributed encoding job), else read from / added to the
        embedding cache. The encoder is loaded only when needed (lora/full, or no vectors)."""
        template = ItemTextTemplate.from_config(cfg.encoder)
        texts = item_texts(dataset, template)
        if text_vectors is None:
            encoder = encoder or TextEncoder.from_config(cfg.encoder)
            text_vectors = encode_texts_cached(
                encoder,
                texts,
                template.key(),
                cache_dir=cache_root(cfg.encoder.cache_dir),
                batch_size=cfg.encoder.batch_size,
                progress="encoding items",
            )
        elif text_vectors.shape[0] != len(texts):
            raise CrossRecError(
                f"text_vectors has {text_vectors.shape[0]} rows for {len(texts)} items"
            )
        if encoder is None and cfg.model.item_mode != "frozen":
            encoder = TextEncoder.from_config(cfg.encoder)
        keys = [(it.domain, it.item_id) for it in dataset.items]
        return cls(cfg, dataset.domains, keys, texts, text_vectors, encoder=encoder)

    @property
    def device(self) -> torch.device:
        return self.item_tower.text_vectors.device

    def to_device(self, device: torch.device | str) -> CrossRecModel:
        """Moves the model (and a trainable encoder) to ``device``."""
        device = torch.device(device)
        self.to(device)
        encoder = self.item_tower.encoder
        if encoder is not None and self.item_tower.mode != "frozen":
            encoder.device_ = device
        self.invalidate_item_cache()
        return self

    # ------------------------------------------------------------------ items
    @property
    def num_items(self) -> int:
        return self.item_tower.num_items

    def domain_items(self, domain: str | int) -> torch.Tensor:
        d = self.domain_index[domain] if isinstance(domain, str) else domain
        return torch.nonzero(self.item_tower.item_domain == d).squeeze(1)

    @property
    def cosine(self) -> bool:
        """Whether scores are cosines (unit-norm user and item vectors) or dot products."""
        return self.cfg.model.similarity == "cosine"

    def score_scale(self) -> torch.Tensor:
        """What a score is multiplied by in the softmax: 1 / temperature (learned, at most 100)
        for cosine scores, 1 for dot products."""
        if not self.cosine:
            return torch.ones((), device=self.device)
        return self.logit_scale.exp().clamp(max=100.0)

    def _unit(self, vectors: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(vectors, dim=-1) if self.cosine else vectors

    def invalidate_item_cache(self) -> None:
        self._item_cache.clear()

    @torch.no_grad()
    def item_matrix(self, domain: str | int, batch_size: int = 4096) -> torch.Tensor:
        """Vectors of every item of ``domain`` as scored (unit norm for cosine scores; cached
        until the weights change)."""
        d = self.domain_index[domain] if isinstance(domain, str) else domain
        if d not in self._item_cache:
            ids = self.domain_items(d)
            parts = [
                self.item_tower(ids[s : s + batch_size]) for s in range(0, ids.numel(), batch_size)
            ]
            self._item_cache[d] = self._unit(torch.cat(parts))
        return self._item_cache[d]

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """Vectors of ``items`` (global indices) as scored: unit norm for cosine scores."""
        return self._unit(self.item_tower(items))

    # ------------------------------------------------------------------ users
    def _history(self, contexts: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        max_len = self.cfg.model.max_history
        rows = [np.asarray(c, dtype=np.int64)[-max_len:] for c in contexts]
        length = max(1, max(r.size for r in rows))
        items = torch.zeros(len(rows), length, dtype=torch.long)
        lengths = torch.zeros(len(rows), dtype=torch.long)
        for b, r in enumerate(rows):
            items[b, : r.size] = torch.from_numpy(r)
            lengths[b] = r.size
        return items.to(self.device), lengths.to(self.device)

    def user_states(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """States ``[B, L + 1, dim]`` of right-padded histories ``[B, L]`` (global indices)."""
        vectors = self.item_tower(items)
        return self.user_tower(vectors, self.item_tower.item_domain[items], lengths)

    def encode_users(
        self,
        contexts: Sequence[np.ndarray],
        domain: str,
        query_text_vectors: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """User vectors for ``domain`` (unit norm for cosine scores) from histories (global
        item indices) and, optionally, a text query per user (encoder outputs
        ``[B, text_dim]``).

        A query is mapped into item space by the item tower, as if it described an item of
        ``domain``; a user with no history is that vector, otherwise it is added to the
        history's user vector. So a query finds on-topic items with or without history.
        """
        d = self.domain_index[domain]
        dom = torch.full((len(contexts),), d, dtype=torch.long, device=self.device)
        items, lengths = self._history(contexts)
        states = self.user_states(items, lengths)
        rows = torch.arange(len(contexts), device=self.device)
        users = self.user_tower.user_vector(states[rows, lengths], dom, normalize=self.cosine)
        if query_text_vectors is None:
            return users
        query_text_vectors = query_text_vectors.to(self.device)
        query = self.item_tower.represent(query_text_vectors) + self.item_tower.domain_emb(dom)
        has_history = (lengths > 0).unsqueeze(1).to(users.dtype)
        if not self.cosine:
            return query + has_history * users
        query = nn.functional.normalize(query, dim=-1)
        return nn.functional.normalize(query + has_history * users, dim=-1)

    @torch.no_grad()
    def hybrid_features(
        self,
        contexts: Sequence[np.ndarray],
        domain: str,
        scores: torch.Tensor,
        ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Candidate columns ``[B, C]`` (into ``ids``, default ``domain``'s items), their
        first-occurrence mask and features ``[B, C, len(FEATURES)]``, from the two-tower
        ``scores`` ``[B, len(ids)]``."""
        if self.covis is None:
            raise CrossRecError("this model has no co-visitation counts (model.ranker=hybrid)")
        ids = self.domain_items(domain) if ids is None else ids
        ids_np = ids.cpu().numpy()
        knn_np, trans_np = self.covis.scores(contexts, ids_np, self.cfg.model.max_history)
        knn = torch.from_numpy(np.log1p(knn_np)).to(scores)
        trans = torch.from_numpy(np.log1p(trans_np)).to(scores)
        counts = np.zeros(ids_np.size, dtype=np.float32)
        known = ids_np < self.covis.num_items
        counts[known] = self.covis.counts[ids_np[known]]
        pop = torch.from_numpy(np.log1p(counts)).to(scores)
        b = len(contexts)
        seen = torch.zeros(b, ids.numel(), dtype=torch.bool, device=scores.device)
        texts = nn.functional.normalize(self.item_tower.text_vectors.float(), dim=-1)
        hist = torch.zeros(b, texts.shape[1], device=scores.device)
        last = torch.zeros_like(hist)
        length = torch.zeros(b, device=scores.device)
        share = torch.zeros(b, device=scores.device)
        d = self.domain_index[domain]
        item_domain = self.item_tower.item_domain
        for i, ctx in enumerate(contexts):
            ctx_t = torch.as_tensor(np.asarray(ctx, dtype=np.int64), device=scores.device)
            if not ctx_t.numel():
                continue
            seen[i] = torch.isin(ids, ctx_t)
            recent = ctx_t[-5:]
            hist[i] = texts[recent].mean(0)
            last[i] = texts[ctx_t[-1]]
            length[i] = float(np.log1p(ctx_t.numel()))
            share[i] = (item_domain[ctx_t] == d).float().mean()
        hist = nn.functional.normalize(hist, dim=-1)
        cols, first = candidate_columns(scores, knn, trans, pop, self.candidate_sizes, seen)
        cand_text = texts[ids[cols]]  # [B, C, text_dim]
        c = cols.shape[1]
        features = torch.stack(
            [
                scores.gather(1, cols) * self.score_scale(),
                knn.gather(1, cols),
                trans.gather(1, cols),
                pop[cols],
                (cand_text * hist.unsqueeze(1)).sum(-1),
                (cand_text * last.unsqueeze(1)).sum(-1),
                (pop[cols] == 0).float(),
                length.unsqueeze(1).expand(b, c),
                share.unsqueeze(1).expand(b, c),
            ],
            dim=-1,
        )
        assert features.shape[-1] == len(FEATURES)
        return cols, first, features

    def fit_hybrid(
        self,
        cases: Sequence[tuple[np.ndarray, int]],
        domain: str,
        *,
        epochs: int = 40,
        seed: int = 0,
        warm_start: bool = False,
        batch: int = 256,
    ) -> list[float]:
        """Fits the hybrid ranker on ``cases`` ``(context, item)`` of ``domain``: positions the
        towers did not train on. A softmax over each case's candidates; cases whose item is
        not among them cannot teach anything and are left out. With fewer than
        `MIN_RANKER_CASES` learnable cases the model keeps the ranker it has (none: retrieval
        order). ``warm_start`` continues from the current ranker (an online round's few
        cases), else a fresh one is fitted. Needs `covis`."""
        self.eval()
        self.invalidate_item_cache()
        ids = self.domain_items(domain)
        items = self.item_matrix(domain)
        feats, masks, labels = [], [], []
        with torch.no_grad():
            for start in range(0, len(cases), batch):
                chunk = cases[start : start + batch]
                contexts = [c for c, _ in chunk]
                scores = self.encode_users(contexts, domain) @ items.T
                cols, first, features = self.hybrid_features(contexts, domain, scores)
                wanted = torch.tensor([t for _, t in chunk], device=ids.device)
                hit = (ids[cols] == wanted.unsqueeze(1)) & first
                keep = hit.any(1)
                feats.append(features[keep])
                masks.append(first[keep])
                labels.append(hit[keep].float().argmax(1))
        learnable = sum(int(f.shape[0]) for f in feats)
        if learnable < MIN_RANKER_CASES:
            logger.warning(
                "hybrid ranker domain=%s: %d cases to learn from (fewer than %d); %s",
                domain,
                learnable,
                MIN_RANKER_CASES,
                "kept as it was" if self.hybrid is not None else "scoring by retrieval only",
            )
            return []
        x, m, y = torch.cat(feats), torch.cat(masks), torch.cat(labels)
        init = self.hybrid if warm_start else None
        hybrid, losses = fit_hybrid_ranker(
            x,
            m,
            y,
            hidden=self.cfg.model.hybrid_hidden,
            epochs=epochs,
            batch=batch,
            seed=seed,
            init=init,
        )
        self.hybrid = hybrid
        self.metrics["hybrid_candidate_recall"] = x.shape[0] / max(len(cases), 1)
        logger.info(
            "hybrid ranker domain=%s cases=%d with the item among candidates=%d loss=%.4f",
            domain,
            len(cases),
            x.shape[0],
            losses[-1],
        )
        return losses

    @torch.no_grad()
    def hybrid_logits(self, features: torch.Tensor) -> torch.Tensor:
        """The hybrid ranker's logits ``[B, C]`` for candidate ``features``."""
        assert self.hybrid is not None
        logits = self.hybrid(features)
        cold = features[..., FEATURES.index("cold")] > 0
        if cold.any():
            # Items never trained on have no co-visitation or popularity evidence and the
            # ranker never saw one as an answer: each keeps the place its two-tower score gives
            # it among the warm candidates, on the ranker's scale (a least-squares line from
            # tower to ranker scores put them just below the top: synthetic cold-item slice,
            # validation Recall@10 0.011 with the line, 0.096 by rank).
            tower = features[..., FEATURES.index("tower")]
            logits = torch.where(cold, _rank_match(tower, logits, ~cold), logits)
        return logits

    @torch.no_grad()
    def score(
        self,
        contexts: Sequence[np.ndarray],
        domain: str,
        *,
        rank: bool = False,
        query_text_vectors: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``[B, items of domain]`` scores; with ``rank`` the candidates are re-ordered by the
        ranker (the hybrid ranker when the model has one, else the top
        ``model.ranker_candidates`` by retrieval) and stay above every other item."""
        users = self.encode_users(contexts, domain, query_text_vectors)
        items = self.item_matrix(domain)
        scores = users @ items.T
        if rank and self.hybrid is not None and query_text_vectors is None:
            # (A text query is ranked by the towers: the hybrid ranker learned on histories.)
            cols, _, features = self.hybrid_features(contexts, domain, scores)
            logits = self.hybrid_logits(features)
            above = scores.max(dim=1, keepdim=True).values.clamp(min=1.0) + 2.0
            shifted = logits - logits.min(dim=1, keepdim=True).values + above
            scores.scatter_(1, cols, shifted)
            return scores
        if rank:
            n = min(self.cfg.model.ranker_candidates, items.shape[0])
            top = scores.topk(n, dim=1).indices
            # Ranker logits, shifted above every retrieval score, keep their full resolution:
            # no artificial ties from a saturated sigmoid.
            logits = self.ranker.logits(users.unsqueeze(1), items[top])
            above = scores.max(dim=1, keepdim=True).values.clamp(min=1.0) + 2.0
            shifted = logits - logits.min(dim=1, keepdim=True).values + above
            scores.scatter_(1, top, shifted)
        return scores

    # ------------------------------------------------------------------ recommendations
    def recommend(
        self,
        history: Sequence[HistoryItem] = (),
        *,
        query: str | None = None,
        domain: str | None = None,
        k: int = 10,
        exclude_seen: bool = True,
        rank: bool | None = None,
    ) -> list[Recommendation]:
        """Top-``k`` items of ``domain`` (default: the checkpoint's target domain) for a user's
        history, oldest first, and/or a free-text ``query`` (cold start: either may be empty,
        not both).

        History entries are ``(domain, item_id)`` pairs, or bare item ids where only one domain
        has that id. ``rank`` (default: when the model has a hybrid ranker and no query is given)
        re-scores the candidates through the ranker, as evaluation does. Scores are the ranker's
        logits or the towers' scores: larger is better, comparable within one call only.

        Example:
            >>> model = CrossRecModel.from_pretrained("runs/food-kitchen/checkpoints/food")
            >>> model.recommend([("kitchen", "B000Q8ZSRM"), ("food", "B0009F3QKW")], k=5)
        """
        domain = domain or self.target_domain or self.domains[-1]
        if domain not in self.domain_index:
            raise CrossRecError(
                f"domain {domain!r} is not in this checkpoint; it has: {', '.join(self.domains)}"
            )
        if k < 1:
            raise CrossRecError(f"k must be at least 1, got {k}")
        if not history and not query:
            raise CrossRecError("give a history, a query, or both")
        context = np.array(
            [self._history_index(entry, n) for n, entry in enumerate(history)], dtype=np.int64
        )
        if self.cfg.train.target_only:
            context = self.within_domain([context], domain)[0]
        query_vectors = self.encode_text([query]) if query else None
        if rank is None:
            rank = self.hybrid is not None and query_vectors is None
        with torch.no_grad():
            scores = self.score([context], domain, rank=rank, query_text_vectors=query_vectors)[0]
        ids = self.domain_items(domain).to(scores.device)
        if exclude_seen and context.size:
            seen = torch.isin(ids, torch.from_numpy(context).to(ids.device))
            scores = scores.masked_fill(seen, float("-inf"))
        top = scores.topk(min(k, scores.numel()))
        out = []
        for value, col in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            if not math.isfinite(value):
                break  # fewer unseen items than k
            gid = int(ids[col])
            out.append(Recommendation(self.item_keys[gid][1], self.item_tower.texts[gid], value))
        return out

    def within_domain(self, contexts: Sequence[np.ndarray], domain: str) -> list[np.ndarray]:
        """Each context cut to its items of ``domain`` (what a target-only model reads)."""
        d = self.domain_index[domain]
        item_domain = self.item_tower.item_domain.cpu().numpy()
        return [c[item_domain[c] == d] for c in contexts]

    def _history_index(self, entry: HistoryItem, position: int) -> int:
        """The global index of one history entry (see :meth:`recommend`)."""
        if isinstance(entry, str):
            found = [d for d in self.domains if (d, entry) in self.key_index]
            if len(found) == 1:
                return self.key_index[(found[0], entry)]
            if not found:
                raise CrossRecError(f"history[{position}]: unknown item {entry!r}")
            raise CrossRecError(
                f"history[{position}]: item {entry!r} exists in {', '.join(found)}; "
                "give it as a (domain, item_id) pair"
            )
        if not isinstance(entry, (tuple, list)) or len(entry) != 2:
            raise CrossRecError(
                f"history[{position}]: expected (domain, item_id) or an item id, got {entry!r}"
            )
        key = (str(entry[0]), str(entry[1]))
        if key not in self.key_index:
            raise CrossRecError(
                f"history[{position}]: unknown item {key[1]!r} in domain {key[0]!r}"
            )
        return self.key_index[key]

    # ------------------------------------------------------------------ cold start
    def encoder(self) -> TextEncoder:
        """The text encoder, loaded from ``encoder.model`` on first use if none is attached."""
        if self.item_tower.encoder is None:
            self.item_tower.attach_encoder(TextEncoder.from_config(self.cfg.encoder))
        assert self.item_tower.encoder is not None
        return self.item_tower.encoder

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Encoder outputs for free text (queries, profiles, new items)."""
        return self.encoder().encode(list(texts), batch_size=self.cfg.encoder.batch_size)

    def add_items(self, domain: str, item_ids: Sequence[str], texts: Sequence[str]) -> torch.Tensor:
        """Adds never-seen items from their text alone; returns their global indices."""
        self._check_new_items(domain, item_ids, texts)
        return self.add_item_vectors(domain, item_ids, texts, self.encode_text(texts))

    def _check_new_items(self, domain: str, item_ids: Sequence[str], texts: Sequence[str]) -> None:
        if domain not in self.domain_index:
            raise CrossRecError(f"unknown domain {domain!r}; known: {', '.join(self.domains)}")
        if len(item_ids) != len(texts):
            raise CrossRecError(f"{len(item_ids)} item ids but {len(texts)} texts")
        if len(set(item_ids)) != len(item_ids):
            raise CrossRecError("item ids to add must be distinct")
        clash = [i for i in item_ids if (domain, i) in self.key_index]
        if clash:
            raise CrossRecError(f"items already in domain {domain!r}: {clash[:5]}")

    def add_item_vectors(
        self,
        domain: str,
        item_ids: Sequence[str],
        texts: Sequence[str],
        text_vectors: torch.Tensor,
    ) -> torch.Tensor:
        """Adds never-seen items whose encoder outputs are already computed (by a serving
        encoder replica, say); returns their global indices."""
        self._check_new_items(domain, item_ids, texts)
        if text_vectors.shape != (len(item_ids), self.item_tower.text_vectors.shape[1]):
            raise CrossRecError(
                f"text vectors of shape {tuple(text_vectors.shape)} for {len(item_ids)} items; "
                f"expected width {self.item_tower.text_vectors.shape[1]}"
            )
        ids = self.item_tower.add_items(text_vectors, self.domain_index[domain], texts)
        for gid, item_id in zip(ids.tolist(), item_ids, strict=True):
            self.item_keys.append((domain, item_id))
            self.key_index[(domain, item_id)] = gid
        self.invalidate_item_cache()
        return ids

    def set_item_text(self, gid: int, text: str, text_vector: torch.Tensor) -> None:
        """Replaces the text (and its encoder output) of an item already in the catalogue."""
        tower = self.item_tower
        with torch.no_grad():
            tower.text_vectors[gid] = text_vector.to(tower.text_vectors)
        tower.texts[gid] = text
        self.invalidate_item_cache()

    @torch.no_grad()
    def text_item_vectors(self, text_vectors: torch.Tensor, domain: str) -> torch.Tensor:
        """Unit-norm vectors of texts as if they described items of ``domain`` (what the item
        tower gives a new item of that text, without adding it)."""
        tower = self.item_tower
        dom = torch.full((text_vectors.shape[0],), self.domain_index[domain], device=self.device)
        vectors = tower.represent(text_vectors.to(self.device).float()) + tower.domain_emb(dom)
        return nn.functional.normalize(vectors, dim=-1)

    # ------------------------------------------------------------------ artifacts
    def fingerprint(self) -> str:
        return item_fingerprint(self.item_keys, self.item_tower.texts)  # type: ignore[arg-type]

    def _weights_to_save(self) -> dict[str, torch.Tensor]:
        state = self.state_dict()
        if self.item_tower.mode == "lora":
            # The base encoder comes from encoder.model at load time; keep only LoRA weights.
            state = {k: v for k, v in state.items() if ".encoder." not in k or "lora_" in k}
        return {k: v.detach().contiguous() for k, v in state.items()}

    def save_pretrained(self, directory: str | Path) -> Path:
        """Writes ``model.safetensors``, ``items.jsonl`` and ``manifest.json`` to ``directory``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.item_tower.refresh_text_vectors()
        save_file(self._weights_to_save(), str(out / WEIGHTS_FILE))
        if self.covis is not None:
            save_file(self.covis.tensors(), str(out / COVIS_FILE))
        with (out / ITEMS_FILE).open("w", encoding="utf-8") as handle:
            for (domain, item_id), text in zip(self.item_keys, self.item_tower.texts, strict=True):
                handle.write(
                    json.dumps({"domain": domain, "item_id": item_id, "text": text}) + "\n"
                )
        manifest = {
            "crossrec_version": __version__,
            "stage": self.stage,
            "target_domain": self.target_domain,
            "split_targets": self.split_targets,
            "encoder": self.cfg.encoder.model,
            "metrics": self.metrics,
            "domains": self.domains,
            "num_items": self.num_items,
            "item_index_fingerprint": self.fingerprint(),
            "item_mode": self.item_tower.mode,
            "hybrid_ranker": self.hybrid is not None,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "config": self.cfg.public_dump(),
        }
        (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        (out / CARD_FILE).write_text(self.model_card(), encoding="utf-8")
        return out

    def model_card(self) -> str:
        """A Markdown model card (``README.md`` of a checkpoint): data, metrics, config, intended
        use and limits."""
        cfg, m, t = self.cfg, self.cfg.model, self.cfg.train
        counts = torch.bincount(self.item_tower.item_domain.cpu(), minlength=len(self.domains))
        catalogue = ", ".join(f"{d} {int(n):,}" for d, n in zip(self.domains, counts, strict=True))
        target = self.target_domain or "every domain"
        recipe = (
            "target-domain history only (no transfer)"
            if t.target_only
            else (" -> ".join(t.stages) + " over every domain's sequences")
        )
        lines = [
            f"# crossrec model: {target}",
            "",
            f"A crossrec {__version__} checkpoint that recommends **{target}** items from a "
            "user's cross-domain history and/or a text query.",
            "",
            "```python",
            "from crossrec import CrossRecModel",
            "",
            'model = CrossRecModel.from_pretrained("path/to/this/folder")',
            f'model.recommend([("{self.item_keys[0][0]}", "{self.item_keys[0][1]}")], k=10)',
            "```",
            "",
            "## Data",
            "",
            f"- Format `{cfg.data.format}`"
            + (f", from `{cfg.data.path}`" if cfg.data.path else ""),
            f"- Domains and items: {catalogue}",
            f"- Target domains of its split: {', '.join(self.split_targets) or target}; "
            f"stage `{self.stage}`",
            "",
            "## Metrics",
            "",
        ]
        if self.metrics:
            lines += ["| metric | value |", "|---|---|"]
            for key in sorted(self.metrics):
                value = self.metrics[key]
                shown = f"{value:.4f}" if isinstance(value, float) else str(value)
                lines.append(f"| {key} | {shown} |")
        else:
            lines.append(
                "None recorded with this checkpoint (evaluate it: `crossrec evaluate "
                "--checkpoint DIR`)."
            )
        lines += [
            "",
            "## Config",
            "",
            f"- Recipe: {recipe}; loss `{t.loss}` ({t.num_negatives:,} sampled negatives above "
            f"{t.full_softmax_max_items:,} items)",
            f"- Items: text from `{cfg.encoder.model}` ({m.item_mode})"
            + (" + learned ID embeddings" if m.id_embeddings else "")
            + f"; user tower: {m.num_layers} layers, dim {m.dim}, last {m.max_history} items",
            f"- Ranking: `{m.ranker}`" + (" (fitted)" if self.hybrid is not None else ""),
            "- The full config is in `manifest.json` (`config`).",
            "",
            "## Intended use",
            "",
            "Top-k candidates for users of the catalogue above, from their recent items in any of "
            "its domains, and for new users from a text query. Serve it with `crossrec serve` or "
            "call `recommend` in Python.",
            "",
            "## Limits",
            "",
            "- Only the items in `items.jsonl` can be recommended; new items need `add_items` "
            "(text only, no ID embedding yet), and they rank below items with learned IDs.",
            "- Trained on logged interactions: it reproduces their popularity and selection "
            "biases; it knows nothing of availability, price or safety.",
            "- Scores are comparable within one request only; they are not probabilities.",
            "",
        ]
        return "\n".join(lines)

    def load_weights(self, weights: dict[str, torch.Tensor], source: str | Path) -> None:
        """Loads weights saved by :meth:`save_pretrained` (from ``source``, for errors) onto
        this model's device."""
        missing, unexpected = self.load_state_dict(
            {k: v.to(self.device) for k, v in weights.items()}, strict=False
        )
        if self.item_tower.mode == "lora":
            # Base encoder weights come from encoder.model; the LoRA weights must be present.
            missing = [k for k in missing if ".encoder." not in k or "lora_" in k]
        if missing or unexpected:
            raise CrossRecError(
                f"checkpoint {source} does not match the model: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
        self.invalidate_item_cache()

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, encoder: TextEncoder | None = None
    ) -> CrossRecModel:
        """Loads a checkpoint written by :meth:`save_pretrained`. ``frozen`` checkpoints need the
        text encoder only for free text (queries, new items); ``lora`` / ``full`` rebuild it."""
        src = Path(directory)
        manifest_path = src / MANIFEST_FILE
        if not manifest_path.is_file():
            raise CrossRecError(f"{src} is not a crossrec checkpoint (no {MANIFEST_FILE})")
        manifest = json.loads(manifest_path.read_text())
        cfg = CrossRecConfig.model_validate(manifest["config"])
        keys, texts = [], []
        with (src / ITEMS_FILE).open(encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                keys.append((row["domain"], row["item_id"]))
                texts.append(row["text"])
        weights = load_file(str(src / WEIGHTS_FILE))
        if cfg.model.item_mode != "frozen" and encoder is None:
            encoder = TextEncoder.from_config(cfg.encoder)
        model = cls(
            cfg,
            manifest["domains"],
            keys,
            texts,
            weights["item_tower.text_vectors"],
            encoder=encoder,
        )
        if manifest.get("hybrid_ranker"):
            if not (src / COVIS_FILE).is_file():
                raise CrossRecError(f"{src} has a hybrid ranker but no {COVIS_FILE}")
            model.covis = CoVisitation.from_tensors(load_file(str(src / COVIS_FILE)))
            model.hybrid = HybridRanker(len(FEATURES), cfg.model.hybrid_hidden)
        model.load_weights(weights, src)
        model.stage = manifest.get("stage", "unknown")
        model.target_domain = manifest.get("target_domain")
        model.split_targets = list(manifest.get("split_targets") or [])
        model.metrics = manifest.get("metrics", {})
        if model.fingerprint() != manifest["item_index_fingerprint"]:
            raise CrossRecError(f"{src}/{ITEMS_FILE} does not match the manifest's fingerprint")
        model.eval()
        return model
