"""The stage pipeline of ``crossrec train``: ``train.stages`` then ``evaluate``, per target domain
(default ``joint -> evaluate``; the two-stage option is ``pretrain -> adapt -> evaluate``).

* ``joint``, ``pretrain`` and ``adapt`` are Ray Train runs (`training.torch_trainer.build_trainer`),
  each started from the previous stage's kept checkpoint (pretrain: its last epoch; joint and
  adapt: their best epoch by the target's validation NDCG@10).
* ``evaluate`` is a Ray task: it loads the last stage's kept checkpoint, fits the ranker (the
  hybrid ranker by default), evaluates on the
  test cases (full and sampled protocols, every slice) and writes the final model to
  ``NAME/models/<target>``.

A finished stage leaves ``NAME/stages/<target>/<stage>.json``; rerunning the same command with the
same run name skips finished stages and resumes an unfinished one from its latest checkpoint
(Ray Train restores it by run name), so no finished epoch is trained again.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossrec import __version__
from crossrec.batching import describe_epoch
from crossrec.config import RUNTIME_TRAIN_FIELDS, CrossRecConfig
from crossrec.data.splits import Split, make_split
from crossrec.errors import ConfigError, CrossRecError
from crossrec.evaluation import EvaluationRow
from crossrec.trainer import json_safe
from crossrec.trainer.checkpoint import STAGE_FILE
from training.curves import CURVES_FILE, draw_curves
from training.loop import FAULT_ENV
from training.storage import RunStorage

logger = logging.getLogger(__name__)

EventCallback = Callable[[dict[str, Any]], None]
RUN_FILE = "run.json"


@dataclass
class StageResult:
    """A finished stage: its kept checkpoint (path or URI) and what it did."""

    target: str
    stage: str
    checkpoint: str
    epochs: int
    best_epoch: int
    best_valid_ndcg: float
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    reused: bool = False

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "reused"}
        out: dict[str, Any] = json_safe(data)
        return out


@dataclass
class TrainingRun:
    """What ``crossrec train`` produced."""

    name: str
    storage: RunStorage
    split: Split
    stages: list[StageResult] = field(default_factory=list)
    rows: list[EvaluationRow] = field(default_factory=list)
    models: dict[str, str] = field(default_factory=dict)


def describe_event(event: dict[str, Any]) -> str:
    """One progress line for a pipeline event."""
    kind = event.get("event")
    if kind == "epoch":
        line = describe_epoch(event)
        return f"{line} [{int(event.get('world_size', 1))} workers]"
    if kind == "resumed":
        return (
            f"{event['stage']}[{event['target']}] resumed from its checkpoint after epoch "
            f"{event['epoch']}"
        )
    if kind == "stage_reused":
        return f"{event['stage']}[{event['target']}] already finished in this run: reused"
    if kind == "stage_start":
        return f"{event['stage']}[{event['target']}] starting"
    if kind == "stage_done":
        return (
            f"{event['stage']}[{event['target']}] done: {event['epochs']} epochs, kept epoch "
            f"{event['best_epoch']} (valid ndcg@10={event['best_valid_ndcg']:.4f}) "
            f"in {event['seconds']:.1f}s"
        )
    return str(event.get("message", event))


def _comparable_config(cfg: CrossRecConfig) -> dict[str, Any]:
    data = cfg.public_dump()
    for key in RUNTIME_TRAIN_FIELDS:
        data["train"].pop(key, None)
    for key in ("ray_min_items", "ray_actors", "device", "batch_size", "cache_dir"):
        data["encoder"].pop(key, None)
    return data


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


def _check_run_config(storage: RunStorage, cfg: CrossRecConfig) -> bool:
    """Records the run's config, or checks a rerun uses the same one; True when resuming."""
    current = _comparable_config(cfg)
    recorded = storage.read_json(RUN_FILE)
    if recorded is None:
        storage.write_json(
            RUN_FILE,
            {
                "crossrec_version": __version__,
                "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "config": current,
            },
        )
        return False
    changed = _differences(recorded.get("config"), current)
    if changed:
        raise ConfigError(
            "--name",
            f"run {storage.name!r} at {storage.uri()} was started with another config "
            f"(differs in {', '.join(changed[:8])}); rerun with the same config to resume it, or "
            "pick a new --name",
        )
    return True


class _ProgressPump:
    """Drains the workers' progress queue on the driver and hands events to a callback."""

    def __init__(self, on_event: EventCallback | None) -> None:
        from ray.util.queue import Queue

        self.on_event = on_event
        self.queue = Queue(maxsize=10_000, actor_options={"num_cpus": 0})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="crossrec-progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from ray.util.queue import Empty

        while not self._stop.is_set():
            try:
                event = self.queue.get(block=True, timeout=0.5)
            except Empty:
                continue
            except Exception:  # noqa: BLE001 - the queue actor is gone: shutting down
                return
            self.emit(event)

    def emit(self, event: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def close(self) -> None:
        """Delivers what is left, then stops."""
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            while not self.queue.empty():
                self.emit(self.queue.get_nowait())
        except Exception:  # noqa: BLE001 - best effort on shutdown
            logger.debug("progress queue closed", exc_info=True)
        import ray

        ray.kill(self.queue.actor)  # type: ignore[arg-type]


def run_training(
    cfg: CrossRecConfig,
    *,
    name: str,
    on_event: EventCallback | None = None,
    log_to_driver: bool = False,
) -> TrainingRun:
    """Runs (or resumes) the stage pipeline for every target domain on Ray Train.

    Ray comes from ``train.ray_address`` (a cluster) or is started locally for the run.
    ``$CROSSREC_INJECT_FAULT=STAGE:EPOCH[:RANK]`` makes that worker exit once, halfway through
    that epoch (fault-tolerance tests; off by default).
    """
    from training.runtime import ray_session

    storage = RunStorage(cfg.train.storage_path, name)  # a bad name fails before Ray starts
    with ray_session(cfg.train.ray_address, log_to_driver=log_to_driver):
        return _run(cfg, storage, on_event)


def _run(cfg: CrossRecConfig, storage: RunStorage, on_event: EventCallback | None) -> TrainingRun:
    import ray

    from crossrec.data.loaders import load_dataset
    from crossrec.encoders.items import item_texts
    from crossrec.encoders.template import ItemTextTemplate
    from crossrec.experiments import target_domains_for
    from training.encoding import run_item_vectors

    name = storage.name
    resuming = _check_run_config(storage, cfg)
    emit = on_event or (lambda event: None)
    emit(
        {
            "event": "message",
            "message": f"run {name!r} at {storage.uri()}" + (" (resuming)" if resuming else ""),
        }
    )
    dataset = load_dataset(cfg.data)
    split = make_split(dataset, cfg.eval, target_domains_for(dataset, cfg))
    template = ItemTextTemplate.from_config(cfg.encoder)
    vectors = run_item_vectors(
        item_texts(dataset, template),
        template.key(),
        cfg.encoder,
        storage,
        use_gpu=cfg.train.use_gpu,
        on_message=lambda message: emit({"event": "message", "message": message}),
    )
    run = TrainingRun(name=name, storage=storage, split=split)
    split_ref, vectors_ref = ray.put(split), ray.put(vectors)
    board = None
    if cfg.train.tensorboard:
        from training.tensorboard import TENSORBOARD_DIR, TensorBoardLogger

        logdir = storage.local_path(TENSORBOARD_DIR) or Path(TENSORBOARD_DIR) / name
        board = TensorBoardLogger(logdir)
        emit({"event": "message", "message": f"TensorBoard: tensorboard --logdir {logdir}"})

        def both(event: dict[str, Any]) -> None:
            board.event(event)
            emit(event)

        pump = _ProgressPump(both)
    else:
        pump = _ProgressPump(on_event)
    try:
        for target in split.target_domains:
            previous: str | None = None
            for stage in cfg.train.stages:
                result = _run_stage(
                    cfg, storage, target, stage, previous, split, split_ref, vectors_ref, pump
                )
                run.stages.append(result)
                previous = result.checkpoint
            if previous is None:
                raise CrossRecError(f"no stage trained a model for target {target!r}")
            rows, model_uri = _evaluate(cfg, storage, target, previous, split_ref, pump)
            run.rows.extend(rows)
            run.models[target] = model_uri
    finally:
        pump.close()
        if board is not None:
            board.close()
    png = draw_curves(run.stages, title=f"crossrec train --name {name}")
    if png is not None:
        storage.write_bytes(CURVES_FILE, png)
        emit({"event": "message", "message": f"training curves: {storage.uri(CURVES_FILE)}"})
    return run


def _stage_marker(target: str, stage: str) -> str:
    return f"stages/{target}/{stage}.json"


def _checkpoint_uri(storage: RunStorage, checkpoint: Any) -> str:
    if storage.is_local:
        return str(checkpoint.path)
    scheme = storage.base_uri.split("://", 1)[0]
    return f"{scheme}://{checkpoint.path}"


def _run_stage(
    cfg: CrossRecConfig,
    storage: RunStorage,
    target: str,
    stage: str,
    previous: str | None,
    split: Split,
    split_ref: Any,
    vectors_ref: Any,
    pump: _ProgressPump,
) -> StageResult:
    from ray.train import Checkpoint

    from training.torch_trainer import SCORE_METRIC, build_trainer

    marker = storage.read_json(_stage_marker(target, stage))
    if marker is not None:
        pump.emit({"event": "stage_reused", "stage": stage, "target": target})
        marker["best_valid_ndcg"] = float(marker["best_valid_ndcg"])
        return StageResult(**marker, reused=True)
    pump.emit({"event": "stage_start", "stage": stage, "target": target})
    keep_best = stage in ("adapt", "joint") and any(c.domain == target for c in split.valid)
    fault = os.environ.get(FAULT_ENV) or None
    loop_config = {
        "cfg": cfg.public_dump(),  # training needs no credential: none travels to the workers
        "stage": stage,
        "target": target,
        "split": split_ref,
        "text_vectors": vectors_ref,
        "init_checkpoint": Checkpoint(previous) if previous else None,
        "run_name": storage.name,
        "progress": pump.queue,
        "fault": fault,
        "fault_marker_dir": storage.local_path(f"stages/{target}") or tempfile.gettempdir(),
    }
    started = time.perf_counter()
    trainer = build_trainer(
        cfg,
        loop_config,
        storage_path=storage.uri(f"stages/{target}"),
        name=stage,
        keep_best=keep_best,
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    latest = result.checkpoint
    if latest is None:
        raise CrossRecError(f"stage {stage} of {target!r} reported no checkpoint")
    kept = latest
    if keep_best and result.best_checkpoints:
        kept = max(result.best_checkpoints, key=lambda pair: pair[1].get(SCORE_METRIC, -1.0))[0]
    # Only the small stage manifest is read: no download of the checkpoint's weights.
    with latest.filesystem.open_input_stream(f"{latest.path}/{STAGE_FILE}") as handle:
        manifest = json.loads(handle.read().decode("utf-8"))
    state = manifest["state"]
    if not state["finished"]:
        raise CrossRecError(
            f"stage {stage} of {target!r} stopped after epoch {state['epoch']} without finishing "
            "(interrupted?); rerun the same command to resume it"
        )
    out = StageResult(
        target=target,
        stage=stage,
        checkpoint=_checkpoint_uri(storage, kept),
        epochs=int(state["epoch"]),
        best_epoch=int(state["best_epoch"]),
        best_valid_ndcg=float(state["best_valid_ndcg"]),
        seconds=time.perf_counter() - started,
        history=state["history"],
    )
    storage.write_json(_stage_marker(target, stage), out.to_json())
    pump.emit({"event": "stage_done", **out.__dict__})
    return out


def _evaluate(
    cfg: CrossRecConfig,
    storage: RunStorage,
    target: str,
    checkpoint: str,
    split_ref: Any,
    pump: _ProgressPump,
) -> tuple[list[EvaluationRow], str]:
    import ray

    marker = storage.read_json(_stage_marker(target, "evaluate"))
    if marker is None:
        pump.emit({"event": "stage_start", "stage": "evaluate", "target": target})
        task = ray.remote(evaluate_target).options(
            num_cpus=1, num_gpus=1 if cfg.train.use_gpu else 0, max_retries=1
        )
        pending = task.remote(
            cfg.model_dump(mode="json"),
            split_ref,
            target,
            checkpoint,
            cfg.train.storage_path,
            storage.name,
        )
        rows_json = ray.get(pending)
        pump.emit({"event": "message", "message": f"evaluate[{target}] done"})
        marker = {"rows": rows_json, "model": storage.uri(f"models/{target}")}
        storage.write_json(_stage_marker(target, "evaluate"), marker)
    else:
        pump.emit({"event": "stage_reused", "stage": "evaluate", "target": target})
    return [EvaluationRow(**row) for row in marker["rows"]], str(marker["model"])


def evaluate_target(
    cfg_json: dict[str, Any],
    split: Split,
    target: str,
    checkpoint: str,
    storage_path: str,
    run_name: str,
) -> list[dict[str, Any]]:
    """The ``evaluate`` stage (a Ray task): ranker, test evaluation, final model export."""
    import torch
    from ray.train import Checkpoint

    from crossrec.evaluation import TargetDomainEvaluator
    from crossrec.experiments import CheckpointRecommender
    from crossrec.models.crossrec_model import CrossRecModel
    from crossrec.trainer import CrossRecTrainer

    cfg = CrossRecConfig.model_validate(cfg_json)
    storage = RunStorage(storage_path, run_name)
    with Checkpoint(checkpoint).as_directory() as directory:
        model = CrossRecModel.from_pretrained(Path(directory) / "model")
    device = "cuda" if cfg.train.use_gpu and torch.cuda.is_available() else "cpu"
    model.to_device(device)
    trainer = CrossRecTrainer(model, split, cfg, target)
    trainer.fit_rankers()
    model.eval()
    one_target = copy.copy(split)
    one_target.target_domains = [target]
    rows = TargetDomainEvaluator(one_target, cfg.eval).evaluate(
        CheckpointRecommender({target: model}), "test", model_name="crossrec"
    )
    for row in rows:
        if row.slice == "all":
            model.metrics.update({f"test_{row.protocol}_{k}": v for k, v in row.metrics.items()})
    model.stage = "evaluate"
    model.to_device("cpu")
    local = storage.local_path(f"models/{target}")
    if local is not None:
        model.save_pretrained(local)
    else:
        with tempfile.TemporaryDirectory(prefix="crossrec-model-") as tmp:
            model.save_pretrained(Path(tmp))
            storage.upload(Path(tmp), f"models/{target}")
    return [row.to_dict() for row in rows]
