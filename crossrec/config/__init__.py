"""`CrossRecConfig`: one typed configuration for every part of crossrec.

Layers, lowest first: the defaults below -> a YAML file (``--config``) -> ``--set a.b=c``
overrides. Every section forbids unknown keys, so a typo fails at load with its field path.

Example:
    >>> cfg = load_config("run.yaml", overrides=["train.lr=3e-4", "data.format=movielens"])
    >>> cfg.train.lr
    0.0003
"""

from crossrec.config.base import DATA_FORMATS, DataFormat
from crossrec.config.data import (
    DataConfig,
    EvalConfig,
    SyntheticConfig,
    TableColumns,
    TableConfig,
)
from crossrec.config.loader import load_config, with_overrides
from crossrec.config.model import (
    RUNTIME_TRAIN_FIELDS,
    AdaptationConfig,
    BaselinesConfig,
    EncoderConfig,
    ModelConfig,
    SASRecConfig,
    TrainConfig,
    TuneConfig,
)
from crossrec.config.redaction import (
    REDACTED,
    SECRET_ENV,
    SECRET_FIELDS,
    URL_FIELDS,
    redact_secrets,
    redact_url,
    secret_environment,
    url_password,
)
from crossrec.config.reference import config_reference
from crossrec.config.schema import CrossRecConfig
from crossrec.config.services import (
    AutoscalingSettings,
    DeploymentSettings,
    EncoderDeploymentSettings,
    FeatureStoreConfig,
    OnlineConfig,
    RegistryConfig,
    ServeConfig,
    StreamConfig,
    UpdatesConfig,
)

__all__ = [
    "DATA_FORMATS",
    "REDACTED",
    "RUNTIME_TRAIN_FIELDS",
    "SECRET_ENV",
    "SECRET_FIELDS",
    "URL_FIELDS",
    "AdaptationConfig",
    "AutoscalingSettings",
    "BaselinesConfig",
    "CrossRecConfig",
    "DataConfig",
    "DataFormat",
    "DeploymentSettings",
    "EncoderConfig",
    "EncoderDeploymentSettings",
    "EvalConfig",
    "FeatureStoreConfig",
    "ModelConfig",
    "OnlineConfig",
    "RegistryConfig",
    "SASRecConfig",
    "ServeConfig",
    "StreamConfig",
    "SyntheticConfig",
    "TableColumns",
    "TableConfig",
    "TrainConfig",
    "TuneConfig",
    "UpdatesConfig",
    "config_reference",
    "load_config",
    "redact_secrets",
    "redact_url",
    "secret_environment",
    "url_password",
    "with_overrides",
]
