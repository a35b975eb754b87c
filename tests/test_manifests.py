"""The deployment manifests under cluster/: they parse, validate against Ray Serve's own
schema, and everything they name (import paths, config files) exists in the repository."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml
from ray.serve import Application
from ray.serve.schema import ServeDeploySchema

from crossrec.config import CrossRecConfig, DeploymentSettings, load_config
from crossrec.errors import ConfigError
from serving.app import AppArgs

ROOT = Path(__file__).resolve().parents[1]


def test_every_cluster_yaml_parses() -> None:
    files = sorted((ROOT / "cluster").glob("*.yaml"))
    assert files
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            assert isinstance(doc, dict), path


def test_serve_config_matches_rays_schema_and_the_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = yaml.safe_load((ROOT / "cluster" / "serve_config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(raw)
    assert schema.applications
    monkeypatch.chdir(ROOT)  # paths in the serve config are relative to the app's working dir
    for app in schema.applications:
        module_name, _, attr = app.import_path.partition(":")
        builder = getattr(importlib.import_module(module_name), attr)
        args = AppArgs.model_validate(app.args or {})
        assert args.config is not None
        assert (ROOT / args.config).is_file(), args.config
        cfg = load_config(args.config, overrides=args.overrides)
        assert cfg.serve.recommender.autoscaling is not None
        assert isinstance(builder(args), Application)


def test_replica_settings_follow_rays_rules() -> None:
    auto = DeploymentSettings.model_validate({"autoscaling": {"min_replicas": 1}})
    assert auto.num_replicas is None
    assert "num_replicas" not in auto.ray_options()
    assert auto.ray_options()["autoscaling_config"]["min_replicas"] == 1
    with pytest.raises(ValueError, match="num_replicas is not allowed when autoscaling"):
        DeploymentSettings.model_validate({"num_replicas": 2, "autoscaling": {}})
    with pytest.raises(ValueError, match="min_replicas .* is above max_replicas"):
        DeploymentSettings.model_validate({"autoscaling": {"min_replicas": 5, "max_replicas": 2}})
    with pytest.raises(ConfigError, match="serve.encoder: .*a batch could never fill"):
        load_config(None, overrides=["serve.encoder.max_ongoing_requests=4",
                                     "serve.encoder.max_batch_size=8"])  # fmt: skip
    fixed = CrossRecConfig().serve.recommender.ray_options()
    assert fixed["num_replicas"] == 1
    assert fixed["ray_actor_options"] == {"num_cpus": 0.5}
