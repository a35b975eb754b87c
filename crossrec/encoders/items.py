"""Item vectors of a whole dataset, through the template, the encoder and the cache."""

from __future__ import annotations

import torch

from crossrec.config import EncoderConfig
from crossrec.data.dataset import CrossDomainDataset
from crossrec.encoders.cache import cache_root
from crossrec.encoders.template import ItemTextTemplate
from crossrec.encoders.text_encoder import TextEncoder, encode_texts_cached


def item_texts(dataset: CrossDomainDataset, template: ItemTextTemplate) -> list[str]:
    """The rendered text of every item, in global index order."""
    return [template.render(item) for item in dataset.items]


def encode_dataset_items(
    dataset: CrossDomainDataset,
    cfg: EncoderConfig,
    encoder: TextEncoder | None = None,
) -> torch.Tensor:
    """``[num_items, dim]`` vectors of every item (cached on disk by model, template and text)."""
    encoder = encoder or TextEncoder.from_config(cfg)
    template = ItemTextTemplate.from_config(cfg)
    return encode_texts_cached(
        encoder,
        item_texts(dataset, template),
        template.key(),
        cache_dir=cache_root(cfg.cache_dir),
        batch_size=cfg.batch_size,
        progress="encoding items",
    )
