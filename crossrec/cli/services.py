"""Top-level commands that run services: `demo`, `stream`, `serve`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from crossrec.cli.common import (
    ConfigOpt,
    FormatOpt,
    SetOpt,
    emit,
    load,
    require_data_with_format,
)
from crossrec.cli.root import app
from crossrec.extras import require_extras


@app.command()
def demo(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Also write the result rows to this JSON file."),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option("--data", help="Your data (a file or folder) instead of the synthetic world."),
    ] = None,
    fmt: FormatOpt = None,
    exit_after: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Stop serving this many seconds after the last step (default: "
            "keep serving until Ctrl-C).",
        ),
    ] = None,
) -> None:
    """Run the end-to-end demo on embedded defaults, no external services: data -> baselines ->
    Ray Train pre-training and adaptation -> evaluation table -> the Ray Serve API -> a scripted
    session of events through the embedded Kafka-protocol broker into the embedded Redis ->
    recommendations before and after, cold-start item and user -> a drift episode with online
    learning -> keeps serving until Ctrl-C (or --exit-after)."""
    require_extras("crossrec demo", "train", "serve", "stream", "embedded")
    from crossrec.apps.demo import run_demo

    require_data_with_format(data, fmt)
    cfg = load(config, set_, format=fmt, path=data)
    rows = run_demo(cfg, echo=typer.echo, exit_after_s=exit_after)
    if output is not None:
        emit([r.to_dict() for r in rows], False, output)


@app.command()
def stream(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", "-w", min=1, help="Consumer workers (Ray actors, one group)."),
    ] = None,
    local: Annotated[
        bool, typer.Option("--local", help="Run one worker in this process, without Ray.")
    ] = False,
    model: Annotated[
        Path | None,
        typer.Option(
            help="Publish this model version (a checkpoint or RUN/models) as current first."
        ),
    ] = None,
    events: Annotated[
        str | None,
        typer.Option(help="Produce this JSON-lines file ('-': stdin) to the topic first."),
    ] = None,
    idle_exit: Annotated[
        float | None,
        typer.Option(help="Stop after this many seconds without new records (default: never)."),
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: train.ray_address or local).")
    ] = None,
) -> None:
    """Consume user events from Kafka into the Redis feature store and keep user vectors fresh.

    Without stream.bootstrap_servers / feature_store.url an embedded Kafka-protocol broker and
    redis-server are started for the run (one machine and tests only). Invalid events go to
    stream.dead_letter_topic. SIGTERM or Ctrl-C: finish the batch, commit, exit."""
    require_extras("crossrec stream", "stream")
    from crossrec.stream.runner import run_stream, summarize

    cfg = load(config, set_)
    reports = run_stream(
        cfg,
        workers=workers,
        local=local,
        model=model,
        events_file=events,
        idle_exit_s=idle_exit,
        ray_address=address or cfg.train.ray_address,
        echo=typer.echo,
    )
    typer.echo(summarize(reports))


@app.command()
def serve(
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="Model version to serve (a checkpoint or RUN/models/); published as current. "
            "Default: the feature store's current version."
        ),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="HTTP port (default: serve.port).")
    ] = None,
    stream: Annotated[
        bool,
        typer.Option(
            "--stream/--no-stream",
            help="Also run a stream consumer in this process, so events posted to /v1/events "
            "reach the feature store.",
        ),
    ] = True,
    exit_after: Annotated[
        float | None,
        typer.Option(min=0, help="Stop after this many seconds (default: run until Ctrl-C)."),
    ] = None,
) -> None:
    """Serve recommendations over HTTP on Ray Serve (encoder + recommender deployments).

    Starts a local Ray (or joins serve.ray_address), deploys the app, prints its URL and stays
    up until Ctrl-C. Without stream.bootstrap_servers / feature_store.url an embedded
    Kafka-protocol broker and redis-server are started for the run (one machine only). The API
    is documented at URL/docs; `serve deploy cluster/serve_config.yaml` deploys the same app."""
    require_extras("crossrec serve", "serve", "stream")
    from serving.launcher import run_server

    cfg = load(config, set_)
    if port is not None:
        cfg.serve.port = port
    run_server(cfg, checkpoint, exit_after_s=exit_after, stream=stream, echo=typer.echo)
