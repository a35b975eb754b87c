"""`build_app`: the crossrec Serve application, for `serve run`, `serve deploy` and
`crossrec serve`.

Example (cluster/serve_config.yaml names it the same way)::

    serve run serving.app:build_app config=cluster/crossrec.yaml checkpoint=/models/current

Replica counts, autoscaling, CPUs/GPUs and encoder batching come from the ``serve`` section of
the crossrec config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application

from crossrec.config import CrossRecConfig, EncoderConfig, load_config
from crossrec.models.bundle import checkpoint_dirs
from crossrec.models.crossrec_model import MANIFEST_FILE
from serving.auth import resolve_keys
from serving.deployments import RecommenderDeployment, TextEncoderDeployment


class AppArgs(BaseModel):
    """Arguments of :func:`build_app` (``key=value`` pairs after ``serve run``, or ``args:``
    in a Serve config file)."""

    model_config = ConfigDict(extra="forbid")

    config: str | None = Field(None, description="crossrec YAML config file.")
    overrides: list[str] = Field(
        default_factory=list, description="`a.b=c` overrides applied on top of the file."
    )
    checkpoint: str | None = Field(
        None,
        description="Model version to serve when the feature store has no current version "
        "(a checkpoint directory or RUN/models/).",
    )


def checkpoint_encoder(path: str | Path) -> EncoderConfig:
    """The encoder settings a checkpoint was trained with (what the encoder deployment must
    load so its vectors match the version's)."""
    first = next(iter(checkpoint_dirs(path).values()))
    manifest = json.loads((first / MANIFEST_FILE).read_text())
    return EncoderConfig.model_validate(manifest["config"]["encoder"])


def build_application(
    cfg: CrossRecConfig,
    checkpoint: str | None = None,
    *,
    user_config: dict[str, Any] | None = None,
) -> Application:
    """The encoder and recommender deployments, bound with ``cfg``'s replica settings.
    ``user_config`` goes to the recommender's ``reconfigure`` (``{"model_uri": DIR}`` pins a
    version). With `serve deploy`, changing only the user_config reconfigures running replicas
    in place; `serve.run` from Python may replace them."""
    encoder_cfg = checkpoint_encoder(checkpoint) if checkpoint else cfg.encoder
    encoder_settings = cfg.serve.encoder
    encoder = (
        cast(Any, TextEncoderDeployment)
        .options(**encoder_settings.ray_options())
        .bind(encoder_cfg.model_dump(mode="json"), encoder_settings.model_dump(mode="json"))
    )
    options = cfg.serve.recommender.ray_options()
    if user_config is not None:
        options["user_config"] = user_config
    # Ray stores a deployment's arguments (the controller's checkpoint, the dashboard): they
    # get the config without its secrets, and verifiers of the API keys set in the config
    # rather than the keys. Service passwords reach replicas through their environment
    # (`crossrec.config.secret_environment`; on KubeRay the Secret), as do keys set only there.
    keyed = cfg.serve.auth == "key" and bool(cfg.serve.api_key or cfg.serve.read_api_key)
    keys = resolve_keys(cfg.serve).to_json() if keyed else None
    return (
        cast(Any, RecommenderDeployment)
        .options(**options)
        .bind(cfg.public_dump(), encoder, str(checkpoint) if checkpoint else None, keys)
    )


def build_app(args: AppArgs) -> Application:
    """Typed Serve application builder (see the module docstring)."""
    cfg = load_config(args.config, overrides=args.overrides)
    return build_application(cfg, args.checkpoint)
