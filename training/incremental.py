"""Incremental fine-tunes as Ray tasks: `OnlineLearner` rounds on a cluster's CPU or GPU workers.

The task runs the same plain-PyTorch `crossrec.online.finetune.train_candidate` the local runner
runs, with ``online.num_cpus`` / ``online.num_gpus`` (on a GPU worker it trains on ``cuda``).
Candidates are written to the registry's staging folder, which must be on storage the worker
and the learner share (the same machine, or a shared file system) for a multi-node cluster.

Example:
    >>> learner = OnlineLearner(cfg, store, runner=ray_runner(cfg.online))
"""

from __future__ import annotations

from typing import Any

from crossrec.config import OnlineConfig
from crossrec.online.finetune import CandidateResult, RoundData, train_candidate
from crossrec.online.learner import CandidateRunner


def _train_candidate_task(*args: Any, **kwargs: Any) -> CandidateResult:
    import logging

    logging.basicConfig(level=logging.INFO)
    return train_candidate(*args, **kwargs)


def ray_runner(resources: OnlineConfig) -> CandidateRunner:
    """A runner that trains each round's candidate in a Ray task with ``resources.num_cpus``
    and ``resources.num_gpus`` (Ray must be initialised)."""
    import ray

    task = ray.remote(num_cpus=resources.num_cpus, num_gpus=resources.num_gpus, max_retries=1)(
        _train_candidate_task
    )

    def run(
        parent_uri: str,
        parent_version: str,
        data: RoundData,
        cfg: OnlineConfig,
        out_dir: str,
        *,
        rank: bool,
        drill: str | None,
    ) -> CandidateResult:
        ref = task.remote(parent_uri, parent_version, data, cfg, out_dir, rank=rank, drill=drill)
        result: CandidateResult = ray.get(ref)
        return result

    return run
