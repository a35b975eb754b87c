"""`EmbeddedKafka`: librdkafka's mock cluster (inside the ``confluent-kafka`` wheel), via ctypes, on
threads of this process; records live in memory only."""

from __future__ import annotations

import contextlib
import ctypes
import glob
import logging
from pathlib import Path
from types import TracebackType

from crossrec.embedded.common import _LOOPBACK
from crossrec.errors import EmbeddedServiceError

logger = logging.getLogger(__name__)


KAFKA_API_VERSION: tuple[int, int] = (2, 1)
"""The ``api_version`` kafka-python clients must pass to talk to :class:`EmbeddedKafka`.

kafka-python's version auto-detection does not work against librdkafka's mock broker; with
``api_version=(2, 1)`` producing (with headers), fetching, consumer groups and offset commits do.
Consumer groups also want :func:`embedded_kafka_consumer_options`.
"""


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
