"""`crossrec stream`: start (or connect to) the services, publish a model version if given,
load events if given, and run consumer workers until stopped.

Workers run as Ray actors (``workers`` of them, one consumer group), or one in this process
with ``local``. SIGTERM / Ctrl-C stop them gracefully: each finishes its batch and commits.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from crossrec.config import CrossRecConfig
from crossrec.feature_store import open_feature_store
from crossrec.registry import current_version
from crossrec.stream.events import EventProducer, open_events, produce_lines
from crossrec.stream.services import stream_services
from crossrec.stream.worker import StreamWorker, WorkerReport

logger = logging.getLogger(__name__)


@contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """SIGTERM and SIGINT call ``stop`` (once; a second Ctrl-C interrupts) while inside."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    hits = {"n": 0}

    def handler(signum: int, frame: object) -> None:
        hits["n"] += 1
        if hits["n"] > 1 and signum == signal.SIGINT:
            raise KeyboardInterrupt
        logger.warning(
            "%s: finishing the current batch, committing, stopping", signal.Signals(signum).name
        )
        stop()

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_stream(
    cfg: CrossRecConfig,
    *,
    workers: int | None = None,
    local: bool = False,
    model: str | Path | None = None,
    events_file: str | None = None,
    idle_exit_s: float | None = None,
    ray_address: str | None = None,
    echo: Callable[[str], None] = print,
) -> list[WorkerReport]:
    """Runs the stream until stopped (or idle for ``idle_exit_s``); returns worker reports."""
    n = workers or cfg.stream.workers
    with stream_services(cfg) as services:
        cfg = services.cfg
        for line in services.describe():
            echo(line)
        store = open_feature_store(cfg.feature_store)
        try:
            pointer = current_version(store, model)
            if pointer is not None:
                echo(f"current model version {pointer.version} ({pointer.uri})")
            else:
                echo("no model version published: histories and popularity only")
            if events_file is not None:
                handle, name = open_events(events_file)
                with handle, EventProducer(cfg.stream) as producer:
                    report = produce_lines(producer, handle, name, domains=cfg.stream.domains)
                echo(f"produced {report.sent:,} events from {name}")
        finally:
            store.close()
        if local:
            echo("running 1 worker in this process (Ctrl-C stops it)")
            worker = StreamWorker(cfg)
            with stop_on_signals(worker.stop):
                return [worker.run(idle_exit_s=idle_exit_s)]
        from crossrec.ray_runtime import ray_session
        from crossrec.stream.ray_workers import run_ray_workers

        stop = threading.Event()
        with ray_session(ray_address), stop_on_signals(stop.set):
            echo(
                f"running {n} workers as Ray actors in group {cfg.stream.group_id} "
                "(Ctrl-C stops them)"
            )

            def status(reports: list[WorkerReport]) -> None:
                echo(
                    "  "
                    + " | ".join(
                        f"w{i}: {r.written:,} written, {r.dead_letters:,} dead letters"
                        for i, r in enumerate(reports)
                    )
                )

            return run_ray_workers(
                cfg, n, idle_exit_s=idle_exit_s, on_status=status, should_stop=stop.is_set
            )


def summarize(reports: list[WorkerReport]) -> str:
    names = ("records", "written", "duplicates", "dead_letters", "vectors")
    t = {n: sum(getattr(r, n) for r in reports) for n in names}
    return (
        f"{len(reports)} workers: {t['records']:,} records, {t['written']:,} events written, "
        f"{t['duplicates']:,} duplicates, {t['dead_letters']:,} dead letters, "
        f"{t['vectors']:,} user vectors"
    )
