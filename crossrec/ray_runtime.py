"""Connecting to Ray: a cluster by address, or a local Ray sized to this machine. Ray is
imported only when a session starts (`import crossrec` never imports Ray)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger(__name__)

# Ray's switch for single-machine use (its default on macOS and Windows): the node's address is
# the loopback address, so GCS, raylet, workers, agents and the dashboard listen on 127.0.0.1
# only. Without it a local Ray on Linux listens on every interface.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextmanager
def loopback_ray() -> Iterator[None]:
    """While a local Ray starts: every process it launches binds to loopback (they read
    `LOOPBACK_ENV` at start), as does this driver. A value set by the user is kept."""
    from ray._private import ray_constants

    if LOOPBACK_ENV in os.environ:
        yield
        return
    previous = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        # The processes started keep it; this process goes back to Ray's default for any
        # later connection to a real cluster.
        os.environ.pop(LOOPBACK_ENV, None)
        ray_constants.ENABLE_RAY_CLUSTER = previous


@contextmanager
def ray_session(
    address: str | None = None, *, log_to_driver: bool = False, num_cpus: int | None = None
) -> Iterator[dict[str, Any]]:
    """Connects to the Ray cluster at ``address`` (``auto`` or ``ray://HOST:10001``), or starts
    a local Ray with every CPU (and GPU) of this machine; shuts down what it started.

    Yields the cluster's resources. An already initialised Ray (a test, a notebook) is reused
    and left running.
    """
    import ray

    if not log_to_driver:
        # Ray's INFO lines (cluster start, Ray Data plans) drown the training progress.
        for name in ("ray", "ray.data", "ray.train"):
            logging.getLogger(name).setLevel(logging.WARNING)
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"log_to_driver": log_to_driver, "include_dashboard": False}
        if address:
            logger.info("connecting to Ray address=%s", address)
            if _is_loopback(address):
                # A Ray on loopback (one crossrec or a test started): this driver must take
                # the loopback address as its node's too, or Ray swaps 127.0.0.1 for the
                # machine's address and never reaches the GCS.
                with loopback_ray():
                    ray.init(address=address, **kwargs)
            else:
                ray.init(address=address, **kwargs)
        else:
            cpus = num_cpus or os.cpu_count() or 1
            logger.info("starting a local Ray num_cpus=%d (listening on loopback only)", cpus)
            with loopback_ray():
                ray.init(num_cpus=cpus, **kwargs)
        started = True
    # Ray's own SIGTERM handler aborts the process with a C++ stack trace; while this session
    # lasts, SIGTERM instead unwinds Python (stopping what was started here) and exits 143.
    handled = started and threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if handled else None
    try:
        yield dict(ray.cluster_resources())
    finally:
        if handled:  # a handler set outside Python reads as None: back to the default
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        if started:
            ray.shutdown()


def _is_loopback(address: str) -> bool:
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


TERMINATED = threading.Event()
"""Set once a Ray session here got SIGTERM (Ray Train may turn the exit into its own)."""


def _exit_on_sigterm(signum: int, frame: object) -> None:
    TERMINATED.set()
    logger.warning("SIGTERM: stopping Ray and everything started here, then exiting")
    raise SystemExit(128 + signum)


def metrics_url() -> str | None:
    """Where this node's Ray exports Prometheus metrics (every custom metric of its workers,
    Serve replicas' included), or None without a Ray session here."""
    import ray

    if not ray.is_initialized():
        return None
    node = getattr(ray._private.worker, "_global_node", None)  # None when connected by address
    port = getattr(node, "metrics_export_port", None)
    if node is None or not port:
        return None
    return f"http://{node.node_ip_address}:{port}/metrics"
