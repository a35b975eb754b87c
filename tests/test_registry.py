"""The model registry and the current-version pointer, on a real redis-server: versions are
registered with their lineage, promotion and rollback move the pointer, and the CLI drives it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from crossrec.cli import app
from crossrec.config import CrossRecConfig
from crossrec.data.dataset import CrossDomainDataset
from crossrec.embedded import EmbeddedRedis
from crossrec.errors import CrossRecError
from crossrec.feature_store.redis_store import RedisFeatureStore
from crossrec.models.bundle import version_of
from crossrec.models.crossrec_model import WEIGHTS_FILE, CrossRecModel
from crossrec.registry import ModelRegistry
from tests.conftest import SMALL_WORLD, unique

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture(scope="module")
def two_versions(
    small_world: CrossDomainDataset, tmp_path_factory: pytest.TempPathFactory
) -> list[Path]:
    cfg = CrossRecConfig()
    cfg.data.synthetic = SMALL_WORLD
    torch.manual_seed(0)
    model = CrossRecModel.for_dataset(small_world, cfg, text_vectors=torch.randn(400, 384))
    model.target_domain = "films"
    model.metrics = {"test_full_ndcg@10": 0.25}
    root = tmp_path_factory.mktemp("registry-versions")
    model.save_pretrained(root / "a" / "films")
    model.save_pretrained(root / "b" / "films")
    weights = load_file(str(root / "b" / "films" / WEIGHTS_FILE))
    weights["ranker.linear.bias"] = weights["ranker.linear.bias"] + 1.0
    save_file(weights, str(root / "b" / "films" / WEIGHTS_FILE))
    return [root / "a", root / "b"]


@pytest.fixture
def store(redis_server: EmbeddedRedis) -> RedisFeatureStore:
    cfg = CrossRecConfig()
    cfg.feature_store.url = redis_server.url
    cfg.feature_store.key_prefix = unique("registry")
    return RedisFeatureStore.from_config(cfg.feature_store)


def test_register_promote_and_roll_back(
    two_versions: list[Path], store: RedisFeatureStore, tmp_path: Path
) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    a = registry.register(two_versions[0], metrics={"ndcg@10": 0.25}, data_window={"events": 0})
    assert a.version == version_of(two_versions[0])
    assert version_of(a.uri) == a.version  # the copy is the same version
    assert registry.register(two_versions[0]) == a  # registering twice changes nothing
    b = registry.register(two_versions[1], parent=a.version, metrics={"ndcg@10": 0.3})
    assert b.parent == a.version
    assert [r.version for r in registry.list()] == [a.version, b.version]
    with pytest.raises(CrossRecError, match="no model version 'm-nope'"):
        registry.register(two_versions[1], parent="m-nope")
    with pytest.raises(CrossRecError, match="no current model version"):
        registry.rollback(store)
    registry.promote(store, a.version)
    with pytest.raises(CrossRecError, match="nothing to roll back to"):
        registry.rollback(store)
    registry.promote(store, b.version)
    current = store.current_model()
    assert current is not None
    assert (current.version, current.uri) == (b.version, b.uri)
    back = registry.rollback(store)
    assert back.version == a.version
    current = store.current_model()
    assert current is not None
    assert current.version == a.version
    assert current.reason == f"rollback from {b.version}"
    assert [p.version for p in store.model_history()] == [a.version, b.version, a.version]


def test_models_cli(two_versions: list[Path], redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    opts = [
        "--set",
        f"registry.root={tmp_path / 'reg'}",
        "--set",
        f"feature_store.url={redis_server.url}",
        "--set",
        f"feature_store.key_prefix={unique('registry-cli')}",
    ]
    first = runner.invoke(app, ["models", "register", str(two_versions[0]), *opts])
    assert first.exit_code == 0, first.output
    a = version_of(two_versions[0])
    second = runner.invoke(app, ["models", "register", str(two_versions[1]), "--parent", a, *opts])
    assert second.exit_code == 0, second.output
    b = version_of(two_versions[1])
    shown = runner.invoke(app, ["models", "show", b, *opts])
    assert shown.exit_code == 0
    record = json.loads(shown.output)
    shown_json = runner.invoke(app, ["models", "show", b, "--json", *opts])
    assert shown_json.exit_code == 0
    assert json.loads(shown_json.stdout) == record
    assert record["parent"] == a
    assert record["metrics"] == {"films/test_full_ndcg@10": 0.25}
    for version in (a, b):
        assert runner.invoke(app, ["models", "promote", version, *opts]).exit_code == 0
    listed = runner.invoke(app, ["models", "list", *opts]).output
    assert f"* {b}" in listed
    assert f"  {a}" in listed
    rolled = runner.invoke(app, ["models", "rollback", *opts])
    assert rolled.exit_code == 0
    assert f"current model version {a}" in rolled.output
    listed_json = json.loads(runner.invoke(app, ["models", "list", "--json", *opts]).stdout)
    assert [r["version"] for r in listed_json] == [a, b]
    assert [r["current"] for r in listed_json] == [True, False]  # rolled back to a
    assert listed_json[1]["parent"] == a
    missing = runner.invoke(app, ["models", "promote", "m-missing", *opts])
    assert missing.exit_code == 1
    assert "no model version 'm-missing'" in missing.output
    no_store = runner.invoke(app, ["models", "rollback", "--set", f"registry.root={tmp_path}"])
    assert no_store.exit_code == 2
    assert "feature_store.url is not set" in no_store.output


def test_a_version_name_is_never_a_path_out_of_the_registry(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "version.json").write_text("{}")  # what a traversal would read
    for name in ("../elsewhere", "..", "a/../../elsewhere", "/etc", "m-1/../../elsewhere", ""):
        with pytest.raises(CrossRecError, match="is not a model version name"):
            registry.get(name)
    with pytest.raises(CrossRecError, match="no model version 'm-unknown'"):
        registry.get("m-unknown")
