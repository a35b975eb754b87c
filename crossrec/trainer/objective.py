"""`StageObjective`: the loss of a training stage (softmax / InfoNCE next-item prediction,
plus an optional domain-adaptation loss) and what each fine-tuning mode trains."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from crossrec.adaptation import (
    DomainDiscriminator,
)

if TYPE_CHECKING:
    from crossrec.trainer.loop import CrossRecTrainer

# What adapter-only fine-tuning trains (in `adapt`, and in online rounds): the item adapter,
# the item and domain embeddings, and the user tower's target query and output layers.
ADAPTER_PARAMETERS = (
    "item_tower.adapter",
    "item_tower.domain_emb",
    "item_tower.id_emb",
    "user_tower.target_query",
    "user_tower.out",
)


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
