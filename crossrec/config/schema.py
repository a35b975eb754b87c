"""`CrossRecConfig`: the whole configuration, one typed section per part of crossrec."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import Field, model_validator

from crossrec.config.base import _Section
from crossrec.config.data import DataConfig, EvalConfig
from crossrec.config.model import (
    AdaptationConfig,
    BaselinesConfig,
    EncoderConfig,
    ModelConfig,
    TrainConfig,
    TuneConfig,
)
from crossrec.config.redaction import REDACTED, redact_secrets
from crossrec.config.services import (
    FeatureStoreConfig,
    OnlineConfig,
    RegistryConfig,
    ServeConfig,
    StreamConfig,
)


class CrossRecConfig(_Section):
    """The whole configuration. Each section documents its own fields."""

    data: DataConfig = Field(default_factory=DataConfig)
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    adaptation: AdaptationConfig = Field(default_factory=AdaptationConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tune: TuneConfig = Field(
        default_factory=TuneConfig, description="Hyper-parameter search (`crossrec tune`)."
    )
    serve: ServeConfig = Field(default_factory=ServeConfig)
    stream: StreamConfig = Field(default_factory=StreamConfig)
    feature_store: FeatureStoreConfig = Field(default_factory=FeatureStoreConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    online: OnlineConfig = Field(default_factory=OnlineConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    baselines: BaselinesConfig = Field(
        default_factory=BaselinesConfig, description="Hyper-parameters of the baselines."
    )

    @model_validator(mode="after")
    def _cross_section_rules(self) -> CrossRecConfig:
        if self.train.finetune == "lora" and self.model.item_mode != "lora":
            raise ValueError("train.finetune=lora needs model.item_mode=lora")
        if self.train.target_only and "pretrain" in self.train.stages:
            raise ValueError(
                "train.target_only=true trains no source stage: set train.stages=[joint] or [adapt]"
            )
        return self

    def to_yaml(self, *, redact: bool = False) -> str:
        """The config as YAML; ``redact`` shows each secret as ``**redacted**``."""
        data = self.public_dump(REDACTED) if redact else self.model_dump(mode="json")
        return yaml.safe_dump(data, sort_keys=False)

    def public_dump(self, mask: str | None = None) -> dict[str, Any]:
        """The config as JSON data without its secrets (keys, passwords, the password inside a
        URL): each becomes ``mask`` (default null, i.e. unset: a config read back from it
        never holds a placeholder as a key). What checkpoints, run records, written configs
        and Ray task arguments get."""
        return redact_secrets(self.model_dump(mode="json"), mask)
