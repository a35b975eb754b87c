"""Run storage: a local folder or an object-store URI (``s3://``, ``gs://``), through pyarrow's
filesystems (what Ray Train itself uses), so a run's checkpoints, stage results, item vectors and
final models live in one place however the cluster is set up.

Layout of a run ``NAME`` under ``train.storage_path``::

    NAME/run.json                        config and crossrec version of the run
    NAME/embeddings/<namespace>/*.npz    item text vectors (the run's embedding cache)
    NAME/stages/<target>/<stage>/        Ray Train's run folder: checkpoint_*/ (stage checkpoints)
    NAME/stages/<target>/<stage>.json    the finished stage's result (kept checkpoint, metrics)
    NAME/models/<target>/                the final model (``crossrec evaluate --checkpoint``)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from crossrec.errors import ConfigError


class RunStorage:
    """Reads and writes one run's files, locally or in an object store.

    Example:
        >>> storage = RunStorage("s3://bucket/crossrec-runs", "nightly")
        >>> storage.write_json("run.json", {...}); storage.exists("models/films/manifest.json")
    """

    def __init__(self, storage_path: str, name: str) -> None:
        if not name or "/" in name or name in (".", ".."):
            raise ConfigError("--name", f"run name must be a plain folder name, got {name!r}")
        self.name = name
        self.is_local = "://" not in storage_path or storage_path.startswith("file://")
        if self.is_local:
            local = storage_path.removeprefix("file://")
            self.base = str(Path(local).expanduser().resolve())
            self.fs: pafs.FileSystem = pafs.LocalFileSystem()
            self.base_uri = self.base
        else:
            try:
                self.fs, self.base = pafs.FileSystem.from_uri(storage_path.rstrip("/"))
            except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
                raise ConfigError(
                    "train.storage_path", f"cannot open {storage_path}: {exc}"
                ) from None
            self.base_uri = storage_path.rstrip("/")
        self.root = f"{self.base}/{name}"

    # ------------------------------------------------------------------ paths
    def path(self, relative: str = "") -> str:
        """The filesystem path of ``relative`` (no scheme)."""
        return f"{self.root}/{relative}".rstrip("/")

    def uri(self, relative: str = "") -> str:
        """``relative`` as a local path or a URI with its scheme (what Ray Train accepts)."""
        return f"{self.base_uri}/{self.name}/{relative}".rstrip("/")

    def local_path(self, relative: str = "") -> Path | None:
        return Path(self.path(relative)) if self.is_local else None

    # ------------------------------------------------------------------ files
    def exists(self, relative: str) -> bool:
        return bool(self.fs.get_file_info(self.path(relative)).type != pafs.FileType.NotFound)

    def read_json(self, relative: str) -> dict[str, Any] | None:
        if not self.exists(relative):
            return None
        with self.fs.open_input_stream(self.path(relative)) as handle:
            data: dict[str, Any] = json.loads(handle.read().decode("utf-8"))
        return data

    def write_json(self, relative: str, data: dict[str, Any]) -> None:
        """Writes JSON atomically on local disk (temp file + rename); object stores write whole
        objects anyway."""
        text = json.dumps(data, indent=2, sort_keys=True) + "\n"
        target = self.path(relative)
        self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        if self.is_local:
            tmp = f"{target}.tmp-{os.getpid()}"
            Path(tmp).write_text(text, encoding="utf-8")
            os.replace(tmp, target)
            return
        with self.fs.open_output_stream(target) as handle:
            handle.write(text.encode("utf-8"))

    def write_bytes(self, relative: str, data: bytes) -> None:
        """Writes a whole file (atomically on local disk)."""
        target = self.path(relative)
        self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        if self.is_local:
            tmp = f"{target}.tmp-{os.getpid()}"
            Path(tmp).write_bytes(data)
            os.replace(tmp, target)
            return
        with self.fs.open_output_stream(target) as handle:
            handle.write(data)

    def upload(self, local_dir: Path, relative: str) -> None:
        """Copies a local folder to ``relative`` (a no-op when it is already there)."""
        target = self.path(relative)
        if self.is_local and Path(target) == local_dir.resolve():
            return
        self.fs.create_dir(target, recursive=True)
        pafs.copy_files(str(local_dir), target, destination_filesystem=self.fs)

    def download(self, relative: str, local_dir: Path) -> bool:
        """Copies folder ``relative`` into ``local_dir``; False when it does not exist."""
        if not self.exists(relative):
            return False
        local_dir.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(self.path(relative), str(local_dir), source_filesystem=self.fs)
        return True
