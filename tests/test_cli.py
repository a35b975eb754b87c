from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crossrec.cli import app
from crossrec.errors import ConfigError

from .conftest import write
from .test_loaders_core import make_llmcdsr

runner = CliRunner()

COMMANDS = [
    [],
    ["version"],
    ["config"],
    ["config", "show"],
    ["data"],
    ["data", "inspect"],
    ["evaluate"],
    ["demo"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_every_command_has_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    assert "--help" in result.output


def test_config_show_prints_effective_config(tmp_path: Path) -> None:
    file = write(tmp_path / "c.yaml", "train:\n  lr: 0.5\n")
    result = runner.invoke(
        app, ["config", "show", "--config", str(file), "--set", "serve.port=9001"]
    )
    assert result.exit_code == 0, result.output
    assert "lr: 0.5" in result.output
    assert "port: 9001" in result.output


def test_config_error_is_one_line_no_traceback() -> None:
    result = runner.invoke(app, ["config", "show", "--set", "train.batch_size=0"])
    assert result.exit_code == 2
    assert (
        "error: --set: train.batch_size: Input should be greater than or equal to 1"
        in result.output
    )
    assert "Traceback" not in result.output


def test_data_inspect_json(tmp_path: Path) -> None:
    root = make_llmcdsr(tmp_path / "rel")
    result = runner.invoke(
        app,
        [
            "data",
            "inspect",
            str(root),
            "--format",
            "llmcdsr",
            "--json",
            "--set",
            "data.domain_names=[food, kitchen]",
        ],
    )
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["domains"]["food"]["items"] == 3
    assert stats["domains"]["kitchen"]["items"] == 2
    assert stats["overlapping_users"] == 4
    assert stats["users"] == 7
    table = runner.invoke(app, ["data", "inspect", str(root), "--format", "llmcdsr"])
    assert "| A | 6 | 3 |" in table.output


@pytest.mark.parametrize(
    ("setup", "fmt", "message"),
    [
        (lambda d: write(d / "train_A.txt", "1\t0,zz\n"), "llmcdsr", "train_A.txt:1: item #2"),
        (lambda d: write(d / "test.txt", ""), "llmcdsr", "test.txt: file is empty"),
        (
            lambda d: (d / "valid.txt").write_bytes(b"1\t0,1\xe9\n"),
            "llmcdsr",
            "valid.txt:1: not valid utf-8",
        ),
        (lambda d: None, "csvish", "unknown data format 'csvish'"),
    ],
)
def test_bad_data_gets_clear_error(tmp_path: Path, setup: object, fmt: str, message: str) -> None:
    root = make_llmcdsr(tmp_path / "rel")
    setup(root)  # type: ignore[operator]
    result = runner.invoke(app, ["data", "inspect", str(root), "--format", fmt])
    # A format name that does not exist is bad usage (2); a file that cannot be read, a
    # runtime error (1).
    assert result.exit_code == (2 if fmt == "csvish" else 1)
    assert message in result.output
    assert "Traceback" not in result.output


def test_evaluate_popularity_on_synthetic(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--baseline",
            "popularity",
            "--protocol",
            "full",
            "-o",
            str(out),
            "--set",
            "data.synthetic.num_users=150",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "| popularity | films | full | all |" in result.output
    assert f"wrote {out}" in result.output
    rows = json.loads(out.read_text())
    assert {r["protocol"] for r in rows} == {"full"}
    assert all(0.0 <= r["metrics"]["ndcg@10"] <= 1.0 for r in rows)
    # --json: the same rows as the only thing on stdout.
    printed = runner.invoke(
        app,
        [
            "evaluate",
            "--baseline",
            "popularity",
            "--protocol",
            "full",
            "--json",
            "--set",
            "data.synthetic.num_users=150",
        ],
    )
    assert printed.exit_code == 0, printed.output

    def untimed(rows: list[dict[str, object]]) -> list[dict[str, object]]:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert untimed(json.loads(printed.stdout)) == untimed(rows)


def test_train_local_json_prints_one_summary_document(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "train",
            "--local",
            "--json",
            "--output",
            str(tmp_path / "models"),
            "--set",
            "data.synthetic.num_users=80",
            "--set",
            "train.max_epochs=1",
            "--set",
            "model.dim=16",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # progress went to stderr
    assert set(summary) == {"rows", "models"}
    assert {r["domain"] for r in summary["rows"]} == set(summary["models"])
    for path in summary["models"].values():
        assert (Path(path) / "manifest.json").is_file()
    assert "epoch 1" in result.stderr


def test_evaluate_rejects_unknown_baseline_and_protocol() -> None:
    result = runner.invoke(app, ["evaluate", "--baseline", "bpr"])
    assert result.exit_code == 2
    assert "--baseline 'bpr' is not one of" in result.output
    result = runner.invoke(app, ["evaluate", "--baseline", "popularity", "--protocol", "uniform"])
    assert result.exit_code == 2
    assert "--protocol 'uniform'" in result.output


@pytest.mark.integration
def test_demo_runs_on_a_small_world(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        # Two epochs on a small world leave a weak model (regression recall@20 about 0.1-0.16),
        # where the default 25% relative bound lets a shuffled-labels drill's drop of ~0.05
        # through at random; a 15% bound separates it from the genuine round (which improves).
        [
            "demo",
            "--exit-after",
            "0",
            "--set",
            "data.synthetic.num_users=200",
            "--set",
            "online.regression_relative_margin=0.15",
            "--set",
            "train.max_epochs=2",
            "--set",
            "train.pretrain_max_epochs=2",
            "--set",
            f"train.storage_path={tmp_path}",
        ],
    )
    assert result.exit_code == 0, result.output
    for name in ("popularity", "itemknn", "sasrec", "text-zero-shot", "crossrec-transfer"):
        assert f"| {name} |" in result.output
    assert "on Ray Train (2 workers)" in result.output
    assert "joint[films] epoch 1:" in result.output
    assert "demo finished" in result.output
    # The streamed session reached the user's vector twice and dead-lettered the bad event.
    assert result.output.count("events stored, vector by m-") == 2
    assert "(1 dead letter)" in result.output
    # ... and the served model answered over HTTP before and after the events.
    assert "demo-user is unknown to the API (404)" in result.output
    assert (
        result.output.count("GET /v1/users/demo-user/recommendations?domain=films (model m-") == 2
    )
    assert "PUT /v1/items/films/demo-new-1 -> 201" in result.output
    similar = next(line for line in result.output.splitlines() if "similar to" in line)
    assert "(demo-new-1)" in similar
    # The drift episode: a gate decision with both scores, and the corrupted update rejected.
    assert "[7/7] online learning" in result.output
    gate = next(line for line in result.output.splitlines() if "gate: " in line)
    assert "holdout recall@20" in gate
    assert "regression" in gate
    assert "gate: promoted m-" in gate  # the genuine round must pass, not just run
    assert "a corrupted update (item ids remapped): rejected" in result.output
    (model_dir,) = tmp_path.glob("demo-*/models/films")
    assert (model_dir / "manifest.json").is_file()


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended meanwhile
            continue
        if text in args:
            found.append(args)
    return found


@pytest.mark.integration
def test_sigterm_during_training_stops_the_demo_cleanly(tmp_path: Path) -> None:
    """SIGTERM while Ray Train runs: a clear line, exit 143, and no Ray process left behind
    (Ray's own handler used to abort the process with a C++ stack trace)."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="crt-", dir="/tmp"))  # short: Ray's socket paths
    # The baselines step is cut short: this test is about the training step.
    command = [
        sys.executable,
        "-m",
        "crossrec.cli",
        "demo",
        "--exit-after",
        "0",
        "--set",
        "data.synthetic.num_users=200",
        "--set",
        "baselines.sasrec.min_epochs=1",
        "--set",
        "baselines.sasrec.max_epochs=2",
        "--set",
        f"train.storage_path={tmp_path}",
    ]
    log_path = tmp_path / "demo.log"
    with log_path.open("w") as log:
        demo = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RAY_TMPDIR": str(ray_tmp)},
        )
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and demo.poll() is None:
                if "epoch 1:" in log_path.read_text():
                    break
                time.sleep(0.2)
            assert demo.poll() is None, log_path.read_text()
            assert "epoch 1:" in log_path.read_text()
            demo.send_signal(signal.SIGTERM)
            demo.wait(timeout=120)
        finally:
            if demo.poll() is None:
                demo.kill()
                demo.wait(timeout=30)
    out = log_path.read_text()
    assert demo.returncode == 143, out
    assert "terminated (SIGTERM); everything this command started is stopped" in out
    assert "SIGTERM received" not in out  # Ray's abort handler did not run
    left = _processes_mentioning(str(ray_tmp))
    deadline = time.monotonic() + 30  # raylet and GCS exit shortly after the driver
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = _processes_mentioning(str(ray_tmp))
    assert left == []
    shutil.rmtree(ray_tmp, ignore_errors=True)


def test_train_rejects_a_run_name_that_is_not_a_folder_name(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["train", "--name", "a/b", "--storage", str(tmp_path), "--num-workers", "1"]
    )
    assert result.exit_code == 2
    assert "error: --name: run name must be a plain folder name" in result.output


def test_train_refuses_to_resume_a_run_with_another_config(tmp_path: Path) -> None:
    from crossrec.config import load_config
    from training.pipeline import _check_run_config
    from training.storage import RunStorage

    storage = RunStorage(str(tmp_path), "nightly")
    assert _check_run_config(storage, load_config(None, ["train.num_workers=2"])) is False
    # Where it runs may change between attempts; what it computes may not.
    assert _check_run_config(storage, load_config(None, ["train.num_workers=4"])) is True
    with pytest.raises(ConfigError, match="differs in train.lr"):
        _check_run_config(storage, load_config(None, ["train.lr=0.01"]))


def test_import_crossrec_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, crossrec, crossrec.config, crossrec.cli; "
        "heavy = [m for m in ('ray', 'transformers', 'torch') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_missing_column_gets_clear_error(tmp_path: Path) -> None:
    write(tmp_path / "interactions.csv", "user_id,item,domain,timestamp\nu1,i1,books,1\n")
    write(tmp_path / "items.csv", "item_id,domain,title\ni1,books,Dune\n")
    result = runner.invoke(app, ["data", "inspect", str(tmp_path), "--format", "table"])
    assert result.exit_code == 1
    assert "interactions.csv:1:" in result.output
    assert "item_id" in result.output
    assert "Traceback" not in result.output


def test_version_and_python_dash_m_entry_points() -> None:
    import subprocess
    import sys

    from crossrec import __version__

    assert runner.invoke(app, ["--version"]).output.strip() == __version__
    for module in ("crossrec", "crossrec.cli"):
        out = subprocess.run(
            [sys.executable, "-m", module, "online", "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert "Online learning" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "crossrec", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.strip() == __version__


def test_exit_status_tells_bad_usage_from_a_runtime_error(tmp_path: Path) -> None:
    usage = runner.invoke(app, ["evaluate", "--baseline", "popularity", "--protocol", "uniform"])
    assert usage.exit_code == 2
    bad_config = runner.invoke(app, ["config", "show", "--set", "train.lr=-1"])
    assert bad_config.exit_code == 2
    runtime = runner.invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "none")])
    assert runtime.exit_code == 1, runtime.output
    assert "error:" in runtime.output
    assert "Traceback" not in runtime.output


def test_train_takes_data_and_format_together() -> None:
    result = runner.invoke(app, ["train", "--local", "--data", "x"])
    assert result.exit_code == 2
    assert "a data path and --format go together" in result.output


def test_every_command_takes_format_with_a_data_path_and_not_without(tmp_path: Path) -> None:
    from crossrec.config import DATA_FORMATS
    from crossrec.data.loaders import available_formats

    assert sorted(DATA_FORMATS) == available_formats()  # one list of format names
    for argv in (
        ["data", "inspect", str(tmp_path)],
        ["evaluate", "--baseline", "popularity", "--data", str(tmp_path)],
        ["evaluate", "--baseline", "popularity", "--format", "movielens"],
    ):
        result = runner.invoke(app, argv)
        assert result.exit_code == 2, (argv, result.output)
        assert "a data path and --format go together" in result.output
