"""The item tower: item text -> vector, in `frozen`, `lora` or `full` mode.

* ``frozen``: text vectors are computed once (and cached on disk) by the text encoder; only the
  whitening-MoE adapter and the domain embedding learn.
* ``lora``: PEFT LoRA matrices on the encoder's attention projections learn end to end with the
  adapter; the encoder's own weights stay fixed.
* ``full``: the whole encoder learns with the adapter.

In every mode an item's vector is ``adapter(text vector) + domain_embedding[domain]``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import torch
from torch import nn

from crossrec.encoders.text_encoder import TextEncoder
from crossrec.models.adapters import WhiteningMoEAdapter

logger = logging.getLogger(__name__)

ITEM_MODES = ("frozen", "lora", "full")


class ItemTower(nn.Module):
    """Item vectors from item text.

    Args:
        text_vectors: ``[num_items, text_dim]`` encoder outputs of every item (all modes keep
            them: in ``frozen`` mode they are the input, otherwise the fallback for new items
            when no encoder is attached).
        item_domain: ``[num_items]`` domain index of every item.
        texts: every item's text (needed by ``lora`` / ``full`` to re-encode).
        encoder: the text encoder (needed by ``lora`` / ``full``, and for new items).
    """

    text_vectors: torch.Tensor
    item_domain: torch.Tensor
    id_mask: torch.Tensor

    def __init__(
        self,
        text_vectors: torch.Tensor,
        item_domain: torch.Tensor,
        num_domains: int,
        dim: int,
        *,
        mode: str = "frozen",
        num_experts: int = 8,
        dropout: float = 0.2,
        texts: Sequence[str] | None = None,
        encoder: TextEncoder | None = None,
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.05,
        id_embeddings: bool = False,
        id_init_std: float = 0.02,
        text_part: bool = True,
        id_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if mode not in ITEM_MODES:
            raise ValueError(f"item mode must be one of {ITEM_MODES}, got {mode!r}")
        if mode != "frozen" and (encoder is None or texts is None):
            raise ValueError(f"item mode {mode!r} needs the text encoder and the item texts")
        self.mode = mode
        self.text_part = text_part
        self.id_dropout = id_dropout if text_part else 0.0
        self.register_buffer("text_vectors", text_vectors.float().contiguous())
        self.register_buffer("item_domain", item_domain.long().contiguous())
        self.texts: list[str] = list(texts) if texts is not None else []
        self.adapter = WhiteningMoEAdapter(text_vectors.shape[1], dim, num_experts, dropout)
        self.domain_emb = nn.Embedding(num_domains, dim)
        nn.init.normal_(self.domain_emb.weight, std=0.02)
        # Normal-initialised as an ID model's embeddings, so the ID part can carry the
        # collaborative signal as fully as SASRec's (a zero start starves it); items without
        # training interactions never use theirs (`id_mask`).
        self.id_emb = nn.Embedding(text_vectors.shape[0], dim) if id_embeddings else None
        if self.id_emb is not None:
            nn.init.normal_(self.id_emb.weight, std=id_init_std)
        # 1 for items with training interactions: only they use (and train) an ID embedding.
        self.register_buffer("id_mask", torch.ones(text_vectors.shape[0]))
        self.encoder: TextEncoder | None = None
        if encoder is not None:
            self.attach_encoder(
                encoder, lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout
            )

    def attach_encoder(
        self,
        encoder: TextEncoder,
        *,
        lora_r: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.05,
    ) -> None:
        """Attaches the text encoder; in ``lora`` mode wraps its backbone with PEFT LoRA."""
        if self.mode == "frozen":
            encoder.requires_grad_(False)
            # Kept outside the module tree: frozen weights are not part of the checkpoint.
            object.__setattr__(self, "encoder", encoder)
            return
        # lora/full change the encoder's weights: each tower trains its own copy, on the tower's
        # device, so towers (targets, variants) sharing one loaded encoder never interfere.
        encoder = copy.deepcopy(encoder)
        encoder.device_ = self.text_vectors.device
        encoder.backbone.to(self.text_vectors.device)
        if self.mode == "lora":
            from peft import LoraConfig, PeftModel, get_peft_model

            if isinstance(encoder.backbone, PeftModel):
                raise ValueError("the encoder already carries PEFT adapters; pass a plain encoder")

            targets = _attention_targets(encoder.backbone)
            lora = LoraConfig(
                r=lora_r,
                lora_alpha=lora_alpha,
                lora_dropout=lora_dropout,
                target_modules=targets,
                bias="none",
            )
            encoder.backbone = get_peft_model(encoder.backbone, lora)
        else:
            encoder.requires_grad_(True)
        self.encoder = encoder

    @property
    def num_items(self) -> int:
        return int(self.text_vectors.shape[0])

    def text_features(self, items: torch.Tensor) -> torch.Tensor:
        """Encoder outputs for ``items`` (global indices): cached in ``frozen`` mode, recomputed
        with gradient in ``lora`` / ``full`` mode."""
        if self.mode == "frozen" or self.encoder is None:
            return self.text_vectors[items]
        flat = items.reshape(-1)
        unique, inverse = torch.unique(flat, return_inverse=True)
        texts = [self.texts[int(i)] or " " for i in unique]
        batch = self.encoder.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.encoder.max_length,
            return_tensors="pt",
        ).to(self.text_vectors.device)
        vectors = self.encoder(batch["input_ids"], batch["attention_mask"])
        return vectors[inverse].reshape(*items.shape, -1)

    def represent(self, text_features: torch.Tensor) -> torch.Tensor:
        """The domain-free part of an item vector (what domain adaptation aligns)."""
        return self.adapter(text_features)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """``[..., dim]`` vectors of ``items`` (global indices)."""
        vectors = self.domain_emb(self.item_domain[items])
        if self.text_part:
            vectors = vectors + self.adapter(self.text_features(items))
        if self.id_emb is not None:
            keep = self.id_mask[items]
            if self.training and self.id_dropout > 0:
                # ID dropout: now and then an item is seen by its text alone, so text-only
                # vectors (items never trained on) live on the same scale as the others.
                keep = keep * (torch.rand_like(keep) >= self.id_dropout).to(keep)
            vectors = vectors + self.id_emb(items) * keep.unsqueeze(-1)
        return vectors

    def set_trained_items(self, trained: torch.Tensor) -> None:
        """Marks which items have training interactions; the others are represented by text
        alone (their ID embedding is neither used nor trained)."""
        self.id_mask.copy_(trained.to(self.id_mask))

    @torch.no_grad()
    def refresh_text_vectors(self, batch_size: int = 128) -> None:
        """Recomputes the stored text vectors with the (fine-tuned) encoder, e.g. before export."""
        if self.encoder is None or self.mode == "frozen":
            return
        was_training = self.encoder.training
        self.encoder.eval()
        self.text_vectors.copy_(self.encoder.encode(self.texts, batch_size=batch_size))
        self.encoder.train(was_training)

    def add_items(
        self, text_vectors: torch.Tensor, domain: int, texts: Sequence[str]
    ) -> torch.Tensor:
        """Appends new items (cold start) and returns their global indices."""
        start = self.num_items
        self.text_vectors = torch.cat([self.text_vectors, text_vectors.to(self.text_vectors)])
        extra = torch.full((text_vectors.shape[0],), domain, dtype=torch.long)
        self.item_domain = torch.cat([self.item_domain, extra.to(self.item_domain.device)])
        self.texts.extend(texts)
        self.id_mask = torch.cat(
            [self.id_mask, torch.zeros(text_vectors.shape[0]).to(self.id_mask)]
        )
        if self.id_emb is not None:
            # New items have no interactions: their ID part is zero, as for any unseen item.
            grown = nn.Embedding(self.num_items, self.id_emb.embedding_dim)
            with torch.no_grad():
                grown.weight.zero_()
                grown.weight[:start] = self.id_emb.weight
            self.id_emb = grown.to(self.text_vectors.device)
        return torch.arange(start, self.num_items)


def _attention_targets(backbone: nn.Module) -> list[str]:
    """LoRA target module names for common encoder families (BERT-like and others)."""
    names = {name.rsplit(".", 1)[-1] for name, _ in backbone.named_modules()}
    for candidates in (["query", "value"], ["q_proj", "v_proj"], ["q", "v"], ["q_lin", "v_lin"]):
        if set(candidates) <= names:
            return candidates
    raise ValueError(
        "cannot find attention projections for LoRA in this encoder; known names: query/value, "
        "q_proj/v_proj, q/v, q_lin/v_lin"
    )
