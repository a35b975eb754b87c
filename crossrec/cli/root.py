"""The root `crossrec` command: global options (`--log-level`, `--version`) and `version`."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from crossrec import __version__
from crossrec.cli.common import CrossRecGroup, fail

app = typer.Typer(
    name="crossrec",
    cls=CrossRecGroup,
    help="Cross-domain recommendation through language: data, baselines, evaluation, demo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def main_options(
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug, info, warning or error.")
    ] = "warning",
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """crossrec: recommend in a sparse target domain with what language models and rich source
    domains know."""
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        fail(f"--log-level {log_level!r} is not one of debug, info, warning, error")
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    assert isinstance(level, int)  # fail exits otherwise
    if level > logging.DEBUG:
        # kafka-python warns about its own event loop on busy small machines; not actionable.
        logging.getLogger("kafka").setLevel(max(level, logging.ERROR))


@app.command()
def version() -> None:
    """Print the crossrec version."""
    typer.echo(__version__)
