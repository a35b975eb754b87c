"""`crossrec online`: online learning rounds and their status."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from crossrec.cli.common import (
    ConfigOpt,
    JsonOpt,
    SetOpt,
    emit,
    fail,
    load,
    models_store,
)
from crossrec.extras import require_extras

online_app = typer.Typer(
    help="Online learning: fine-tune from the stream's samples, gate, promote.",
    no_args_is_help=True,
)


@online_app.command("run")
def online_run(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    rounds: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many rounds (default: run on).")
    ] = None,
    exit_after: Annotated[
        float | None, typer.Option(min=0, help="Stop after this many seconds.")
    ] = None,
    now: Annotated[
        bool,
        typer.Option(
            "--now",
            help="Run one round at once (with at least online.min_samples new samples), then stop.",
        ),
    ] = False,
    drill: Annotated[
        str | None,
        typer.Option(
            help="Gate drill: train the round on corrupted data (shuffle-labels: every label "
            "on a wrong context; remap-items: every label mapped to another item, as an id "
            "bug would); the gate must reject it."
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option("--address", help="Ray address for online.runner=ray (default: local)."),
    ] = None,
) -> None:
    """Fine-tune from the stream's samples in rounds; promote what passes the gate.

    A round starts once online.every_samples new samples arrived (or online.every_s passed
    with at least online.min_samples). Needs the feature store the stream workers write
    samples to (feature_store.url). Every decision is printed with the holdout and regression
    scores of both versions."""
    require_extras("crossrec online run", "train", "stream")
    import contextlib
    import threading

    from crossrec.online.finetune import DRILLS
    from crossrec.online.learner import OnlineLearner, RoundOutcome
    from crossrec.stream.runner import stop_on_signals

    cfg = load(config, set_)
    if drill is not None and drill not in DRILLS:
        fail(f"--drill {drill!r} is not one of: {', '.join(DRILLS)}")
    store = models_store(cfg)
    stop = threading.Event()

    def show(outcome: RoundOutcome) -> None:
        typer.echo(outcome.summary())

    with contextlib.ExitStack() as stack:
        stack.callback(store.close)
        runner = None
        if cfg.online.runner == "ray":
            from crossrec.ray_runtime import ray_session
            from training.incremental import ray_runner

            stack.enter_context(ray_session(ray_address or cfg.train.ray_address))
            runner = ray_runner(cfg.online)
        learner = OnlineLearner(cfg, store, runner=runner)
        if cfg.online.metrics_port is not None:
            learner.metrics.serve(cfg.online.metrics_port, cfg.online.metrics_host)
            stack.callback(learner.metrics.close)
            typer.echo(
                f"metrics: http://{cfg.online.metrics_host}:{cfg.online.metrics_port}/metrics"
            )
        if now or drill is not None:
            outcome = learner.run_round(force=True, drill=drill)
            if outcome is None:
                typer.echo(
                    f"no round: {len(learner.pending())} new samples (online.min_samples="
                    f"{cfg.online.min_samples}), or no current version / regression set"
                )
            else:
                show(outcome)
            return
        typer.echo(
            f"online learner: a round every {cfg.online.every_samples} samples or "
            f"{cfg.online.every_s:g}s (Ctrl-C stops)"
        )
        with stop_on_signals(stop.set):
            learner.run(
                should_stop=stop.is_set, max_rounds=rounds, max_seconds=exit_after, on_outcome=show
            )


@online_app.command("status")
def online_status(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    decisions: Annotated[int, typer.Option(min=0, help="Recent decisions to show.")] = 5,
    as_json: JsonOpt = False,
) -> None:
    """The sample buffer, the current version and the latest gate decisions."""
    from crossrec.online.learner import OnlineLearner, RoundOutcome

    cfg = load(config, set_)
    store = models_store(cfg)
    try:
        learner = OnlineLearner(cfg, store)
        pointer = store.current_model()
        # One reading of the store serves both outputs (pending() reads the buffer).
        status = {
            "current_version": pointer.version if pointer else None,
            "samples_buffered": len(learner.buffer),
            "buffer_size": cfg.online.buffer_size,
            "new_since_last_round": len(learner.pending()),
            "decisions": learner.buffer.decisions(decisions),
        }
        if as_json:
            emit(status, True)
            return
        typer.echo(f"current version: {status['current_version'] or '-'}")
        typer.echo(
            f"samples buffered: {status['samples_buffered']:,} (cap "
            f"{status['buffer_size']:,}); new since the last round: "
            f"{status['new_since_last_round']:,}"
        )
        for row in status["decisions"]:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["decided_at"]))
            typer.echo(f"{when}  {RoundOutcome(**row).summary()}")
    finally:
        store.close()
