"""The lowest versions crossrec declares, as pip constraints: ``python .ci/floors.py`` prints
``name==floor`` for every dependency of pyproject.toml (core, extras and dev), so
``make test-floors`` can install exactly the floors and run the suite on them.
``--check`` compares them with what this environment has installed and exits 1 on a
difference (the floors are raised to what the suite last passed with, never declared
untested)."""

from __future__ import annotations

import re
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENT = re.compile(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*)$")


def floors() -> dict[str, str | None]:
    """Each dependency's name -> its ``>=`` floor (None: no floor declared)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs += [s for s in extra if not s.startswith("crossrec")]
    out: dict[str, str | None] = {}
    for spec in specs:
        match = REQUIREMENT.match(spec.strip())
        if match is None:
            raise SystemExit(f"pyproject.toml: cannot read the requirement {spec!r}")
        name, _, rest = match.groups()
        floor = re.search(r">=\s*([0-9][^,;\s]*)", rest)
        out.setdefault(name.lower(), floor.group(1) if floor else None)
    return out


def main() -> int:
    found = floors()
    missing = sorted(n for n, f in found.items() if f is None and not n.startswith("types-"))
    if missing:
        print(f"pyproject.toml: no >= floor for {', '.join(missing)}", file=sys.stderr)
        return 1
    if "--check" not in sys.argv[1:]:
        for name, floor in sorted(found.items()):
            if floor is not None:
                print(f"{name}=={floor}")
        return 0
    bad = []
    for name, floor in sorted(found.items()):
        if floor is None:
            continue
        try:
            have = version(name).split("+")[0]
        except PackageNotFoundError:
            have = "not installed"
        if have != floor:
            bad.append(f"{name}: floor {floor}, installed {have}")
    for line in bad:
        print(line, file=sys.stderr)
    print("installed == floors" if not bad else f"{len(bad)} differ", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
