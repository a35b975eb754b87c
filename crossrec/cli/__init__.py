"""The ``crossrec`` command. Commands load and validate config, then call library code; errors
and signals are turned into exit statuses once (`common.CrossRecGroup`).

One module per command group: `root` (global options, `version`), `config`, `data`,
`experiments` (`train`, `tune`, `evaluate`, `recommend`), `services` (`demo`, `stream`,
`serve`), `events`, `models`, `online`.
"""

from __future__ import annotations

from crossrec.cli import experiments, services  # noqa: F401 - they register their commands
from crossrec.cli.common import EXIT_RUNTIME, EXIT_USAGE, exit_code
from crossrec.cli.config import config_app
from crossrec.cli.data import data_app
from crossrec.cli.events import events_app
from crossrec.cli.models import models_app
from crossrec.cli.online import online_app
from crossrec.cli.root import app

app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")
app.add_typer(events_app, name="events")
app.add_typer(models_app, name="models")
app.add_typer(online_app, name="online")


def main() -> None:
    """Console-script entry point (`crossrec`, `python -m crossrec`, `python -m crossrec.cli`)."""
    app()


__all__ = ["EXIT_RUNTIME", "EXIT_USAGE", "app", "exit_code", "main"]
