"""`measure_domain_gap`: how well a discriminator tells source from target item vectors."""

from __future__ import annotations

import torch

from crossrec.adaptation import (
    DomainDiscriminator,
    coral_distance,
    mmd_distance,
)
from crossrec.models.crossrec_model import CrossRecModel


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
