"""`crossrec models`: the registry of model versions and the current version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from crossrec.cli.common import (
    ConfigOpt,
    JsonOpt,
    SetOpt,
    emit,
    load,
    models_store,
)

models_app = typer.Typer(
    help="Model versions: the registry (registry.root) and the current version.",
    no_args_is_help=True,
)


@models_app.command("register")
def models_register(
    path: Annotated[Path, typer.Argument(help="A checkpoint directory or RUN/models/.")],
    parent: Annotated[
        str | None, typer.Option(help="The version this one was trained from.")
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Copy a model version into the registry with its metrics (from its manifests)."""
    from crossrec.models.bundle import checkpoint_dirs
    from crossrec.registry import ModelRegistry

    cfg = load(config, set_)
    metrics = {}
    for name, ckpt in checkpoint_dirs(path).items():
        manifest = json.loads((ckpt / "manifest.json").read_text())
        metrics.update(
            {f"{name}/{k}" if name else k: v for k, v in (manifest.get("metrics") or {}).items()}
        )
    record = ModelRegistry(cfg.registry.root).register(path, parent=parent, metrics=metrics)
    typer.echo(f"registered {record.version} at {record.uri}")


@models_app.command("list")
def models_list(config: ConfigOpt = None, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Every registered version, oldest first; * marks the current one."""
    from crossrec.registry import ModelRegistry

    cfg = load(config, set_)
    current = None
    if cfg.feature_store.url is not None:
        store = models_store(cfg)
        pointer = store.current_model()
        current = pointer.version if pointer else None
        store.close()
    records = ModelRegistry(cfg.registry.root).list()
    if as_json:
        emit([{**json.loads(r.to_json()), "current": r.version == current} for r in records], True)
        return
    if not records:
        typer.echo(f"no model versions in {cfg.registry.root}")
    for r in records:
        mark = "*" if r.version == current else " "
        typer.echo(
            f"{mark} {r.version}  {r.created_at}  parent={r.parent or '-'}  "
            f"metrics={len(r.metrics)}"
        )


@models_app.command("show")
def models_show(
    version: Annotated[str, typer.Argument(help="Version id (m-...).")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,  # the record is JSON either way
) -> None:
    """Print one version's record (JSON)."""
    from crossrec.registry import ModelRegistry

    cfg = load(config, set_)
    typer.echo(ModelRegistry(cfg.registry.root).get(version).to_json().rstrip())


@models_app.command("promote")
def models_promote(
    version: Annotated[str, typer.Argument(help="Version id (m-...).")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Make a registered version current: serving replicas and stream workers switch to it."""
    from crossrec.registry import ModelRegistry

    cfg = load(config, set_)
    store = models_store(cfg)
    try:
        pointer = ModelRegistry(cfg.registry.root).promote(store, version, reason="cli promote")
    finally:
        store.close()
    typer.echo(f"current model version {pointer.version} ({pointer.uri})")


@models_app.command("rollback")
def models_rollback(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Make the version that was current before the current one current again."""
    from crossrec.registry import ModelRegistry

    cfg = load(config, set_)
    store = models_store(cfg)
    try:
        pointer = ModelRegistry(cfg.registry.root).rollback(store)
    finally:
        store.close()
    typer.echo(f"current model version {pointer.version} ({pointer.uri})")
