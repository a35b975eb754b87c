"""Secrets from a config file stay out of every artifact, printed config and error message."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crossrec.config import REDACTED, CrossRecConfig, load_config
from crossrec.data.dataset import CrossDomainDataset
from crossrec.errors import FeatureStoreError
from crossrec.feature_store import RedisFeatureStore
from crossrec.models.crossrec_model import CrossRecModel

SECRETS = {
    "serve.api_key": "write-key-SECRET1",
    "serve.read_api_key": "read-key-SECRET2",
    "stream.sasl_password": "kafka-SECRET3",
    "feature_store.password": "redis-SECRET4",
}
URL = "redis://crossrec:url-SECRET5@127.0.0.1:6390/0"


def _config(tmp_path: Path) -> CrossRecConfig:
    lines = []
    for section in ("serve", "stream", "feature_store"):
        lines.append(f"{section}:")
        lines += [
            f"  {k.split('.')[1]}: {v}" for k, v in SECRETS.items() if k.startswith(section + ".")
        ]
        if section == "feature_store":
            lines.append(f"  url: {URL}")
    path = tmp_path / "secret.yaml"
    path.write_text("\n".join(lines) + "\n")
    return load_config(path)


def _leaks(text: str) -> list[str]:
    return [s for s in [*SECRETS.values(), "url-SECRET5"] if s in text]


def test_no_secret_in_a_checkpoint_a_run_record_or_a_printed_config(
    tmp_path: Path, small_world: CrossDomainDataset
) -> None:
    from training.pipeline import RUN_FILE, _check_run_config
    from training.storage import RunStorage

    cfg = _config(tmp_path)
    assert cfg.serve.api_key == SECRETS["serve.api_key"]  # loaded, and usable in the process
    assert cfg.feature_store.url == URL
    # A model version: manifest, weights, everything in its folder.
    torch.manual_seed(0)
    model = CrossRecModel.for_dataset(
        small_world, cfg, text_vectors=torch.randn(small_world.num_items, 384)
    )
    model.target_domain = "films"
    out = model.save_pretrained(tmp_path / "version" / "films")
    for path in sorted(Path(out).rglob("*")):
        if path.is_file():
            assert not _leaks(path.read_bytes().decode("latin-1")), path.name
    # The record of a training run.
    storage = RunStorage(str(tmp_path / "runs"), "r1")
    assert _check_run_config(storage, cfg) is False
    assert not _leaks((tmp_path / "runs" / "r1" / RUN_FILE).read_text())
    assert _check_run_config(storage, cfg) is True  # a rerun with the same secrets resumes
    # Printed and written configs.
    shown = cfg.to_yaml(redact=True)
    assert not _leaks(shown)
    assert REDACTED in shown
    assert "redis://crossrec:**redacted**@127.0.0.1:6390/0" in shown
    public = cfg.public_dump()
    assert public["serve"]["api_key"] is None
    assert public["feature_store"]["url"] == "redis://crossrec@127.0.0.1:6390/0"
    assert CrossRecConfig.model_validate(public).serve.api_key is None  # never a placeholder key
    # A model loaded back from the version carries no secret either.
    loaded = CrossRecModel.from_pretrained(Path(out))
    assert not _leaks(loaded.cfg.to_yaml())


def test_a_redis_error_shows_no_password(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    cfg.feature_store.url = "redis://crossrec:url-SECRET5@127.0.0.1:notaport/0"
    with pytest.raises(FeatureStoreError) as bad:
        RedisFeatureStore.from_config(cfg.feature_store)
    assert not _leaks(str(bad.value))
    assert "127.0.0.1" in str(bad.value)
    cfg.feature_store.url = URL.replace("6390", "1")  # nothing listens there
    cfg.feature_store.retries, cfg.feature_store.connect_timeout_s = 0, 1.0
    store = RedisFeatureStore.from_config(cfg.feature_store)
    with pytest.raises(FeatureStoreError) as down:
        store.history("u", "films")
    assert not _leaks(str(down.value))


def test_serve_replicas_get_verifiers_and_no_secret_in_their_arguments(tmp_path: Path) -> None:
    """Ray stores a deployment's arguments: the bound application carries the config without
    its secrets and verifiers of the API keys; the passwords travel by environment."""
    import cloudpickle

    from crossrec.config import secret_environment
    from serving.app import build_application
    from serving.auth import Keys

    cfg = _config(tmp_path)
    app = build_application(cfg)
    stored = cloudpickle.dumps(app).decode("latin-1")
    assert not _leaks(stored)
    keys_arg = app._bound_deployment.init_args[3]  # (config, encoder, checkpoint, keys)
    keys = Keys.from_json(keys_arg)
    assert keys.allows_write(SECRETS["serve.api_key"])
    assert not keys.allows_write(SECRETS["serve.read_api_key"])  # the read key cannot write
    assert keys.allows_user_read(SECRETS["serve.read_api_key"])
    assert not keys.allows_user_read("guess")
    assert not keys.allows_write(None)
    assert secret_environment(cfg) == {
        "CROSSREC_REDIS_PASSWORD": SECRETS["feature_store.password"],
        "CROSSREC_KAFKA_PASSWORD": SECRETS["stream.sasl_password"],
    }
    cfg.feature_store.password = None  # then the URL's password is the one
    assert secret_environment(cfg)["CROSSREC_REDIS_PASSWORD"] == "url-SECRET5"  # noqa: S105
