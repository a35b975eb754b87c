"""A model *version*: the trained model of every target domain, loaded together.

A version is a directory that is either one checkpoint (``manifest.json`` +
``model.safetensors``, as written by `CrossRecModel.save_pretrained`) or a folder of them, one
per target domain (``RUN/models/<target>/`` as written by `crossrec train`). Its version id is
derived from the weights and manifests, so the same files always give the same id.

Example:
    >>> bundle = ModelBundle.load("runs/demo/models")
    >>> bundle.version, sorted(bundle.models)
    ('m-3f2a9c1b7e40', ['films'])
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from crossrec.errors import CrossRecError
from crossrec.models.crossrec_model import MANIFEST_FILE, WEIGHTS_FILE, CrossRecModel

logger = logging.getLogger(__name__)


def checkpoint_dirs(path: str | Path) -> dict[str, Path]:
    """The checkpoint directories of a version, by target domain name (or directory name)."""
    root = Path(path).expanduser()
    if (root / MANIFEST_FILE).is_file():
        return {"": root}
    children = sorted(root.iterdir()) if root.is_dir() else []
    found = {p.name: p for p in children if (p / MANIFEST_FILE).is_file()}
    if not found:
        raise CrossRecError(
            f"{root} is not a model version: no {MANIFEST_FILE} in it or in its subfolders "
            "(expected a checkpoint directory or RUN/models/)"
        )
    return found


def version_of(path: str | Path) -> str:
    """A stable id of the version at ``path``: a digest of its manifests and weights."""
    digest = hashlib.sha256()
    for name, ckpt in sorted(checkpoint_dirs(path).items()):
        digest.update(name.encode() + b"\x00")
        for file in (MANIFEST_FILE, WEIGHTS_FILE):
            with (ckpt / file).open("rb") as handle:
                for block in iter(lambda h=handle: h.read(1 << 20), b""):  # type: ignore[misc]
                    digest.update(block)
    return "m-" + digest.hexdigest()[:12]


@dataclass
class ModelBundle:
    """The models of one version, keyed by the target domain each was trained for."""

    version: str
    uri: str
    models: dict[str, CrossRecModel]

    @classmethod
    def load(cls, path: str | Path, version: str | None = None) -> ModelBundle:
        models: dict[str, CrossRecModel] = {}
        for name, ckpt in checkpoint_dirs(path).items():
            model = CrossRecModel.from_pretrained(ckpt)
            target = model.target_domain or name or model.domains[-1]
            if target in models:
                raise CrossRecError(f"{path}: two checkpoints for target domain {target!r}")
            models[target] = model
        bundle = cls(version or version_of(path), str(Path(path).expanduser()), models)
        logger.info(
            "loaded model version=%s targets=%s uri=%s",
            bundle.version,
            ",".join(sorted(models)),
            bundle.uri,
        )
        return bundle

    @property
    def domains(self) -> list[str]:
        """Every domain some model of the version knows."""
        seen: dict[str, None] = {}
        for model in self.models.values():
            seen.update(dict.fromkeys(model.domains))
        return list(seen)
