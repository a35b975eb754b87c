"""`StreamWorker`: one Kafka consumer of the event topic, writing to the feature store.

The loop, per batch: poll -> validate every record -> send invalid ones to the dead-letter
topic (original bytes as the value; reason and source topic/partition/offset as headers) ->
write the valid ones to the feature store in one idempotent pipeline, which also records each
new event as an online-learning sample (`crossrec.feature_store.samples`) -> wait for the
dead-letter sends -> commit the offsets -> refresh dirty users' vectors. Offsets are committed
only after everything before them is stored, and stored writes are idempotent by ``event_id``,
so a crash at any point replays the uncommitted records and nothing is lost or counted twice.

When the feature store is down, the worker pauses its partitions (it keeps polling, so it stays
in the group), retries with exponential backoff, and commits nothing past unwritten records.
``stop()`` (SIGTERM in the CLI) finishes the current batch, commits, and exits.

``$CROSSREC_STREAM_FAULT=after_write:N`` makes the process exit right after its N-th batch
write, before the commit (crash tests; off by default).

Example:
    >>> worker = StreamWorker(cfg, worker_index=0)
    >>> worker.run(idle_exit_s=5.0)
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal

from crossrec.config import CrossRecConfig
from crossrec.data.events import Event, parse_event
from crossrec.errors import CrossRecError, EventError, FeatureStoreError, StreamError
from crossrec.feature_store.base import FeatureStore, SampleSpec
from crossrec.stream.events import kafka_client_options
from crossrec.stream.metrics import StreamMetrics
from crossrec.stream.updates import UserVectorUpdater

logger = logging.getLogger(__name__)

FAULT_ENV = "CROSSREC_STREAM_FAULT"
FAULT_EXIT_CODE = 75
DLQ_HEADER_PREFIX = "crossrec-"


@dataclass
class WorkerReport:
    """Totals of one worker run."""

    batches: int = 0
    records: int = 0
    written: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    vectors: int = 0
    samples: int = 0
    store_retries: int = 0
    committed: dict[str, int] = field(default_factory=dict)  # "topic[partition]" -> next offset


def _fault_after() -> int | None:
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return None
    kind, _, n = spec.partition(":")
    if kind != "after_write" or not n.isdigit():
        raise StreamError(f"${FAULT_ENV}={spec!r}: expected after_write:N")
    return int(n)


def _tp_name(tp: Any) -> str:
    return f"{tp.topic}[{tp.partition}]"


def _rebalance_listener(worker: StreamWorker) -> Any:
    from kafka import ConsumerRebalanceListener

    class _Rebalance(ConsumerRebalanceListener):
        """Commits what was written for revoked partitions; forgets their unwritten records."""

        def on_partitions_revoked(self, revoked: Any) -> None:
            worker._on_revoked(set(revoked))

        def on_partitions_assigned(self, assigned: Any) -> None:
            worker.assignment = frozenset(_tp_name(tp) for tp in assigned)
            worker._rebalancing = False
            worker._rebalanced_at = time.monotonic()
            logger.info(
                "partitions assigned worker=%s partitions=%s",
                worker.worker_id,
                ",".join(sorted(_tp_name(tp) for tp in assigned)) or "-",
            )

    return _Rebalance()


class StreamWorker:
    """Consumes ``stream.topic`` in consumer group ``stream.group_id``.

    Args:
        cfg: the whole config (``stream``, ``feature_store``).
        worker_index: this worker's number (metrics label, metrics port offset, client id).
        store: the feature store; default: `open_feature_store(feature_store)`.
        updater: the user-vector trigger; default: one following the store's current model.
        samples: which written events become online-learning samples and where they go;
            default: the Redis sample buffer when ``online.record_samples`` (None: no samples).
    """

    def __init__(
        self,
        cfg: CrossRecConfig,
        *,
        worker_index: int = 0,
        store: FeatureStore | None = None,
        updater: UserVectorUpdater | None = None,
        samples: SampleSpec | None | Literal["default"] = "default",
    ) -> None:
        from crossrec.feature_store import open_feature_store

        self.cfg = cfg
        self.scfg = cfg.stream
        self.worker_index = worker_index
        self.worker_id = str(worker_index)
        self.store = store or open_feature_store(cfg.feature_store)
        self.updater = updater or UserVectorUpdater(self.store, cfg)
        if samples == "default":
            record = cfg.online.record_samples
            samples = self.store.sample_buffer(cfg.online).spec() if record else None
        self.samples: SampleSpec | None = samples
        self.metrics = StreamMetrics(self.worker_id)
        self.report = WorkerReport()
        self._stop = threading.Event()
        self._consumer: Any = None
        self._uncommitted: dict[Any, int] = {}  # written, not yet committed: next offset
        # Partitions revoked since the batch in hand was fetched (its records of them are
        # stale), and how many revocations there were (a poll that runs one is detected).
        self._revoked: set[Any] = set()
        self._revocations = 0
        self.assignment: frozenset[str] = frozenset()  # "topic[partition]" names, as assigned
        self._fault_after = _fault_after()
        self._writes = 0
        self._warned_domains = False
        self._rebalanced_at = 0.0
        self._rebalancing = False  # between a revoke and the next assignment

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Asks the loop to finish its batch, commit and return (thread-safe)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _domains(self) -> Collection[str] | None:
        if self.scfg.domains is not None:
            return self.scfg.domains
        bundle = self.updater.bundle
        if bundle is not None:
            return bundle.domains
        if not self._warned_domains:
            logger.warning(
                "stream.domains is not set and no model is published: events of "
                "every domain are accepted"
            )
            self._warned_domains = True
        return None

    # ------------------------------------------------------------------ clients
    def _make_consumer(self) -> Any:
        from kafka import KafkaConsumer

        opts = kafka_client_options(self.scfg)
        opts.update(
            group_id=self.scfg.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.scfg.batch_size,
            client_id=f"crossrec-worker-{self.worker_id}",
        )
        if self.scfg.mock_broker:
            from crossrec.embedded import embedded_kafka_consumer_options

            opts.update(embedded_kafka_consumer_options())
            # It answers a fetch only when its wait expires, not when data arrives: a short
            # wait keeps events fresh.
            opts["fetch_max_wait_ms"] = 20
        opts.update(self.scfg.consumer_options)
        try:
            consumer = KafkaConsumer(**opts)
        except Exception as exc:
            raise StreamError(
                f"cannot connect to Kafka at {self.scfg.bootstrap_servers}: {exc}"
            ) from exc
        consumer.subscribe([self.scfg.topic], listener=_rebalance_listener(self))
        return consumer

    def _recreate_consumer(self, consumer: Any) -> Any:
        """A fresh consumer when a group rejoin never completes (kafka-python 3.0 can stall
        there); everything written is committed, so nothing is lost and it resumes from the
        committed offsets."""
        logger.warning(
            "group rejoin not completed in %.0fs: recreating the consumer worker=%s",
            self.scfg.rejoin_timeout_s,
            self.worker_id,
        )
        self._commit(consumer)
        try:
            consumer.close(autocommit=False)
        except Exception as exc:  # the old client is broken anyway
            logger.warning("closing the stalled consumer failed: %s", exc)
        self._uncommitted.clear()
        self._rebalancing, self._rebalanced_at = True, time.monotonic()
        self._consumer = self._make_consumer()
        return self._consumer

    def _make_producer(self) -> Any:
        from kafka import KafkaProducer

        opts = kafka_client_options(self.scfg)
        opts.update(acks="all", retries=5, linger_ms=5, client_id=f"crossrec-dlq-{self.worker_id}")
        return KafkaProducer(**opts)

    # ------------------------------------------------------------------ the loop
    def run(
        self, *, idle_exit_s: float | None = None, max_batches: int | None = None
    ) -> WorkerReport:
        """Consumes until :meth:`stop`, ``idle_exit_s`` with partitions but no records, or
        ``max_batches`` batches."""
        self._consumer = consumer = self._make_consumer()
        producer = self._make_producer()
        if self.scfg.metrics_port is not None:
            self.metrics.serve(self.scfg.metrics_port + self.worker_index, self.scfg.metrics_host)
        self._wait_for_store()
        logger.info(
            "stream worker started worker=%s topic=%s group=%s brokers=%s",
            self.worker_id,
            self.scfg.topic,
            self.scfg.group_id,
            self.scfg.bootstrap_servers,
        )
        last_records = time.monotonic()
        lag_at, lag_records = time.monotonic(), 0
        self._rebalancing, self._rebalanced_at = True, time.monotonic()  # joining the group
        try:
            while not self._stop.is_set():
                polled_at = time.monotonic()
                self._revoked.clear()  # a revocation inside the poll makes earlier fetches stale
                batch = self._poll(consumer, self.scfg.poll_timeout_ms)
                # The batch in hand is what the current assignment fetched: revocations from
                # here on make (parts of) it stale.
                self._revoked.clear()
                if not batch and time.monotonic() - polled_at < 0.002:
                    time.sleep(0.02)  # a poll that returns at once (e.g. mid-rejoin) must not spin
                if self._rebalancing and (
                    time.monotonic() - self._rebalanced_at > self.scfg.rejoin_timeout_s
                ):
                    consumer = self._recreate_consumer(consumer)
                if batch or self._rebalancing:
                    # Idle time counts only once the group has settled: a new member may wait
                    # for the group to drop a crashed one (its session timeout) first.
                    if batch:
                        self._process(consumer, producer, batch)
                    last_records = time.monotonic()
                elif (
                    idle_exit_s is not None
                    and time.monotonic() - max(last_records, self._rebalanced_at) > idle_exit_s
                ):
                    logger.info(
                        "no records for %.1fs: stopping worker=%s", idle_exit_s, self.worker_id
                    )
                    break
                self._update_vectors()
                if time.monotonic() - lag_at >= self.scfg.lag_interval_s:
                    elapsed = time.monotonic() - lag_at
                    self.metrics.rate((self.report.records - lag_records) / elapsed)
                    lag_at, lag_records = time.monotonic(), self.report.records
                    self._record_lag(consumer)
                if max_batches is not None and self.report.batches >= max_batches:
                    break
        finally:
            self._commit(consumer)  # the one forced commit on the way out
            try:
                consumer.close(autocommit=False)
            finally:
                producer.close(timeout=10)
                self.metrics.close()
                self._consumer = None
            logger.info(
                "stream worker stopped worker=%s batches=%d written=%d duplicates=%d "
                "dead_letters=%d vectors=%d",
                self.worker_id,
                self.report.batches,
                self.report.written,
                self.report.duplicates,
                self.report.dead_letters,
                self.report.vectors,
            )
        return self.report

    def _wait_for_store(self) -> None:
        """Reads the current model before joining the group, waiting with back-off while the
        store is down (a member that cannot write would only take partitions from one that
        can); `stop` ends the wait."""
        delay = self.scfg.backoff_s
        for attempt in range(1, 1_000_000):
            try:
                self.updater.refresh_model(force=True)
                return
            except FeatureStoreError as exc:
                if self._stop.is_set():
                    return
                logger.warning(
                    "feature store unavailable at start (attempt %d), retrying in "
                    "%.1fs before joining the group: %s",
                    attempt,
                    delay,
                    exc,
                )
                self._stop.wait(delay)
                delay = min(delay * 2, self.scfg.max_backoff_s)

    def _poll(self, consumer: Any, timeout_ms: int) -> dict[Any, list[Any]]:
        from kafka.errors import KafkaError

        batch: dict[Any, list[Any]] = {}
        stale: dict[Any, int] = {}  # partition -> first offset fetched before a revocation
        try:
            count, wait = 0, timeout_ms
            # One fetch response holds a few hundred records at most; top the batch up from
            # what is already buffered (no waiting) so a batch is one Redis pipeline and one
            # commit for up to `batch_size` records.
            for _ in range(8):
                revocations = self._revocations
                got = consumer.poll(timeout_ms=wait, max_records=self.scfg.batch_size - count)
                if self._revocations != revocations:
                    # kafka-python ran a rebalance inside this poll (revoke, join, assign,
                    # positions reset): what earlier polls fetched of a revoked partition is
                    # stale, what this one returned is the new assignment's.
                    for tp in self._revoked & set(batch):
                        records = batch.pop(tp)
                        stale[tp] = min(stale.get(tp, records[0].offset), records[0].offset)
                        count -= len(records)
                if not got:
                    break
                for tp, records in got.items():
                    batch.setdefault(tp, []).extend(records)
                    count += len(records)
                if count >= self.scfg.batch_size:
                    break
                wait = 0
        except KafkaError as exc:
            # e.g. a group join racing a rebalance: the next poll rejoins.
            logger.warning("poll failed worker=%s: %s: %s", self.worker_id, type(exc).__name__, exc)
            time.sleep(min(self.scfg.backoff_s, 1.0))
        if stale:
            # A partition that came back without records of this poll is read again from its
            # first stale record, never from past it (whatever position the rebalance left).
            self._rewind(consumer, {tp: off for tp, off in stale.items() if tp not in batch})
        return batch

    def _rewind(self, consumer: Any, offsets: dict[Any, int]) -> None:
        """Seeks each partition still assigned back to ``offsets``: its records from there
        were dropped unwritten and must be fetched again."""
        from kafka.errors import KafkaError

        owned = consumer.assignment()
        for tp, offset in offsets.items():
            if tp in owned:
                try:
                    consumer.seek(tp, offset)
                except (KafkaError, AssertionError) as exc:  # revoked meanwhile
                    logger.warning("seek %s to %d failed: %s", _tp_name(tp), offset, exc)
                    continue
                logger.info(
                    "dropped records refetched worker=%s partition=%s from=%d",
                    self.worker_id,
                    _tp_name(tp),
                    offset,
                )

    def _process(self, consumer: Any, producer: Any, batch: dict[Any, list[Any]]) -> None:
        started = time.perf_counter()
        domains = self._domains()
        valid: list[tuple[Any, Event]] = []
        dead: list[tuple[Any, Any, str]] = []
        next_offsets: dict[Any, int] = {}
        now = time.time()
        for tp, records in batch.items():
            for rec in records:
                next_offsets[tp] = rec.offset + 1
                try:
                    event = parse_event(
                        rec.value,
                        domains=domains,
                        max_bytes=self.scfg.max_event_bytes,
                        max_future_skew_s=self.scfg.max_future_skew_s,
                        now=now,
                    )
                except EventError as exc:
                    dead.append((tp, rec, exc.reason))
                    continue
                valid.append((tp, event))
        self.report.records += sum(len(r) for r in batch.values())
        pending = self._send_dead_letters(producer, dead)
        written = self._write(consumer, valid)
        if written is None:  # stopping while the store is down: commit nothing of this batch
            return
        self._wait_dead_letters(producer, pending)
        self._writes += 1
        if self._fault_after is not None and self._writes >= self._fault_after:
            logger.error(
                "injected fault: exiting after write %d, before the commit (%s=%s)",
                self._writes,
                FAULT_ENV,
                os.environ.get(FAULT_ENV),
            )
            logging.shutdown()
            os._exit(FAULT_EXIT_CODE)
        if self._revoked:
            # Revoked while the store was down (a rebalance during the back-off): those
            # records were not written; a partition that came back is read again from them.
            first = {tp: records[0].offset for tp, records in batch.items()}
            self._rewind(consumer, {tp: first[tp] for tp in self._revoked if tp in first})
        for tp, offset in next_offsets.items():
            if tp not in self._revoked:
                self._uncommitted[tp] = offset
        self._commit(consumer)
        self.report.batches += 1
        self.metrics.batch(time.perf_counter() - started)

    def _send_dead_letters(self, producer: Any, dead: list[tuple[Any, Any, str]]) -> list[Any]:
        futures = []
        for tp, rec, reason in dead:
            logger.warning("dead letter %s offset %d: %s", _tp_name(tp), rec.offset, reason)
            headers = [
                (DLQ_HEADER_PREFIX + "reason", reason.encode("utf-8")),
                (DLQ_HEADER_PREFIX + "source-topic", tp.topic.encode("utf-8")),
                (DLQ_HEADER_PREFIX + "source-partition", str(tp.partition).encode()),
                (DLQ_HEADER_PREFIX + "source-offset", str(rec.offset).encode()),
                (DLQ_HEADER_PREFIX + "source-timestamp", str(rec.timestamp).encode()),
                (DLQ_HEADER_PREFIX + "worker", self.worker_id.encode()),
            ]
            futures.append(
                producer.send(
                    self.scfg.dead_letter_topic, value=rec.value, key=rec.key, headers=headers
                )
            )
        return futures

    def _wait_dead_letters(self, producer: Any, futures: list[Any]) -> None:
        if not futures:
            return
        producer.flush(timeout=30)
        failed = [f for f in futures if f.failed() or not f.is_done]
        if failed:
            # Raising keeps the offsets uncommitted: the records are replayed, never lost.
            exc = failed[0].exception if failed[0].is_done else "not acknowledged in 30 s"
            raise StreamError(
                f"{len(failed)} dead letters not stored in {self.scfg.dead_letter_topic}: {exc}"
            )
        self.report.dead_letters += len(futures)
        self.metrics.events("dead_letter", len(futures))

    def _write(self, consumer: Any, valid: list[tuple[Any, Event]]) -> int | None:
        """Writes the batch, retrying with backoff while the store fails. Returns how many were
        new, or None when stopping with the batch unwritten."""
        delay = self.scfg.backoff_s
        paused = False
        attempt = 0
        try:
            while True:
                events = [e for tp, e in valid if tp not in self._revoked]
                try:
                    # Samples are recorded in the same atomic pass, for new events only: a
                    # replayed batch (a crash before the commit) records nothing twice.
                    result = self.store.write_events(events, samples=self.samples)
                    self.report.samples += result.samples
                    break
                except FeatureStoreError as exc:
                    attempt += 1
                    self.report.store_retries += 1
                    self.metrics.retry()
                    if self._stop.is_set():
                        logger.error(
                            "stopping with %d events unwritten (feature store down); "
                            "their offsets stay uncommitted",
                            len(events),
                        )
                        return None
                    logger.warning(
                        "feature store write failed (attempt %d), retrying in "
                        "%.1fs; nothing committed past it: %s",
                        attempt,
                        delay,
                        exc,
                    )
                    # Polling paused partitions returns nothing but keeps this consumer in
                    # its group (and runs rebalance callbacks) while we wait. Paused on every
                    # turn: a rebalance hands partitions back un-paused.
                    assigned = list(consumer.assignment())
                    if assigned:
                        consumer.pause(*assigned)
                        paused = True
                    got = self._poll(consumer, int(delay * 1000))
                    if got:  # fetched in the same poll that assigned them: read them again
                        self._rewind(consumer, {tp: r[0].offset for tp, r in got.items()})
                    delay = min(delay * 2, self.scfg.max_backoff_s)
        finally:
            if paused:
                assigned = list(consumer.assignment())
                if assigned:
                    consumer.resume(*assigned)
        if attempt:
            logger.info("feature store back after %d retries: batch written", attempt)
        self.report.written += result.written
        self.report.duplicates += result.duplicates
        self.metrics.events("written", result.written)
        self.metrics.events("duplicate", result.duplicates)
        return result.written

    def _commit(self, consumer: Any) -> None:
        from kafka.errors import CommitFailedError, KafkaError
        from kafka.structs import OffsetAndMetadata

        if not self._uncommitted:
            return
        offsets = {tp: OffsetAndMetadata(off, "", -1) for tp, off in self._uncommitted.items()}
        try:
            consumer.commit(offsets)
        except CommitFailedError as exc:
            # A rebalance is under way: the revoke callback commits again before the partitions
            # move; if the group refuses that too, the new owner replays from the last commit
            # and the idempotent writes count nothing twice.
            logger.warning("commit refused during a rebalance worker=%s: %s", self.worker_id, exc)
            return
        except KafkaError as exc:
            logger.warning(
                "commit failed worker=%s (kept for the next one): %s", self.worker_id, exc
            )
            return
        for tp, off in self._uncommitted.items():
            self.report.committed[_tp_name(tp)] = off
        self._uncommitted.clear()

    def _on_revoked(self, revoked: set[Any]) -> None:
        self.assignment = frozenset()
        self._revoked |= revoked
        self._revocations += 1
        self._rebalancing = True
        self._rebalanced_at = time.monotonic()
        logger.info(
            "partitions revoked worker=%s partitions=%s",
            self.worker_id,
            ",".join(sorted(_tp_name(tp) for tp in revoked)) or "-",
        )
        written = {tp: off for tp, off in self._uncommitted.items() if tp in revoked}
        if self._consumer is not None and written:
            # Rebalance callbacks may run on kafka-python's network thread, where a blocking
            # commit is not allowed: send it asynchronously. Should it not land, the next owner
            # replays those records and the idempotent writes absorb them.
            from kafka.structs import OffsetAndMetadata

            try:
                self._consumer.commit_async(
                    {tp: OffsetAndMetadata(off, "", -1) for tp, off in written.items()}
                )
            except Exception as exc:  # the group is mid-rebalance; see above
                logger.warning("commit on revoke failed worker=%s: %s", self.worker_id, exc)
        for tp in revoked:
            self._uncommitted.pop(tp, None)

    def _update_vectors(self) -> None:
        started = time.perf_counter()
        try:
            report = self.updater.run_once()
        except CrossRecError as exc:  # store down, or a bad model pointer: ingestion goes on
            logger.warning("user vector update skipped: %s", exc)
            return
        if report.users:
            self.report.vectors += report.vectors
            self.metrics.vectors(report.vectors, time.perf_counter() - started)

    def _record_lag(self, consumer: Any) -> None:
        from kafka.errors import KafkaError

        assigned = list(consumer.assignment())
        if not assigned:
            return
        try:
            ends = consumer.end_offsets(assigned)
            for tp in assigned:
                position = consumer.position(tp)
                if position is not None and tp in ends:
                    self.metrics.lag(tp.topic, tp.partition, max(0, ends[tp] - position))
        except KafkaError as exc:
            logger.debug("lag not read: %s", exc)
