"""`crossrec config`: show the effective configuration, print the reference."""

from __future__ import annotations

import typer

from crossrec.cli.common import (
    ConfigOpt,
    SetOpt,
    load,
)

config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)


@config_app.command("show")
def config_show(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the effective configuration (defaults < --config file < --set overrides) as YAML."""
    typer.echo(load(config, set_).to_yaml(redact=True), nl=False)


@config_app.command("reference")
def config_reference_cmd() -> None:
    """Print the configuration reference (Markdown: every field, type, default, meaning), as
    the README embeds it."""
    from crossrec.config import config_reference

    typer.echo(config_reference(), nl=False)
