"""Starting the Serve application: `serve_app` (a context manager for tests, the demo and the
benchmark) and `run_server` (`crossrec serve`: embedded services when none are configured, a
local stream worker, the app, and a wait until Ctrl-C)."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from crossrec.config import CrossRecConfig, secret_environment
from crossrec.errors import CrossRecError
from crossrec.feature_store import open_feature_store
from crossrec.ray_runtime import metrics_url, ray_session
from crossrec.registry import current_version
from crossrec.stream.runner import stop_on_signals
from crossrec.stream.services import stream_services

logger = logging.getLogger(__name__)

# Ray Serve's HAProxy ingress (direct to replicas) and its throughput-optimised settings; read
# by every Ray process at start, so they must be in the environment before Ray starts.
HAPROXY_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}


def base_url(cfg: CrossRecConfig) -> str:
    host = "127.0.0.1" if cfg.serve.host in ("0.0.0.0", "::") else cfg.serve.host  # noqa: S104
    return f"http://{host}:{cfg.serve.port}{cfg.serve.route_prefix.rstrip('/')}"


def wait_ready(url: str, timeout_s: float = 300.0) -> dict[str, object]:
    """Polls ``url/v1/readyz`` until it answers 200; returns its body."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/v1/readyz", timeout=5) as reply:  # noqa: S310
                return dict(json.loads(reply.read()))
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read()[:200]!r}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.25)
    raise CrossRecError(f"the API at {url} was not ready within {timeout_s:.0f}s ({last})")


@contextmanager
def serve_app(
    cfg: CrossRecConfig, checkpoint: str | Path | None = None, *, ready_timeout_s: float = 300.0
) -> Iterator[str]:
    """Runs the app on Ray Serve (a local Ray unless ``serve.ray_address``) and yields its base
    URL once ready; deletes the app and stops Serve on exit."""
    import ray
    from ray import serve

    from serving.app import build_application

    if cfg.serve.haproxy:
        if ray.is_initialized() or cfg.serve.ray_address:
            logger.warning(
                "serve.haproxy needs RAY_SERVE_ENABLE_HA_PROXY=1 and "
                "RAY_SERVE_THROUGHPUT_OPTIMIZED=1 in the Ray cluster's environment "
                "(crossrec sets them only for a Ray it starts)"
            )
        else:
            os.environ.update(HAPROXY_ENV)
    secret_env = secret_environment(cfg)
    if secret_env and not ray.is_initialized() and not cfg.serve.ray_address:
        # A Ray started here inherits this environment: the replicas' only way to the
        # passwords, which their arguments do not carry.
        os.environ.update(secret_env)
    elif any(os.environ.get(k) != v for k, v in secret_env.items()):
        logger.warning(
            "the config's service passwords reach Serve replicas only through "
            "their environment (%s): set them in the Ray cluster's environment",
            ", ".join(sorted(secret_env)),
        )
    with ray_session(cfg.serve.ray_address):
        serve.start(
            http_options={
                "host": cfg.serve.host,
                "port": cfg.serve.port,
                "request_timeout_s": cfg.serve.request_timeout_s,
            }
        )
        try:
            app = build_application(cfg, str(checkpoint) if checkpoint else None)
            serve.run(app, name=cfg.serve.app_name, route_prefix=cfg.serve.route_prefix)
            url = base_url(cfg)
            wait_ready(url, ready_timeout_s)
            yield url
        finally:
            serve.shutdown()


def run_server(
    cfg: CrossRecConfig,
    checkpoint: str | Path | None,
    *,
    exit_after_s: float | None = None,
    stream: bool = True,
    echo: Callable[[str], None] = print,
) -> None:
    """`crossrec serve`: publishes ``checkpoint`` as the current version, serves until Ctrl-C
    (or ``exit_after_s``). With ``stream``, a consumer worker in this process stores the events
    the API ingests, so the full path works on one machine."""
    from crossrec.stream.supervisor import WorkerSupervisor
    from serving.auth import describe_key, resolve_keys, with_local_key

    with stream_services(cfg) as services:
        cfg = services.cfg
        for line in services.describe():
            echo(line)
        store = open_feature_store(cfg.feature_store)
        try:
            pointer = current_version(store, checkpoint)
            if pointer is None:
                raise CrossRecError(
                    "no model version to serve: give --checkpoint DIR (a checkpoint or "
                    "RUN/models/), or publish one to the feature store first"
                )
        finally:
            store.close()
        echo(f"current model version {pointer.version} ({pointer.uri})")
        cfg, generated = with_local_key(cfg)
        resolve_keys(cfg.serve)  # auth: key without a key refuses here, with the reason
        supervisor = None
        if stream:
            # Restarted with back-off should it die; the replicas' readiness follows it.
            cfg = cfg.model_copy(deep=True)
            cfg.serve.require_stream_worker = True
            supervisor = WorkerSupervisor(cfg).start()
            echo(
                f"stream worker consuming {cfg.stream.topic} (group {cfg.stream.group_id}); "
                "/v1/readyz follows it"
            )
        stop = threading.Event()
        try:
            echo("starting Ray Serve (encoder + recommender deployments) ...")
            with serve_app(cfg, pointer.uri) as url, stop_on_signals(stop.set):
                echo(f"serving crossrec at {url}  (OpenAPI: {url}/docs, {url}/openapi.json)")
                echo(f"  try: curl '{url}/v1/model'")
                if (metrics := metrics_url()) is not None:
                    echo(f"  metrics (Prometheus, from every replica): {metrics}")
                if generated is not None:
                    for line in describe_key(url, generated):
                        echo(line)
                echo(
                    "Ctrl-C stops" + (f"; exiting after {exit_after_s:g}s" if exit_after_s else "")
                )
                stop.wait(exit_after_s)
                echo("stopping ...")
        finally:
            if supervisor is not None:
                supervisor.stop()
