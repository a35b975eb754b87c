"""`crossrec events`: produce user events to Kafka."""

from __future__ import annotations

from typing import Annotated

import typer

from crossrec.cli.common import (
    ConfigOpt,
    SetOpt,
    load,
)
from crossrec.extras import require_extras

events_app = typer.Typer(help="Produce user events to Kafka.", no_args_is_help=True)


@events_app.command("produce")
def events_produce(
    path: Annotated[str, typer.Argument(help="JSON-lines file of events, or '-' for stdin.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Send lines as they are, unvalidated (replays).")
    ] = False,
    skip_invalid: Annotated[
        bool,
        typer.Option("--skip-invalid", help="Report invalid lines on stderr and go on."),
    ] = False,
) -> None:
    """Produce events (one JSON object per line) to stream.topic on stream.bootstrap_servers.

    Each line is validated first: an invalid one stops the run naming FILE:LINE (what was sent
    before it stays sent), unless --skip-invalid."""
    require_extras("crossrec events produce", "stream")
    from crossrec.errors import ConfigError
    from crossrec.stream.events import EventProducer, open_events, produce_lines

    cfg = load(config, set_)
    if not cfg.stream.bootstrap_servers:
        raise ConfigError(
            "stream.bootstrap_servers",
            "not set: `events produce` needs a running Kafka (the embedded broker lives inside "
            "one process: use `crossrec stream --events FILE` with it)",
        )
    handle, name = open_events(path)
    with handle, EventProducer(cfg.stream) as producer:
        report = produce_lines(
            producer,
            handle,
            name,
            domains=cfg.stream.domains,
            raw=raw,
            skip_invalid=skip_invalid,
            on_skip=lambda e: typer.echo(f"skipped {e}", err=True),
        )
    typer.echo(
        f"sent {report.sent:,} events to {cfg.stream.topic}"
        + (f"; skipped {report.skipped:,} invalid lines" if report.skipped else "")
    )
