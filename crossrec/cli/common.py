"""What every command shares: the option types, the exit statuses, error handling once for
all commands, JSON output and config loading."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from crossrec.errors import CrossRecError

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (defaults if omitted).")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value: section.field=value (repeatable)."),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON document to stdout, nothing else.")
]
OutputOpt = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Also write the result as JSON to this file."),
]


def format_help() -> str:
    from crossrec.config import DATA_FORMATS

    files = ", ".join(f for f in DATA_FORMATS if f != "synthetic")
    return f"Format of the data ({files}); required with a data path, like the path itself."


# One --format for every command: no default; it goes with a data path (PATH or --data), and
# without one the config's data.format (the synthetic world by default) is used.
FormatOpt = Annotated[str | None, typer.Option("--format", "-f", help=format_help())]


# Exit status: 0 done, 1 a runtime error (data, services, models), 2 bad usage (options,
# config values, unknown names), 130 Ctrl-C, 143 SIGTERM.
EXIT_RUNTIME = 1
EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_USAGE) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def exit_code(exc: CrossRecError) -> int:
    """2 for what the command line or config got wrong, 1 for what went wrong running it."""
    from crossrec.errors import ConfigError, UnknownFormatError

    return EXIT_USAGE if isinstance(exc, ConfigError | UnknownFormatError) else EXIT_RUNTIME


@contextmanager
def errors_handled() -> Iterator[None]:
    """Turns crossrec errors into one clear line on stderr (no traceback) and the exit status
    of their kind (`exit_code`); Ctrl-C exits 130, SIGTERM 143."""
    try:
        yield
    except CrossRecError as exc:
        fail(str(exc), exit_code(exc))
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except SystemExit:
        from crossrec.ray_runtime import TERMINATED

        if not TERMINATED.is_set():
            raise
        typer.echo("terminated (SIGTERM); everything this command started is stopped", err=True)
        raise typer.Exit(143) from None


class CrossRecGroup(TyperGroup):
    """The root command group. Every command (and sub-command) runs inside its `invoke`, so
    errors and signals are handled here, once, for all of them: commands validate and call."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        with errors_handled():
            return super().invoke(ctx)


def emit(doc: Any, as_json: bool, output: Path | None = None) -> None:
    """Writes ``doc`` to ``output`` (JSON) and, with ``as_json``, prints it as one JSON document
    on stdout."""
    text = json.dumps(doc, indent=2, default=str)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n")
        if not as_json:
            typer.echo(f"wrote {output}")
    if as_json:
        typer.echo(text)


def load(config: Path | None, overrides: list[str] | None, **data: Any):  # type: ignore[no-untyped-def]
    from crossrec.config import load_config
    from crossrec.data.loaders import get_loader

    if data.get("format") is not None:
        get_loader(data["format"])  # an unknown --format names the known ones
    extra = [f"data.{k}={v}" for k, v in data.items() if v is not None]
    return load_config(config, [*(overrides or []), *extra])


def require_data_with_format(data: object, fmt: str | None) -> None:
    if (data is None) != (fmt is None):
        fail(
            "a data path and --format go together (e.g. --data ../shared/data/ml-100k --format "
            "movielens)"
        )


def models_store(cfg: Any) -> Any:
    from crossrec.feature_store import open_feature_store

    if cfg.feature_store.url is None:
        fail(
            "feature_store.url is not set: the current model version lives in the feature store "
            "serving and the stream use (--set feature_store.url=redis://HOST:6379/0)"
        )
    return open_feature_store(cfg.feature_store)
