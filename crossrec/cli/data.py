"""`crossrec data`: inspect a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from crossrec.cli.common import (
    ConfigOpt,
    FormatOpt,
    JsonOpt,
    OutputOpt,
    SetOpt,
    emit,
    load,
    require_data_with_format,
)

data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)


@data_app.command("inspect")
def data_inspect(
    path: Annotated[Path, typer.Argument(help="Dataset directory (or file, for table data).")],
    format: FormatOpt = None,  # noqa: A002 - the option is called --format
    as_json: JsonOpt = False,
    output: OutputOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Per-domain users, items, interactions, overlapping users and sequence lengths."""
    from crossrec.data.loaders import load_dataset

    require_data_with_format(path, format)
    cfg = load(config, set_, format=format)
    stats = load_dataset(cfg.data, path).stats()
    stats["path"] = str(path)
    stats["format"] = format
    emit(stats, as_json, output)
    if as_json:
        return
    typer.echo(f"{stats['name']} ({format}) at {path}")
    typer.echo(
        f"users {stats['users']:,}  items {stats['items']:,}  interactions "
        f"{stats['interactions']:,}  overlapping users {stats['overlapping_users']:,}"
    )
    lines = ["| domain | users | items | interactions | density | seq min | mean | median | max |"]
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for name, d in stats["domains"].items():
        s = d["sequence_length"]
        lines.append(
            f"| {name} | {d['users']:,} | {d['items']:,} | {d['interactions']:,} | "
            f"{d['density']:.4%} | {s['min']} | {s['mean']:.2f} | {s['median']:.0f} | {s['max']} |"
        )
    typer.echo("\n".join(lines))
    if stats["predefined_split"]:
        p = stats["predefined_split"]
        typer.echo(
            f"predefined split {p['name']}: {p['valid_users']} valid, {p['test_users']} test"
        )
