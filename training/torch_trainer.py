"""The Ray Train `TorchTrainer` of one stage, built from the crossrec config."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crossrec.config import CrossRecConfig

if TYPE_CHECKING:
    from ray.train.torch import TorchTrainer

SCORE_METRIC = "valid_ndcg@10"


def scaling_config_kwargs(cfg: CrossRecConfig) -> dict[str, Any]:
    """``ScalingConfig`` arguments: ``num_workers``, ``use_gpu``, ``resources_per_worker`` and
    ``accelerator_type`` from ``train``."""
    t = cfg.train
    kwargs: dict[str, Any] = {"num_workers": t.num_workers, "use_gpu": t.use_gpu}
    if t.resources_per_worker:
        kwargs["resources_per_worker"] = dict(t.resources_per_worker)
    if t.accelerator_type:
        kwargs["accelerator_type"] = t.accelerator_type
    return kwargs


def build_trainer(
    cfg: CrossRecConfig,
    loop_config: dict[str, Any],
    *,
    storage_path: str,
    name: str,
    keep_best: bool,
) -> TorchTrainer:
    """A `TorchTrainer` running `training.loop.train_loop_per_worker` for one stage.

    Args:
        cfg: the run's config (``train`` sets scaling, failures and checkpoint retention).
        loop_config: passed to every worker (see `train_loop_per_worker`).
        storage_path: where Ray Train keeps this stage's folder (local path or URI).
        name: the stage's folder name under ``storage_path``; rerunning with the same name
            resumes from its latest checkpoint.
        keep_best: keep checkpoints by validation NDCG@10 (``adapt``) instead of the newest
            (``pretrain``); Ray Train always keeps the latest one as well.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from training.loop import train_loop_per_worker

    t = cfg.train
    checkpoint_config = CheckpointConfig(
        num_to_keep=t.checkpoints_to_keep,
        checkpoint_score_attribute=SCORE_METRIC if keep_best else None,
        checkpoint_score_order="max",
    )
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if t.use_gpu else "gloo"),
        scaling_config=ScalingConfig(**scaling_config_kwargs(cfg)),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            checkpoint_config=checkpoint_config,
            failure_config=FailureConfig(max_failures=t.max_failures),
        ),
    )
