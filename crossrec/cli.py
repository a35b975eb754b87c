"""The ``crossrec`` command. Commands load and validate config, then call library code."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from crossrec import __version__
from crossrec.errors import CrossRecError
from crossrec.extras import require_extras

app = typer.Typer(
    name="crossrec",
    help="Cross-domain recommendation through language: data, baselines, evaluation, demo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)
app.add_typer(config_app, name="config")
events_app = typer.Typer(help="Produce user events to Kafka.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(events_app, name="events")
models_app = typer.Typer(
    help="Model versions: the registry (registry.root) and the current version.",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")

F = TypeVar("F", bound=Callable[..., Any])

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


def _format_help() -> str:
    from crossrec.config import DATA_FORMATS

    files = ", ".join(f for f in DATA_FORMATS if f != "synthetic")
    return f"Format of the data ({files}); required with a data path, like the path itself."


# One --format for every command: no default; it goes with a data path (PATH or --data), and
# without one the config's data.format (the synthetic world by default) is used.
FormatOpt = Annotated[str | None, typer.Option("--format", "-f", help=_format_help())]


# Exit status: 0 done, 1 a runtime error (data, services, models), 2 bad usage (options,
# config values, unknown names), 130 Ctrl-C, 143 SIGTERM.
EXIT_RUNTIME = 1
EXIT_USAGE = 2


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def exit_code(exc: CrossRecError) -> int:
    """2 for what the command line or config got wrong, 1 for what went wrong running it."""
    from crossrec.errors import ConfigError, UnknownFormatError

    return EXIT_USAGE if isinstance(exc, ConfigError | UnknownFormatError) else EXIT_RUNTIME


def handle_errors(fn: F) -> F:
    """Turns crossrec errors into one clear line on stderr (no traceback) and the exit status
    of their kind (`exit_code`)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CrossRecError as exc:
            _fail(str(exc), exit_code(exc))
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except SystemExit:
            from crossrec.ray_runtime import TERMINATED

            if not TERMINATED.is_set():
                raise
            typer.echo("terminated (SIGTERM); everything this command started is stopped", err=True)
            raise typer.Exit(143) from None

    return wrapper  # type: ignore[return-value]


def _emit(doc: Any, as_json: bool, output: Path | None = None) -> None:
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


def _load(config: Path | None, overrides: list[str] | None, **data: Any):  # type: ignore[no-untyped-def]
    from crossrec.config import load_config
    from crossrec.data.loaders import get_loader

    if data.get("format") is not None:
        get_loader(data["format"])  # an unknown --format names the known ones
    extra = [f"data.{k}={v}" for k, v in data.items() if v is not None]
    return load_config(config, [*(overrides or []), *extra])


def _require_data_with_format(data: object, fmt: str | None) -> None:
    if (data is None) != (fmt is None):
        _fail(
            "a data path and --format go together (e.g. --data ../shared/data/ml-100k --format "
            "movielens)"
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
        _fail(f"--log-level {log_level!r} is not one of debug, info, warning, error")
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    assert isinstance(level, int)  # _fail exits otherwise
    if level > logging.DEBUG:
        # kafka-python warns about its own event loop on busy small machines; not actionable.
        logging.getLogger("kafka").setLevel(max(level, logging.ERROR))


@app.command()
def version() -> None:
    """Print the crossrec version."""
    typer.echo(__version__)


@config_app.command("show")
@handle_errors
def config_show(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the effective configuration (defaults < --config file < --set overrides) as YAML."""
    typer.echo(_load(config, set_).to_yaml(redact=True), nl=False)


@config_app.command("reference")
def config_reference_cmd() -> None:
    """Print the configuration reference (Markdown: every field, type, default, meaning), as
    the README embeds it."""
    from crossrec.config import config_reference

    typer.echo(config_reference(), nl=False)


@data_app.command("inspect")
@handle_errors
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

    _require_data_with_format(path, format)
    cfg = _load(config, set_, format=format)
    stats = load_dataset(cfg.data, path).stats()
    stats["path"] = str(path)
    stats["format"] = format
    _emit(stats, as_json, output)
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


@app.command()
@handle_errors
def evaluate(
    baseline: Annotated[
        str | None,
        typer.Option(
            help="Fit and evaluate a baseline: popularity, itemknn, sasrec, text-zero-shot."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Train and evaluate a crossrec variant: crossrec-target-only, crossrec-transfer, "
            "crossrec-transfer-{dann,mmd,coral,lora}."
        ),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Evaluate a saved checkpoint (or a folder of per-domain checkpoints)."),
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Dataset path; omit for the synthetic world.")
    ] = None,
    format: FormatOpt = None,  # noqa: A002
    protocol: Annotated[
        str | None,
        typer.Option(help="full, sampled, or omit for both (eval.protocols)."),
    ] = None,
    rank: Annotated[
        bool, typer.Option("--rank", help="Checkpoints: score with retrieve+rank.")
    ] = False,
    as_json: JsonOpt = False,
    output: OutputOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Evaluate on the test split: a baseline, a crossrec variant (trained here) or a checkpoint.

    Give exactly one of --baseline, --model, --checkpoint. A checkpoint is evaluated on the data
    its saved config names.
    """
    from crossrec.evaluation import format_rows
    from crossrec.experiments import all_model_names, evaluate_checkpoint, run_models

    chosen = [
        n
        for n, v in (("--baseline", baseline), ("--model", model), ("--checkpoint", checkpoint))
        if v is not None
    ]
    if len(chosen) != 1:
        _fail("give exactly one of --baseline, --model, --checkpoint")
    if protocol not in (None, "full", "sampled"):
        _fail(f"--protocol {protocol!r} is not one of: full, sampled")
    protocols = [protocol] if protocol else None
    if checkpoint is not None:
        rows, cfg = evaluate_checkpoint(checkpoint, protocols, rank=rank)
    else:
        from crossrec.baselines import BASELINES
        from crossrec.data.loaders import load_dataset

        name = baseline or model
        assert name is not None
        known = (
            list(BASELINES) if baseline else [m for m in all_model_names() if m not in BASELINES]
        )
        if name not in known:
            _fail(f"{chosen[0]} {name!r} is not one of: {', '.join(known)}")
        _require_data_with_format(data, format)
        cfg = _load(config, set_, format=format)
        dataset = load_dataset(cfg.data, data)
        rows = run_models(cfg, [name], dataset, protocols=protocols).rows
    if not as_json:
        typer.echo(format_rows(rows, cfg.eval.ks, cfg.eval.num_negatives))
    _emit([r.to_dict() for r in rows], as_json, output)


@app.command()
@handle_errors
def train(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="Run name (default: the config file's name, else 'crossrec'). Rerunning "
            "with the same name resumes the run from its latest checkpoint."
        ),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster: 'auto' or 'ray://HOST:10001' (default: train.ray_address, "
            "else a local Ray sized to this machine)."
        ),
    ] = None,
    num_workers: Annotated[
        int | None,
        typer.Option("--num-workers", min=1, help="Ray Train workers (train.num_workers)."),
    ] = None,
    gpu: Annotated[
        bool, typer.Option("--gpu", help="One GPU per worker, NCCL (train.use_gpu=true).")
    ] = False,
    storage: Annotated[
        str | None,
        typer.Option(help="Folder or s3:// / gs:// URI for runs (train.storage_path)."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Also copy the final models to OUTPUT/<target domain>; "
            "with --local, where they are written (default checkpoints/crossrec).",
        ),
    ] = None,
    local: Annotated[
        bool, typer.Option("--local", help="Train in this process, without Ray.")
    ] = False,
    data: Annotated[Path | None, typer.Option("--data", help="Dataset path (data.path).")] = None,
    fmt: FormatOpt = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print the summary (test rows, model locations) as one JSON document on "
            "stdout; progress goes to stderr.",
        ),
    ] = False,
) -> None:
    """Train the cross-domain model on Ray Train: the stages of train.stages per target domain
    (default: one joint stage over every domain's sequences; or pretrain on the source domains
    then adapt), the ranker, evaluation on the test split; per-epoch checkpoints, resumable by
    --name.

    Final models land in STORAGE/NAME/models/<target> (load them with `crossrec evaluate
    --checkpoint`); stage checkpoints in STORAGE/NAME/stages/<target>/<stage>/."""
    from crossrec.batching import describe_epoch
    from crossrec.evaluation import format_rows

    overrides = list(set_ or [])
    if address:
        overrides.append(f"train.ray_address={address}")
    if num_workers:
        overrides.append(f"train.num_workers={num_workers}")
    if gpu:
        overrides.append("train.use_gpu=true")
    if storage:
        overrides.append(f"train.storage_path={storage}")
    _require_data_with_format(data, fmt)
    cfg = _load(config, overrides, format=fmt, path=data)

    def progress(line: str) -> None:
        typer.echo(line, err=as_json)

    if local:
        from crossrec.experiments import train_crossrec

        result = train_crossrec(
            cfg,
            output or Path("checkpoints/crossrec"),
            on_epoch=lambda record: progress(describe_epoch(record)),
        )
        if as_json:
            _emit(
                {
                    "rows": [r.to_dict() for r in result.rows],
                    "models": {t: str(p) for t, p in result.checkpoints.items()},
                },
                True,
            )
            return
        typer.echo(format_rows(result.rows, cfg.eval.ks, cfg.eval.num_negatives))
        for target, path in result.checkpoints.items():
            typer.echo(f"checkpoint for {target}: {path}")
        return
    require_extras("crossrec train (without --local)", "train")
    from training.pipeline import describe_event, run_training

    run_name = name or (config.stem if config is not None else "crossrec")
    verbose = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    try:
        run = run_training(
            cfg,
            name=run_name,
            on_event=lambda event: progress(describe_event(event)),
            log_to_driver=verbose,
        )
    except (KeyboardInterrupt, SystemExit):
        # Ray Train's own Ctrl-C handler aborts the stage and exits through SystemExit.
        from crossrec.ray_runtime import TERMINATED

        typer.echo(
            f"{'terminated (SIGTERM)' if TERMINATED.is_set() else 'interrupted'}; rerun "
            f"the same command (--name {run_name}) to resume",
            err=True,
        )
        raise typer.Exit(143 if TERMINATED.is_set() else 130) from None
    if not as_json:
        typer.echo(format_rows(run.rows, cfg.eval.ks, cfg.eval.num_negatives))
    for target, uri in run.models.items():
        progress(f"model for {target}: {uri}")
        if output is not None:
            run.storage.download(f"models/{target}", output / target)
            progress(f"  copied to {output / target}")
    if as_json:
        _emit(
            {
                "run": run_name,
                "rows": [r.to_dict() for r in run.rows],
                "models": {t: str(u) for t, u in run.models.items()},
            },
            True,
        )


@app.command("tune")
@handle_errors
def tune_cmd(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Model to tune (tune.model, default crossrec-transfer): a crossrec variant or "
            "a baseline such as sasrec, sasrec-mixed, itemknn."
        ),
    ] = None,
    samples: Annotated[
        int | None, typer.Option("--samples", min=1, help="Trials (tune.num_samples).")
    ] = None,
    time_budget: Annotated[
        float | None,
        typer.Option(
            "--time-budget", min=1, help="Stop the search after S seconds (tune.time_budget_s)."
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Best config YAML (default runs/tune-<model>-<time>/best.yaml); "
            "trials.csv and trials.json are written beside it.",
        ),
    ] = None,
) -> None:
    """Search hyper-parameters with Ray Tune: ASHA stops bad trials early on the mean validation
    NDCG@10 over the target domains.

    Each trial trains the model with sampled overrides (the default space of its family, or
    tune.search_space). Prints a line per finished trial, then the best score and overrides; the
    best config is written as YAML that `crossrec train --config` accepts."""
    require_extras("crossrec tune", "train")
    from crossrec.tuning import run_tune

    overrides = list(set_ or [])
    if model:
        overrides.append(f"tune.model={model}")
    if samples:
        overrides.append(f"tune.num_samples={samples}")
    if time_budget:
        overrides.append(f"tune.time_budget_s={time_budget}")
    cfg = _load(config, overrides)
    verbose = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    run_tune(cfg, output=output, echo=typer.echo, log_to_driver=verbose)


@app.command()
@handle_errors
def recommend(
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint (or folder of checkpoints).")],
    domain: Annotated[str, typer.Option(help="Domain to recommend from.")],
    user: Annotated[
        str | None, typer.Option(help="A user of the checkpoint's dataset (their history is used).")
    ] = None,
    query: Annotated[
        str | None, typer.Option(help="Free text describing what the user wants (cold start).")
    ] = None,
    k: Annotated[int, typer.Option("-k", help="How many items.", min=1, max=1000)] = 10,
    as_json: JsonOpt = False,
    output: OutputOpt = None,
) -> None:
    """Print the top-k items of a domain for a dataset user and/or a text query."""
    from crossrec.data.loaders import load_dataset
    from crossrec.experiments import load_checkpoints
    from crossrec.experiments import recommend as recommend_items

    models = load_checkpoints(checkpoint)
    history: list[tuple[str, str]] = []
    if user is not None:
        cfg = next(iter(models.values())).cfg
        dataset = load_dataset(cfg.data)
        if user not in dataset.user_index:
            _fail(f"--user {user!r} is not in the {cfg.data.format} dataset the checkpoint names")
        history = dataset.user_history(user)
        if not as_json:
            typer.echo(f"history of {user} ({len(history)} items, most recent last):")
            for g in dataset.user_sequence(user)[-5:]:
                typer.echo(f"  [{dataset.items[g].domain}] {dataset.items[g].title}")
    items = recommend_items(models, domain, history=history, query=query, k=k)
    doc = {
        "domain": domain,
        "user": user,
        "query": query,
        "k": k,
        "history_items": len(history),
        "items": [
            {"rank": n, "item_id": r.item_id, "title": r.title, "score": r.score}
            for n, r in enumerate(items, start=1)
        ],
    }
    _emit(doc, as_json, output)
    if as_json:
        return
    typer.echo(f"top {k} in {domain}:")
    for rank_no, rec in enumerate(items, start=1):
        typer.echo(f"{rank_no:3d}. {rec.title}  ({rec.item_id}, score {rec.score:.3f})")


@app.command()
@handle_errors
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

    _require_data_with_format(data, fmt)
    cfg = _load(config, set_, format=fmt, path=data)
    rows = run_demo(cfg, echo=typer.echo, exit_after_s=exit_after)
    if output is not None:
        _emit([r.to_dict() for r in rows], False, output)


@app.command()
@handle_errors
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

    cfg = _load(config, set_)
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
@handle_errors
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

    cfg = _load(config, set_)
    if port is not None:
        cfg.serve.port = port
    run_server(cfg, checkpoint, exit_after_s=exit_after, stream=stream, echo=typer.echo)


@events_app.command("produce")
@handle_errors
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

    cfg = _load(config, set_)
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


def _models_store(cfg: Any) -> Any:
    from crossrec.feature_store import open_feature_store

    if cfg.feature_store.url is None:
        _fail(
            "feature_store.url is not set: the current model version lives in the feature store "
            "serving and the stream use (--set feature_store.url=redis://HOST:6379/0)"
        )
    return open_feature_store(cfg.feature_store)


@models_app.command("register")
@handle_errors
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

    cfg = _load(config, set_)
    metrics = {}
    for name, ckpt in checkpoint_dirs(path).items():
        manifest = json.loads((ckpt / "manifest.json").read_text())
        metrics.update(
            {f"{name}/{k}" if name else k: v for k, v in (manifest.get("metrics") or {}).items()}
        )
    record = ModelRegistry(cfg.registry.root).register(path, parent=parent, metrics=metrics)
    typer.echo(f"registered {record.version} at {record.uri}")


@models_app.command("list")
@handle_errors
def models_list(config: ConfigOpt = None, set_: SetOpt = None, as_json: JsonOpt = False) -> None:
    """Every registered version, oldest first; * marks the current one."""
    from crossrec.registry import ModelRegistry

    cfg = _load(config, set_)
    current = None
    if cfg.feature_store.url is not None:
        store = _models_store(cfg)
        pointer = store.current_model()
        current = pointer.version if pointer else None
        store.close()
    records = ModelRegistry(cfg.registry.root).list()
    if as_json:
        _emit([{**json.loads(r.to_json()), "current": r.version == current} for r in records], True)
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
@handle_errors
def models_show(
    version: Annotated[str, typer.Argument(help="Version id (m-...).")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,  # the record is JSON either way
) -> None:
    """Print one version's record (JSON)."""
    from crossrec.registry import ModelRegistry

    cfg = _load(config, set_)
    typer.echo(ModelRegistry(cfg.registry.root).get(version).to_json().rstrip())


@models_app.command("promote")
@handle_errors
def models_promote(
    version: Annotated[str, typer.Argument(help="Version id (m-...).")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Make a registered version current: serving replicas and stream workers switch to it."""
    from crossrec.registry import ModelRegistry

    cfg = _load(config, set_)
    store = _models_store(cfg)
    try:
        pointer = ModelRegistry(cfg.registry.root).promote(store, version, reason="cli promote")
    finally:
        store.close()
    typer.echo(f"current model version {pointer.version} ({pointer.uri})")


@models_app.command("rollback")
@handle_errors
def models_rollback(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Make the version that was current before the current one current again."""
    from crossrec.registry import ModelRegistry

    cfg = _load(config, set_)
    store = _models_store(cfg)
    try:
        pointer = ModelRegistry(cfg.registry.root).rollback(store)
    finally:
        store.close()
    typer.echo(f"current model version {pointer.version} ({pointer.uri})")


online_app = typer.Typer(
    help="Online learning: fine-tune from the stream's samples, gate, promote.",
    no_args_is_help=True,
)
app.add_typer(online_app, name="online")


@online_app.command("run")
@handle_errors
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

    cfg = _load(config, set_)
    if drill is not None and drill not in DRILLS:
        _fail(f"--drill {drill!r} is not one of: {', '.join(DRILLS)}")
    store = _models_store(cfg)
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
@handle_errors
def online_status(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    decisions: Annotated[int, typer.Option(min=0, help="Recent decisions to show.")] = 5,
    as_json: JsonOpt = False,
) -> None:
    """The sample buffer, the current version and the latest gate decisions."""
    from crossrec.online.learner import OnlineLearner, RoundOutcome

    cfg = _load(config, set_)
    store = _models_store(cfg)
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
            _emit(status, True)
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


def main() -> None:
    """Console-script entry point (`crossrec`, `python -m crossrec`)."""
    app()


if __name__ == "__main__":
    main()
