"""Named configurations of the cross-domain model, as reported in benchmarks and the demo.

Each variant is a list of ``--set`` overrides on top of the run's config; `configs/` holds the
same variants as YAML files.
"""

from __future__ import annotations

from crossrec.config import CrossRecConfig, with_overrides
from crossrec.errors import CrossRecError

VARIANTS: dict[str, list[str]] = {
    "crossrec-target-only": ["train.target_only=true", "train.stages=[joint]"],
    "crossrec-transfer": [],
    "crossrec-pretrain-adapt": ["train.stages=[pretrain, adapt]"],
    "crossrec-transfer-dann": ["adaptation.method=dann"],
    "crossrec-transfer-mmd": ["adaptation.method=mmd"],
    "crossrec-transfer-coral": ["adaptation.method=coral"],
    "crossrec-transfer-lora": ["model.item_mode=lora", "train.finetune=lora"],
}


def variant_config(name: str, base: CrossRecConfig) -> CrossRecConfig:
    """``base`` with the overrides of variant ``name``."""
    if name not in VARIANTS:
        raise CrossRecError(f"unknown model {name!r}; expected one of: {', '.join(VARIANTS)}")
    return with_overrides(base, VARIANTS[name], origin=f"variant {name}")
