"""Item towers: the text encoder, item-text templates and the on-disk embedding cache."""

from crossrec.encoders.cache import EmbeddingCache
from crossrec.encoders.template import ItemTextTemplate
from crossrec.encoders.text_encoder import DEFAULT_MODEL, TextEncoder, resolve_model_dir

__all__ = [
    "DEFAULT_MODEL",
    "EmbeddingCache",
    "ItemTextTemplate",
    "TextEncoder",
    "resolve_model_dir",
]
