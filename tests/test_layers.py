"""The import-linter contracts in pyproject.toml hold, and a reverse import breaks them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _copy_tree(dest: Path) -> Path:
    for package in ("crossrec", "serving", "training"):
        shutil.copytree(
            ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(exe), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_the_layers_hold_and_a_reverse_import_breaks_them(tmp_path: Path) -> None:
    tree = _copy_tree(tmp_path)
    kept = _lint_imports(tree)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "one-way layers KEPT" in kept.stdout
    # The model library reaching up into the Ray Train app: the layering forbids it.
    view = tree / "crossrec" / "models" / "view.py"
    view.write_text(view.read_text() + "\nimport training.pipeline  # noqa: E402,F401\n")
    broken = _lint_imports(tree)
    assert broken.returncode != 0
    assert "one-way layers BROKEN" in broken.stdout
    assert "crossrec.models.view -> training.pipeline" in broken.stdout
