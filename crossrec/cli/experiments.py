"""Top-level commands that train and score models: `train`, `tune`, `evaluate`, `recommend`."""

from __future__ import annotations

import logging
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
    fail,
    load,
    require_data_with_format,
)
from crossrec.cli.root import app
from crossrec.extras import require_extras


@app.command()
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
        fail("give exactly one of --baseline, --model, --checkpoint")
    if protocol not in (None, "full", "sampled"):
        fail(f"--protocol {protocol!r} is not one of: full, sampled")
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
            fail(f"{chosen[0]} {name!r} is not one of: {', '.join(known)}")
        require_data_with_format(data, format)
        cfg = load(config, set_, format=format)
        dataset = load_dataset(cfg.data, data)
        rows = run_models(cfg, [name], dataset, protocols=protocols).rows
    if not as_json:
        typer.echo(format_rows(rows, cfg.eval.ks, cfg.eval.num_negatives))
    emit([r.to_dict() for r in rows], as_json, output)


@app.command()
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
    require_data_with_format(data, fmt)
    cfg = load(config, overrides, format=fmt, path=data)

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
            emit(
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
        emit(
            {
                "run": run_name,
                "rows": [r.to_dict() for r in run.rows],
                "models": {t: str(u) for t, u in run.models.items()},
            },
            True,
        )


@app.command("tune")
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
    cfg = load(config, overrides)
    verbose = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    run_tune(cfg, output=output, echo=typer.echo, log_to_driver=verbose)


@app.command()
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
            fail(f"--user {user!r} is not in the {cfg.data.format} dataset the checkpoint names")
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
    emit(doc, as_json, output)
    if as_json:
        return
    typer.echo(f"top {k} in {domain}:")
    for rank_no, rec in enumerate(items, start=1):
        typer.echo(f"{rank_no:3d}. {rec.title}  ({rec.item_id}, score {rec.score:.3f})")
