from __future__ import annotations

from pathlib import Path

import pytest

from crossrec.config import CrossRecConfig, load_config
from crossrec.errors import ConfigError


def test_defaults_are_valid() -> None:
    cfg = load_config()
    assert cfg.data.format == "synthetic"
    assert cfg.eval.ks == [10, 20, 50]


def test_yaml_then_overrides_in_order(tmp_path: Path) -> None:
    file = tmp_path / "run.yaml"
    file.write_text("train:\n  lr: 0.01\n  batch_size: 32\ndata:\n  format: movielens\n")
    cfg = load_config(file, ["train.lr=3e-4", "eval.ks=[5, 10]", "data.domain_names=[a, b]"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.batch_size == 32
    assert cfg.data.format == "movielens"
    assert cfg.eval.ks == [5, 10]
    assert cfg.data.domain_names == ["a", "b"]


@pytest.mark.parametrize(
    ("override", "field", "reason"),
    [
        ("train.lr=-1", "train.lr", "greater than 0"),
        ("train.lr=fast", "train.lr", "valid number"),
        ("train.learning_rate=1", "train.learning_rate", "unknown field"),
        ("data.format=csv", "data.format", "synthetic"),
        ("model.dim=65", "model", "divisible by num_heads"),
        ("eval.ks=[10, 0]", "eval", "positive"),
        ("data.synthetic.items_per_domain=[5]", "data.synthetic", "one value per domain"),
    ],
)
def test_bad_values_name_field_and_reason(override: str, field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert info.value.field == field
    assert reason in info.value.reason
    assert field in str(info.value)


def test_bad_yaml_file_names_file(tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(file)
    assert info.value.source == str(file)


def test_unknown_section_in_file(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("trian:\n  lr: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(file)
    assert info.value.field == "trian"
    assert info.value.reason == "unknown field"


def test_missing_file_and_malformed_override(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="section.field=value"):
        load_config(None, ["train.lr"])


def test_yaml_round_trip() -> None:
    cfg = load_config(None, ["serve.port=9000"])
    import yaml

    again = CrossRecConfig.model_validate(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg


def test_example_configs_load_and_match_their_variant() -> None:
    from crossrec.models.variants import VARIANTS, variant_config

    root = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(root.glob("*.yaml"))
    assert len(files) >= 12
    for file in files:
        cfg = load_config(file)
        stem = file.stem.removeprefix("synthetic-").removeprefix("food-kitchen-")
        name = f"crossrec-{stem}"
        if name in VARIANTS:
            expected = variant_config(name, load_config())
            assert cfg.train.stages == expected.train.stages, file
            assert cfg.train.target_only == expected.train.target_only, file
            assert cfg.adaptation.method == expected.adaptation.method, file
            assert cfg.model.item_mode == expected.model.item_mode, file
        if file.name.startswith("food-kitchen"):
            assert cfg.data.format == "llmcdsr"
            assert cfg.data.domain_names == ["food", "kitchen"]


def test_the_readme_config_reference_is_current() -> None:
    """The README embeds `crossrec config reference`; regenerate it when a field changes."""
    from crossrec.config import config_reference

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("<!-- config-reference:start")
    start = readme.index("\n", start) + 1
    end = readme.index("<!-- config-reference:end -->")
    assert readme[start:end] == config_reference(), (
        "README.md's configuration reference is out of date: replace the block between the "
        "config-reference markers with the output of `crossrec config reference`"
    )


def test_every_config_field_is_documented() -> None:
    from crossrec.config import config_reference

    undocumented = [
        line
        for line in config_reference().splitlines()
        if line.startswith("| `") and line.rstrip().endswith("|  |")
    ]
    assert not undocumented
