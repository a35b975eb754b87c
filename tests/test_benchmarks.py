from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PNG = b"\x89PNG\r\n\x1a\n"


def test_serving_and_stream_charts_are_pngs_of_their_rows(tmp_path: Path) -> None:
    charts = _module("charts")
    rows = [
        {"mode": m, "clients": c, "p50_ms": 2.0 * c, "p99_ms": 5.0 * c, "qps": 100.0 * c}
        for m in ("in_process", "serve")
        for c in (1, 8, 32)
    ]
    assert charts.serving_chart(rows, tmp_path / "s.png").read_bytes().startswith(PNG)
    sizes = [{"batch_size": b, "events_per_s_per_worker": 10.0 * b} for b in (100, 500)]
    assert charts.stream_chart(sizes, tmp_path / "t.png").read_bytes().startswith(PNG)
    with pytest.raises(ValueError, match="no rows with protocol='full' and slice='all'"):
        charts.quality_chart([], tmp_path / "q.png")


def _quality() -> ModuleType:
    return _module("quality")


def test_real_dataset_skipped_without_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _quality().main(["--dataset", "ml-100k", "--data-dir", str(tmp_path / "none")])
    assert code == 0
    assert "skipping ml-100k: no data at" in capsys.readouterr().out


def test_synthetic_rows_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, chart = tmp_path / "rows.json", tmp_path / "chart.png"
    code = _quality().main(
        [
            "--dataset",
            "synthetic",
            "--quick",
            "--models",
            "popularity,itemknn",
            "--json",
            str(out),
            "--set",
            "data.synthetic.num_users=150",
            "--plot",
            str(chart),
        ]
    )
    assert code == 0
    assert chart.read_bytes().startswith(PNG)
    rows = json.loads(out.read_text())
    assert {r["model"] for r in rows} == {"popularity", "itemknn"}
    assert {r["protocol"] for r in rows} == {"full", "sampled"}
    assert set(rows[0]) >= {"model", "domain", "protocol", "slice", "metrics", "seconds"}
    assert "| itemknn |" in capsys.readouterr().out


def test_own_data_runs_with_data_and_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--data PATH --format table`: a release the benchmark does not name runs the same table."""
    data = tmp_path / "release"
    data.mkdir()
    rng = np.random.default_rng(0)
    rows = ["user_id,item_id,domain,timestamp"]
    for u in range(40):
        for k in range(10):
            domain = "shop" if k % 2 else "books"
            rows.append(f"u{u},{domain[0]}{rng.integers(12)},{domain},{1000 + 10 * k}")
    (data / "interactions.csv").write_text("\n".join(rows) + "\n")
    items = ["item_id,domain,title"] + [
        f"{d[0]}{i},{d},{d} item {i}" for d in ("books", "shop") for i in range(12)
    ]
    (data / "items.csv").write_text("\n".join(items) + "\n")
    out = tmp_path / "rows.json"
    args = ["--data", str(data), "--format", "table", "--models", "popularity,itemknn"]
    assert _quality().main([*args, "--json", str(out)]) == 0
    rows_out = json.loads(out.read_text())
    assert {r["domain"] for r in rows_out} == {"books", "shop"}
    assert {r["model"] for r in rows_out} == {"popularity", "itemknn"}
    assert "## release: 40 users" in capsys.readouterr().out


def test_data_needs_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _quality().main(["--data", str(tmp_path)]) == 2
    assert "--data and --format go together" in capsys.readouterr().err


def test_quick_bounds_every_trained_model() -> None:
    """--quick bounds the SASRec baselines' own epoch budget as well as crossrec's."""
    quick = _quality().build_config("amazon-food-kitchen", True)
    full = _quality().build_config("amazon-food-kitchen", False)
    assert quick.baselines.sasrec.max_epochs < full.baselines.sasrec.min_epochs
    assert quick.train.max_epochs < full.train.max_epochs


def test_bad_override_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = _quality().main(["--dataset", "synthetic", "--set", "train.lr=-3"])
    assert code == 2
    assert "train.lr" in capsys.readouterr().err


def test_train_scaling_writes_plain_loop_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scaling.json"
    code = _module("train_scaling").main(
        [
            "--quick",
            "--workers",
            "",
            "--json",
            str(out),
            "--set",
            "data.synthetic.num_users=150",
            "--set",
            "train.pretrain_max_epochs=1",
            "--set",
            "train.max_epochs=1",
        ]
    )
    assert code == 0
    rows = json.loads(out.read_text())["rows"]
    plain = next(r for r in rows if r["runner"] == "plain-pytorch")
    assert plain["workers"] == 1
    assert plain["device"] == "cpu"
    assert plain["mode"] == "frozen"
    assert plain["samples"] > 0
    assert plain["samples_per_s"] > 0
    assert "| plain-pytorch | 1 | cpu | frozen |" in capsys.readouterr().out


def test_alignment_benchmark_writes_a_row_per_method_and_weight(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "alignment.json"
    code = _module("alignment").main(
        [
            "--quick",
            "--json",
            str(out),
            "--set",
            "data.synthetic.num_users=150",
            "--set",
            "train.max_epochs=1",
        ]
    )
    assert code == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["method"], r["weight"]) for r in rows][:2] == [("none", 0.0), ("mmd", 0.1)]
    assert {r["method"] for r in rows} == {"none", "mmd", "coral", "dann"}
    assert all(0.0 <= r["probe_accuracy"] <= 1.0 for r in rows)
    assert all(r["dann_loss"] is not None for r in rows if r["method"] == "dann")
    assert "| dann | 10.0 |" in capsys.readouterr().out


@pytest.mark.integration
def test_stream_benchmark_writes_its_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "stream.json"
    code = _module("stream").main(
        [
            "--events",
            "2000",
            "--probes",
            "5",
            "--json",
            str(out),
            "--set",
            "data.synthetic.num_users=150",
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert result["events"] == 2000
    assert result["events_per_s_per_worker"] > 0
    assert 0 < result["freshness_ms"]["p50"] <= result["freshness_ms"]["p99"]
    assert "| events/s per worker" in capsys.readouterr().out


@pytest.mark.integration
@pytest.mark.slow
def test_serving_benchmark_writes_its_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "serving.json"
    code = _module("serving").main(
        [
            "--clients",
            "1,2",
            "--seconds",
            "1",
            "--json",
            str(out),
            "--set",
            "serve.haproxy=false",
            "--set",
            "serve.recommender.num_replicas=1",
            "--set",
            "data.synthetic.num_users=150",
        ]
    )
    assert code == 0
    rows = json.loads(out.read_text())["rows"]
    assert {(r["mode"], r["clients"]) for r in rows} == {
        (m, c) for m in ("serve", "in_process") for c in (1, 2)
    }
    for row in rows:
        assert row["requests"] > 0
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert row["qps"] > 0
    assert "serve/in-process p50" in capsys.readouterr().out


@pytest.mark.integration
@pytest.mark.slow
def test_online_benchmark_writes_its_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "online.json"
    code = _module("online").main(
        [
            "--sizes",
            "100,200",
            "--json",
            str(out),
            "--set",
            "data.synthetic.num_users=150",
            "--set",
            "online.steps=5",
            "--set",
            "online.regression_size=60",
        ]
    )
    assert code == 0
    rows = json.loads(out.read_text())["rows"]
    # A round trains on its new samples and on the previous round's holdout.
    assert [r["new_samples"] for r in rows] == [100, 200 + rows[0]["holdout"]]
    for row in rows:
        assert row["replay"] > 0
        assert row["holdout"] >= 20
        assert 0 < row["train_s"] <= row["round_s"]
    assert "| new samples | replay |" in capsys.readouterr().out


def test_derive_overlap_keeps_users_in_every_domain(tmp_path: Path) -> None:
    """The derived release loads back with the table loader: only users with enough items in
    every domain, their sequences in order, the items' text intact."""
    from crossrec.config import DataConfig
    from crossrec.data.loaders import load_dataset

    out = tmp_path / "overlap"
    code = _module("derive_overlap").main(
        [
            "--dataset",
            "synthetic",
            "--out",
            str(out),
            "--min-per-domain",
            "4",
            "--set",
            "data.synthetic.num_users=120",
        ]
    )
    assert code == 0
    source = load_dataset(DataConfig(format="synthetic", synthetic={"num_users": 120}))
    derived = load_dataset(
        DataConfig(format="table", table={"columns": _module("derive_overlap").COLUMNS}), out
    )
    assert set(derived.domains) == set(source.domains)
    counts = derived.user_domain_counts()
    assert (counts >= 4).all()
    kept = {u for u, _ in derived.iter_sequences()}
    wanted = {
        u
        for u, row in zip(source.user_ids, source.user_domain_counts(), strict=True)
        if (row >= 4).all()
    }
    assert kept == wanted
    assert 0 < len(kept) < source.num_users
    user = sorted(kept)[0]
    assert derived.user_history(user) == source.user_history(user)
    first = derived.items[int(derived.user_sequence(user)[0])]
    twin = source.items[source.global_index(first.domain, first.item_id)]
    assert (first.title, first.categories) == (twin.title, twin.categories)


def test_derive_overlap_refuses_the_repository(capsys: pytest.CaptureFixture[str]) -> None:
    code = _module("derive_overlap").main(["--dataset", "synthetic", "--out", str(ROOT / "x")])
    assert code == 2
    assert "inside the repository" in capsys.readouterr().err
