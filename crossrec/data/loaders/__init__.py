"""Data loaders: one per format, registered by name.

Each loader turns files in a published format into a `CrossDomainDataset`. Look a loader up with
:func:`get_loader` or load straight from config with :func:`load_dataset`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from crossrec.config import DataConfig
from crossrec.data.dataset import CrossDomainDataset
from crossrec.errors import CrossRecError, DataError, UnknownFormatError

Loader = Callable[[Path | None, DataConfig], CrossDomainDataset]

_LOADERS: dict[str, Loader] = {}


def register_loader(name: str) -> Callable[[Loader], Loader]:
    """Registers a loader under ``name``; a second loader with the same name is an error."""

    def decorate(fn: Loader) -> Loader:
        if name in _LOADERS:
            raise CrossRecError(f"a loader named {name!r} is already registered")
        _LOADERS[name] = fn
        return fn

    return decorate


def rename_domains(path: Path, found: list[str], names: list[str] | None, what: str) -> list[str]:
    """``names`` (from ``data.domain_names``) in place of the ``found`` domains, one for one.

    Args:
        path: the data path, named in errors.
        found: the domains as the files name them, in their canonical order.
        names: the requested names, or None to keep ``found``.
        what: what each found domain is, for the error message (e.g. ".inter file(s)").
    """
    if names is None:
        return list(found)
    if len(names) != len(found):
        raise DataError(
            path,
            f"data.domain_names gives {len(names)} name(s) but found {len(found)} {what}: "
            f"{', '.join(found)}",
        )
    if len(set(names)) != len(names):
        raise DataError(path, f"data.domain_names must be distinct, got {names}")
    return list(names)


def available_formats() -> list[str]:
    _import_builtin_loaders()
    return sorted(_LOADERS)


def get_loader(name: str) -> Loader:
    _import_builtin_loaders()
    try:
        return _LOADERS[name]
    except KeyError:
        raise UnknownFormatError(name, sorted(_LOADERS)) from None


def load_dataset(cfg: DataConfig, path: str | Path | None = None) -> CrossDomainDataset:
    """Loads the dataset that ``cfg`` (``format``, ``path`` and the format's options) names.

    Args:
        cfg: the data section of the config.
        path: overrides ``cfg.path``.
    """
    loader = get_loader(cfg.format)
    where = path if path is not None else cfg.path
    if where is None:
        if cfg.format != "synthetic":
            raise DataError("<config>", f"format {cfg.format!r} needs a data path (data.path)")
        return loader(None, cfg)
    resolved = Path(where).expanduser()
    if not resolved.exists():
        raise DataError(resolved, "data path not found")
    return loader(resolved, cfg)


def _import_builtin_loaders() -> None:
    # Imported for their registration side effect; kept lazy so `import crossrec` stays light.
    from crossrec.data import synthetic  # noqa: F401
    from crossrec.data.loaders import amazon, llmcdsr, movielens, recbole, table  # noqa: F401
