"""The stream end to end, against a real redis-server and a Kafka-protocol broker:
exactly-once effects from at-least-once delivery, dead letters, crashes, Redis outages,
consumer groups, and fresh user vectors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from kafka import KafkaConsumer, TopicPartition

from crossrec.config import CrossRecConfig
from crossrec.data.dataset import CrossDomainDataset
from crossrec.embedded import EmbeddedKafka, EmbeddedRedis
from crossrec.feature_store import RedisFeatureStore
from crossrec.models.bundle import ModelBundle
from crossrec.models.crossrec_model import CrossRecModel
from crossrec.stream.events import Event, EventProducer
from crossrec.stream.runner import publish_model
from crossrec.stream.updates import history_context
from crossrec.stream.worker import FAULT_ENV, FAULT_EXIT_CODE, StreamWorker
from tests.conftest import unique

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
MAX_EVENT_BYTES = 2048


def stream_config(
    kafka: EmbeddedKafka, redis_url: str, *, partitions: int = 4, **stream: Any
) -> CrossRecConfig:
    name = unique("stream")
    cfg = CrossRecConfig()
    s = cfg.stream
    s.bootstrap_servers, s.api_version, s.mock_broker = kafka.bootstrap_servers, "2.1", True
    s.topic, s.dead_letter_topic, s.group_id = f"{name}-events", f"{name}-dlq", f"{name}-group"
    s.domains, s.max_event_bytes = ["books", "films"], MAX_EVENT_BYTES
    s.poll_timeout_ms, s.lag_interval_s, s.backoff_s, s.max_backoff_s = 1000, 0.3, 0.1, 0.5
    s.rejoin_timeout_s = 20.0
    for key, value in stream.items():
        setattr(s, key, value)
    cfg.feature_store.url = redis_url
    cfg.feature_store.key_prefix = name
    cfg.feature_store.history_length = 500
    for topic in (s.topic, s.dead_letter_topic):
        kafka.create_topic(topic, partitions)
    return cfg


def events_for(n: int, users: int = 300, start: int = 0, now: float | None = None) -> list[Event]:
    now = time.time() if now is None else now
    return [
        Event(
            event_id=f"ev-{i}",
            user_id=f"user-{i % users}",
            item_id=f"item-{i % 97}",
            domain=("books", "films")[i % 2],
            event_type=("view", "click", "purchase")[i % 3],
            timestamp=now - 1000 + i * 1e-3,
        )  # fmt: skip
        for i in range(start, start + n)
    ]


def produce(cfg: CrossRecConfig, events: list[Event], raw: list[bytes] = ()) -> None:  # type: ignore[assignment]
    with EventProducer(cfg.stream) as producer:
        for event in events:
            producer.send(event)
        for value in raw:
            producer.send_raw(value, key=b"bad")


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):
        if condition():
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def committed_offsets(cfg: CrossRecConfig) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=cfg.stream.bootstrap_servers, api_version=(2, 1),
                             group_id=cfg.stream.group_id, enable_auto_commit=False)  # fmt: skip
    try:
        parts = consumer.partitions_for_topic(cfg.stream.topic) or set()
        return {p: consumer.committed(TopicPartition(cfg.stream.topic, p)) or 0 for p in parts}
    finally:
        consumer.close(autocommit=False)


def read_topic(cfg: CrossRecConfig, topic: str, expected: int) -> list[Any]:
    consumer = KafkaConsumer(topic, bootstrap_servers=cfg.stream.bootstrap_servers,
                             api_version=(2, 1), auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=3000)  # fmt: skip
    out: list[Any] = []
    try:
        deadline = time.monotonic() + 30
        while len(out) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(records)
    finally:
        consumer.close(autocommit=False)
    return out


def assert_exactly_once(store: RedisFeatureStore, events: list[Event]) -> None:
    """Every event is in its user's dedupe set, history and counter, once."""
    by_user: dict[str, list[str]] = {}
    for e in events:
        by_user.setdefault(e.uid, []).append(e.eid)
    states = store.histories(sorted(by_user), ["books", "films"])
    for user, ids in by_user.items():
        seq, entries = states[user]
        assert seq == len(ids), f"{user}: counter {seq}, {len(ids)} events"
        assert sorted(h.event_id for h in entries) == sorted(ids), user
        seen = {m.decode() for m in store.client.zrange(store.user_key(user, "seen"), 0, -1)}
        assert seen == set(ids), user


class WorkerThread:
    """A worker running in a daemon thread, stopped and joined with bounds."""

    def __init__(self, worker: StreamWorker, **run: Any) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, kwargs=run, daemon=True)
        self.thread.start()

    def _run(self, **run: Any) -> None:
        try:
            self.worker.run(**run)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def committed(self) -> int:
        return sum(self.worker.report.committed.values())

    def stop(self, timeout: float = 30.0) -> None:
        self.worker.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "worker did not stop"
        if self.error is not None:
            raise self.error


# --------------------------------------------------------------------------- 10k events
MALFORMED: list[tuple[Callable[[int], bytes], str]] = [
    (lambda i: b'{"event_id": "bad-%d", "user_id": ' % i, "not valid JSON"),
    (
        lambda i: json.dumps(
            {
                "event_id": f"bad-{i}",
                "user_id": "u",
                "domain": "films",
                "event_type": "view",
                "timestamp": 1.0,
            }
        ).encode(),
        "missing field 'item_id'",
    ),  # fmt: skip
    (
        lambda i: json.dumps(
            {
                "event_id": f"bad-{i}",
                "user_id": "u",
                "item_id": "i",
                "domain": "games",
                "event_type": "view",
                "timestamp": 1.0,
            }
        ).encode(),
        "unknown domain 'games'",
    ),  # fmt: skip
    (
        lambda i: json.dumps(
            {
                "event_id": f"bad-{i}",
                "user_id": "u",
                "item_id": "i",
                "domain": "films",
                "event_type": "view",
                "timestamp": "noon",
            }
        ).encode(),
        "field 'timestamp': must be a number",
    ),  # fmt: skip
    (
        lambda i: json.dumps(
            {
                "event_id": f"bad-{i}",
                "user_id": "u",
                "item_id": "x" * 200,
                "domain": "films",
                "event_type": "view",
                "timestamp": 1.0,
                "pad": "p" * MAX_EVENT_BYTES,
            }
        ).encode(),
        f"more than the {MAX_EVENT_BYTES} allowed",
    ),  # fmt: skip
]


def test_ten_thousand_events_with_one_percent_malformed(
    kafka_broker: EmbeddedKafka, redis_server: EmbeddedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = stream_config(kafka_broker, redis_server.url)
    good = events_for(9_900)
    bad = {MALFORMED[i % 5][0](i): MALFORMED[i % 5][1] for i in range(100)}
    assert len(bad) == 100
    produce(cfg, good, list(bad))

    worker = StreamWorker(cfg)
    with caplog.at_level("WARNING", logger="crossrec.stream.updates"):
        report = worker.run(idle_exit_s=2.0)

    assert (report.written, report.duplicates, report.dead_letters) == (9_900, 0, 100)
    assert_exactly_once(worker.store, good)  # type: ignore[arg-type]
    # Offsets: committed up to the end of every partition.
    ends = {tp.partition: off for tp, off in KafkaConsumer(
        bootstrap_servers=cfg.stream.bootstrap_servers, api_version=(2, 1)
    ).end_offsets([TopicPartition(cfg.stream.topic, p) for p in range(4)]).items()}  # fmt: skip
    assert committed_offsets(cfg) == ends
    assert sum(ends.values()) == 10_000
    # Every malformed record is in the dead-letter topic: original bytes, reason, source.
    dead = read_topic(cfg, cfg.stream.dead_letter_topic, 100)
    assert len(dead) == 100
    for record in dead:
        headers = {k: v.decode() for k, v in record.headers}
        assert bad[record.value] in headers["crossrec-reason"]
        assert headers["crossrec-source-topic"] == cfg.stream.topic
        assert (
            0
            <= int(headers["crossrec-source-offset"])
            < ends[int(headers["crossrec-source-partition"])]
        )
    assert {r.value for r in dead} == set(bad)
    # Prometheus metrics agree; lag is read and is zero once everything is consumed.
    m = worker.metrics
    assert m.value("crossrec_stream_events_total", outcome="written") == 9_900
    assert m.value("crossrec_stream_events_total", outcome="dead_letter") == 100
    lags = [m.registry.get_sample_value("crossrec_stream_consumer_lag",
                                        {"worker": "0", "topic": cfg.stream.topic,
                                         "partition": str(p)}) for p in range(4)]  # fmt: skip
    assert lags == [0.0, 0.0, 0.0, 0.0]
    # No model published: histories updated, vectors skipped with a clear log line.
    assert report.vectors == 0
    assert any("user vectors are skipped" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- crash
def _stream_cli(cfg_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "crossrec.cli", "stream", "--local", "--config", str(cfg_path),
           "--idle-exit", "3"]  # fmt: skip
    return subprocess.run(  # noqa: S603 - our own CLI
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_a_crash_between_write_and_commit_loses_nothing_and_counts_nothing_twice(
    kafka_broker: EmbeddedKafka, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    cfg = stream_config(kafka_broker, redis_server.url, batch_size=500)
    events = events_for(3_000, users=50)
    produce(cfg, events)
    cfg_path = tmp_path / "stream.yaml"
    cfg_path.write_text(cfg.to_yaml())
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    crashed = _stream_cli(cfg_path, {**env, FAULT_ENV: "after_write:2"})
    assert crashed.returncode == FAULT_EXIT_CODE, crashed.stderr[-2000:]
    assert "injected fault" in crashed.stderr
    written_before_commit = sum(committed_offsets(cfg).values())
    assert written_before_commit < 3_000  # the second batch was written, not committed

    again = _stream_cli(cfg_path, env)
    assert again.returncode == 0, again.stderr[-2000:]
    summary = re.search(r"([\d,]+) events written, ([\d,]+) duplicates", again.stdout)
    assert summary is not None, again.stdout
    written, duplicates = (int(g.replace(",", "")) for g in summary.groups())
    assert duplicates > 0, (written_before_commit, again.stdout, crashed.stderr[-3000:])
    assert written + duplicates == 3_000 - written_before_commit
    store = RedisFeatureStore.from_config(cfg.feature_store)
    assert_exactly_once(store, events)  # ...and nothing was lost or counted twice
    assert sum(committed_offsets(cfg).values()) == 3_000


# --------------------------------------------------------------------------- Redis outage
def test_redis_outage_commits_nothing_unwritten_and_resumes(
    kafka_broker: EmbeddedKafka, tmp_path: Path
) -> None:
    with EmbeddedRedis(data_dir=tmp_path / "redis") as server:
        cfg = stream_config(kafka_broker, server.url)
        cfg.feature_store.retries = 0
        cfg.feature_store.connect_timeout_s = cfg.feature_store.socket_timeout_s = 1.0
        first, second = events_for(1_000), events_for(1_000, start=1_000)
        running = WorkerThread(StreamWorker(cfg))
        try:
            produce(cfg, first)
            wait_for("the first 1,000 events committed", lambda: running.committed() == 1_000)
            server.stop()
            produce(cfg, second)
            wait_for("write retries", lambda: running.worker.report.store_retries >= 3)
            assert sum(committed_offsets(cfg).values()) == 1_000
            assert running.committed() == 1_000
            server.start()
            wait_for("all 2,000 committed", lambda: running.committed() == 2_000)
        finally:
            running.stop()
        assert running.worker.report.written == 2_000
        store = RedisFeatureStore.from_config(cfg.feature_store)
        assert_exactly_once(store, first + second)


# --------------------------------------------------------------------------- a group
def test_two_ray_workers_share_the_partitions_without_duplicates(
    kafka_broker: EmbeddedKafka, redis_server: EmbeddedRedis
) -> None:
    import ray

    from crossrec.stream.ray_workers import run_ray_workers

    cfg = stream_config(kafka_broker, redis_server.url, worker_num_cpus=0.5)
    events = events_for(4_000, users=200)
    result: dict[str, Any] = {}
    stop = threading.Event()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:

        def run() -> None:
            try:
                result["reports"] = run_ray_workers(cfg, 2, should_stop=stop.is_set)
            except BaseException as exc:
                result["error"] = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        # Events keep arriving for a while, so both workers have joined before the end.
        for chunk in range(8):
            produce(cfg, events[chunk * 500 : (chunk + 1) * 500])
            time.sleep(0.75)
        wait_for("every event committed", lambda: sum(committed_offsets(cfg).values()) == 4_000,
                 timeout=120)  # fmt: skip
        stop.set()
        thread.join(120)
        assert not thread.is_alive(), "workers did not stop"
    finally:
        stop.set()
        ray.shutdown()
    assert "error" not in result, result.get("error")
    reports = result["reports"]
    assert len(reports) == 2
    assert all(r.written > 0 for r in reports)  # both took part
    # Each event is stored and counted by exactly one worker. (The mock broker refuses offset
    # commits while a rebalance is under way, so a batch written just before one can be
    # delivered again to the partition's next owner; the dedupe recognises it.)
    assert sum(r.written for r in reports) == 4_000
    partitions = [set(r.committed) for r in reports]
    assert partitions[0] | partitions[1] == {f"{cfg.stream.topic}[{p}]" for p in range(4)}
    store = RedisFeatureStore.from_config(cfg.feature_store)
    assert_exactly_once(store, events)


# --------------------------------------------------------------------------- freshness
@pytest.fixture(scope="module")
def model_version(
    small_world: CrossDomainDataset, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """An (untrained) model version for films over the small world."""
    from tests.conftest import SMALL_WORLD

    cfg = CrossRecConfig()
    cfg.data.synthetic = SMALL_WORLD
    torch.manual_seed(0)
    vectors = torch.randn(small_world.num_items, 384)
    model = CrossRecModel.for_dataset(small_world, cfg, text_vectors=vectors)
    model.target_domain = "films"
    root = tmp_path_factory.mktemp("version")
    model.save_pretrained(root / "films")
    return root


def test_a_users_vector_follows_their_events(
    kafka_broker: EmbeddedKafka,
    redis_server: EmbeddedRedis,
    small_world: CrossDomainDataset,
    model_version: Path,
) -> None:
    cfg = stream_config(kafka_broker, redis_server.url)
    store = RedisFeatureStore.from_config(cfg.feature_store)
    pointer = publish_model(store, model_version)
    bundle = ModelBundle.load(model_version)
    model = bundle.models["films"]
    books = [it.item_id for it in small_world.items if it.domain == "books"][:6]
    films = [it.item_id for it in small_world.items if it.domain == "films"][:3]
    now = time.time()

    def event(i: int, item: str, domain: str) -> Event:
        return Event(event_id=f"f{i}", user_id="U", item_id=item, domain=domain,
                     event_type="click", timestamp=now + i)  # fmt: skip

    def expected() -> np.ndarray:
        seq, entries = store.histories(["U"], model.domains)["U"]
        return model.encode_users([history_context(model, entries)], "films")[0].detach().numpy()

    def stored_seq() -> int:
        vec = store.user_vector("U", "films")
        return -1 if vec is None else vec.seq

    running = WorkerThread(StreamWorker(cfg))
    try:
        produce(cfg, [event(i, b, "books") for i, b in enumerate(books)])
        wait_for("U's first vector", lambda: stored_seq() == 6)
        first = store.user_vector("U", "films")
        assert first is not None
        assert first.model_version == pointer.version
        np.testing.assert_allclose(first.vector, expected(), atol=1e-5)

        produce(cfg, [event(10 + i, f, "films") for i, f in enumerate(films)])
        wait_for("U's vector after film events", lambda: stored_seq() == 9)
        second = store.user_vector("U", "films")
        assert second is not None
        np.testing.assert_allclose(second.vector, expected(), atol=1e-5)
        assert not np.allclose(second.vector, first.vector, atol=1e-3)

        # A new item: its text is known (the API wrote it) -> encoded, queued for indexes and
        # part of U's history; an item with no text yet is pending and left out.
        store.put_item_texts("films", {"brand-new": "Title: A documentary about tea."})
        produce(cfg, [event(20, "brand-new", "films"), event(21, "mystery", "films")])
        wait_for("U's vector after new items", lambda: stored_seq() == 11)
        ((_, queued),) = store.new_items("films")
        assert queued.item_id == "brand-new"
        assert queued.model_version == pointer.version
        assert store.pending_items("films") == {"mystery"}
        model.add_items("films", ["brand-new"], ["Title: A documentary about tea."])
        third = store.user_vector("U", "films")
        assert third is not None
        np.testing.assert_allclose(third.vector, expected(), atol=1e-5)
    finally:
        running.stop()
    assert running.worker.report.committed
    assert running.worker.report.vectors >= 3


# --------------------------------------------------------------------------- CLI and signals
def test_events_produce_names_the_bad_line(
    kafka_broker: EmbeddedKafka, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from crossrec.cli import app

    cfg = stream_config(kafka_broker, redis_server.url)
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(cfg.to_yaml())
    lines = [e.to_json().decode() for e in events_for(3)]
    events_file = tmp_path / "events.jsonl"
    events_file.write_text("\n".join([lines[0], lines[1], '{"event_id": 1}', lines[2]]) + "\n")
    runner = CliRunner()

    stopped = runner.invoke(app, ["events", "produce", str(events_file), "-c", str(cfg_path)])
    assert stopped.exit_code == 2
    assert f"{events_file}:3: missing field 'user_id'" in stopped.output

    skipped = runner.invoke(
        app, ["events", "produce", str(events_file), "-c", str(cfg_path), "--skip-invalid"]
    )
    assert skipped.exit_code == 0, skipped.output
    assert "sent 3 events" in skipped.output
    assert "skipped 1 invalid lines" in skipped.output
    assert len(read_topic(cfg, cfg.stream.topic, 5)) == 5  # 2 before the stop, 3 after

    unset = runner.invoke(app, ["events", "produce", str(events_file)])
    assert unset.exit_code == 2
    assert "stream.bootstrap_servers: not set" in unset.output


def test_sigterm_finishes_the_batch_commits_and_exits(
    kafka_broker: EmbeddedKafka, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    import signal

    cfg = stream_config(kafka_broker, redis_server.url, batch_size=200)
    cfg_path = tmp_path / "stream.yaml"
    cfg_path.write_text(cfg.to_yaml())
    cmd = [sys.executable, "-m", "crossrec.cli", "stream", "--local", "--config", str(cfg_path)]
    proc = subprocess.Popen(  # noqa: S603 - our own CLI
        cmd, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        events = events_for(2_000, users=100)
        produce(cfg, events[:1_000])
        wait_for("the worker to commit", lambda: sum(committed_offsets(cfg).values()) > 0)
        produce(cfg, events[1_000:])
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "SIGTERM: finishing the current batch" in err
    summary = re.search(r"([\d,]+) events written", out)
    assert summary is not None, out
    written = int(summary.group(1).replace(",", ""))
    # Whatever it wrote, it committed: nothing written is left to replay.
    assert sum(committed_offsets(cfg).values()) == written
    store = RedisFeatureStore.from_config(cfg.feature_store)
    states = store.histories([e.uid for e in events], ["books", "films"])
    assert sum(seq for seq, _ in states.values()) == written


def test_debounce_waits_for_a_quiet_user(redis_server: EmbeddedRedis, model_version: Path) -> None:
    from crossrec.stream.updates import UserVectorUpdater

    cfg = CrossRecConfig()
    cfg.feature_store.url, cfg.feature_store.key_prefix = redis_server.url, unique("debounce")
    cfg.stream.updates.mode, cfg.stream.updates.debounce_s = "debounce", 0.3
    store = RedisFeatureStore.from_config(cfg.feature_store)
    updater = UserVectorUpdater(store, cfg, ModelBundle.load(model_version))
    store.write_events(events_for(3, users=1))
    assert updater.run_once().users == 0  # still active
    wait_for("the quiet period", lambda: updater.run_once().users == 1, timeout=10)
    assert store.user_vector("user-0", "films") is not None
    assert store.dirty_users(10) == []
