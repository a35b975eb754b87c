"""Stream workers as Ray actors: ``crossrec stream --workers N`` runs N consumers of one group
(a worker per partition at most is useful), each in its own Ray actor process.

Ray is imported only when workers start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from crossrec.config import CrossRecConfig
from crossrec.stream.worker import StreamWorker, WorkerReport

logger = logging.getLogger(__name__)


class StreamWorkerActor:
    """Holds one :class:`StreamWorker`; ``run`` and ``stop`` are called from the driver (the
    actor runs with two threads, so ``stop`` arrives while ``run`` is busy)."""

    def __init__(self, cfg: CrossRecConfig, worker_index: int) -> None:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        logging.getLogger("kafka").setLevel(logging.ERROR)
        self.worker = StreamWorker(cfg, worker_index=worker_index)

    def run(self, idle_exit_s: float | None = None) -> WorkerReport:
        return self.worker.run(idle_exit_s=idle_exit_s)

    def stop(self) -> None:
        self.worker.stop()

    def report(self) -> WorkerReport:
        return self.worker.report


def run_ray_workers(
    cfg: CrossRecConfig,
    num_workers: int,
    *,
    idle_exit_s: float | None = None,
    on_status: Callable[[list[WorkerReport]], None] | None = None,
    status_every_s: float = 10.0,
    should_stop: Callable[[], bool] | None = None,
) -> list[WorkerReport]:
    """Runs ``num_workers`` workers as Ray actors (in the current Ray session) until they all
    stop (``idle_exit_s``) or ``should_stop()`` turns true, then stops them gracefully."""
    import ray

    remote: Any = ray.remote  # typed overloads do not cover actor options
    actor_cls = remote(num_cpus=cfg.stream.worker_num_cpus, max_concurrency=2)(StreamWorkerActor)
    actors = [actor_cls.remote(cfg, i) for i in range(num_workers)]
    runs = {actor.run.remote(idle_exit_s): actor for actor in actors}
    pending = list(runs)
    reports: dict[Any, WorkerReport] = {}
    last_status = time.monotonic()
    stopping = False
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
            for ref in done:
                reports[ref] = ray.get(ref)  # a worker's exception surfaces here
            if not stopping and should_stop is not None and should_stop():
                stopping = True
                ray.get([a.stop.remote() for a in actors])
            if on_status and time.monotonic() - last_status >= status_every_s:
                last_status = time.monotonic()
                on_status(ray.get([a.report.remote() for a in actors]))
    finally:
        if pending:  # an error or an interrupt: stop the rest gracefully
            for actor in actors:
                actor.stop.remote()
            ready, _ = ray.wait(pending, num_returns=len(pending), timeout=30)
            for ref in ready:
                try:
                    reports[ref] = ray.get(ref)
                except Exception:  # already failing; the first error is the one raised
                    logger.exception("worker failed while stopping")
        for actor in actors:
            ray.kill(actor)
    return [reports[ref] for ref in runs if ref in reports]
