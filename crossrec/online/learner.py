"""The online learner: rounds of incremental fine-tuning from the sample buffer, behind a gate.

A round starts when ``online.every_samples`` new samples arrived since the last one, or
``online.every_s`` passed with at least ``online.min_samples``. It then:

1. takes the new samples (after the buffer's cursor); the newest ``holdout_fraction`` of them
   are the *holdout* (not trained on this round: the next round trains on them);
2. adds a *replay* share of older buffered samples, so the model does not forget;
3. fine-tunes the current version on them (in this process or as a Ray task) into a candidate;
4. scores candidate and current version on the holdout and on the fixed *regression set*;
5. the *gate*: the candidate is published only if it is no worse than the current version by
   more than ``online.margin`` on the holdout and ``online.regression_margin`` on the regression
   set, in every target domain it changed;
6. logs the decision with both scores (the log, ``crossrec online status`` and the buffer's
   decision list), registers an accepted candidate with its parent, metrics and data window,
   and promotes it through the current-version pointer, which serving replicas and the stream's
   update trigger follow without a restart.

The regression set is ``online.regression_path`` or, when none is given, the buffer's oldest
``online.regression_size`` samples, frozen on the first round into
``REGISTRY/online/regression.jsonl`` and never trained on.

Example:
    >>> learner = OnlineLearner(cfg, store)
    >>> outcome = learner.run_round()
    >>> outcome.accepted, outcome.version
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from crossrec.config import CrossRecConfig, OnlineConfig
from crossrec.errors import CrossRecError
from crossrec.feature_store.base import FeatureStore
from crossrec.feature_store.samples import (
    Sample,
    SampleBuffer,
    read_samples,
    write_samples,
)
from crossrec.online.finetune import CandidateResult, RoundData, train_candidate
from crossrec.online.metrics import OnlineMetrics
from crossrec.registry import ModelRegistry

logger = logging.getLogger(__name__)

REGRESSION_FILE = Path("online") / "regression.jsonl"


class CandidateRunner(Protocol):
    """Runs :func:`crossrec.online.finetune.train_candidate` somewhere (here, a Ray task…)."""

    def __call__(
        self,
        parent_uri: str,
        parent_version: str,
        data: RoundData,
        cfg: OnlineConfig,
        out_dir: str,
        *,
        rank: bool,
        drill: str | None,
    ) -> CandidateResult: ...


@dataclass
class RoundOutcome:
    """One round's decision."""

    accepted: bool
    parent: str
    version: str | None  # the registered version when accepted
    metric: str
    scores: dict[str, dict[str, dict[str, float]]]  # domain -> set -> {current, candidate, n}
    reasons: list[str]
    data_window: dict[str, Any]
    seconds: dict[str, float]
    drill: str | None = None
    decided_at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        parts = []
        for domain, sets in self.scores.items():
            h, r = sets.get("holdout", {}), sets.get("regression", {})
            parts.append(
                f"{domain}: holdout {self.metric} {h.get('current', float('nan')):.3f} -> "
                f"{h.get('candidate', float('nan')):.3f} (n={int(h.get('n', 0))}), regression "
                f"{r.get('current', float('nan')):.3f} -> {r.get('candidate', float('nan')):.3f} "
                f"(n={int(r.get('n', 0))})"
            )
        verdict = f"promoted {self.version}" if self.accepted else "rejected"
        if self.drill is not None and self.accepted:
            verdict = f"drill {self.drill} passed the gate (a drill: not registered, not promoted)"
        why = "" if self.accepted else f" ({'; '.join(self.reasons)})"
        return f"{verdict}{why}; " + "; ".join(parts)


def gate(
    result: CandidateResult, cfg: OnlineConfig
) -> tuple[bool, list[str], dict[str, dict[str, dict[str, float]]]]:
    """The promotion rule. Returns (accepted, reasons for a rejection, scores).

    In every target domain the round trained, the candidate may score at most ``margin`` below
    the current version on the holdout, and at most the smaller of ``regression_margin`` and
    ``regression_relative_margin`` times the current score on the regression set. A NaN score
    or an empty set rejects."""
    metric = cfg.gate_metric
    reasons: list[str] = []
    scores: dict[str, dict[str, dict[str, float]]] = {}
    trained = 0
    for domain, target in result.targets.items():
        if not target.fine_tune.get("steps"):
            continue  # no sample of this domain: its model is unchanged
        trained += 1
        scores[domain] = {}
        for set_name in ("holdout", "regression"):
            current = target.parent.get(set_name, {})
            candidate = target.candidate.get(set_name, {})
            n = int(current.get("n", 0))
            cur, cand = current.get(metric, float("nan")), candidate.get(metric, float("nan"))
            scores[domain][set_name] = {"current": cur, "candidate": cand, "n": float(n)}
            margin, allowed = cfg.margin, f"{cfg.margin}"
            if set_name == "regression":
                relative = cfg.regression_relative_margin * cur
                margin = min(cfg.regression_margin, relative)
                share = f"{margin:.4f} ({cfg.regression_relative_margin:.0%} of it)"
                allowed = f"{cfg.regression_margin}" if margin == cfg.regression_margin else share
            if n == 0:
                reasons.append(f"{domain}: no {set_name} samples to judge the candidate on")
            elif not cand >= cur - margin:
                reasons.append(
                    f"{domain}: {set_name} {metric} {cand:.4f} is below the current "
                    f"{cur:.4f} by more than {allowed}"
                )
    if not trained:
        reasons.append("no target domain had samples to train on")
    return not reasons, reasons, scores


class OnlineLearner:
    """Runs rounds from the sample buffer and promotes what passes the gate.

    Args:
        cfg: the whole config (``online``, ``registry``, ``serve.rank``).
        store: the feature store holding the current-version pointer.
        buffer: the sample buffer; default: the Redis buffer beside ``store``.
        registry: default: ``ModelRegistry(cfg.registry.root)``.
        runner: where candidates train; default: this process (``online.runner=ray`` is wired
            by the CLI through ``training.incremental.ray_runner``).
    """

    def __init__(
        self,
        cfg: CrossRecConfig,
        store: FeatureStore,
        *,
        buffer: SampleBuffer | None = None,
        registry: ModelRegistry | None = None,
        runner: CandidateRunner | None = None,
    ) -> None:
        self.cfg = cfg
        self.ocfg = cfg.online
        self.store = store
        self.buffer = buffer or store.sample_buffer(cfg.online)
        self.registry = registry or ModelRegistry(cfg.registry.root)
        self.runner: CandidateRunner = runner or train_candidate
        self.metrics = OnlineMetrics()
        self._last_round = time.monotonic()
        self._regression: list[Sample] | None = None

    # ------------------------------------------------------------------ regression set
    @property
    def regression_file(self) -> Path:
        return self.registry.root / REGRESSION_FILE

    def regression_set(self) -> list[Sample] | None:
        """The fixed regression set (None while the buffer is too small to freeze one)."""
        if self._regression is not None:
            return self._regression
        if self.ocfg.regression_path is not None:
            self._regression = read_samples(self.ocfg.regression_path)
        elif self.regression_file.is_file():
            self._regression = read_samples(self.regression_file)
        else:
            oldest = self.buffer.read(count=self.ocfg.regression_size)
            if len(oldest) < self.ocfg.regression_size:
                return None
            write_samples(self.regression_file, [s for _, s in oldest])
            if self.buffer.cursor() is None:
                self.buffer.set_cursor(oldest[-1][0])  # never trained on
            logger.info(
                "froze the regression set: %d samples -> %s", len(oldest), self.regression_file
            )
            self._regression = [s for _, s in oldest]
        if not self._regression:
            raise CrossRecError(f"the regression set {self.ocfg.regression_path} is empty")
        return self._regression

    # ------------------------------------------------------------------ rounds
    def skip_backlog(self) -> int:
        """Starts learning from now on: samples buffered so far are not trained on as new
        data (they remain replay material). Returns how many were skipped."""
        backlog = self.pending()
        if backlog:
            self.buffer.set_cursor(backlog[-1][0])
        return len(backlog)

    def pending(self) -> list[tuple[str, Sample]]:
        """New samples since the last round."""
        return self.buffer.read(after=self.buffer.cursor())

    def due(self, pending: int) -> bool:
        if pending >= self.ocfg.every_samples:
            return True
        waited = time.monotonic() - self._last_round
        return waited >= self.ocfg.every_s and pending >= self.ocfg.min_samples

    def run_round(self, *, force: bool = False, drill: str | None = None) -> RoundOutcome | None:
        """One round now if it is due (or ``force`` and there are at least
        ``online.min_samples`` new samples); None when there is nothing to do."""
        started = time.perf_counter()
        pointer = self.store.current_model()
        if pointer is None:
            logger.warning("online round skipped: no current model version to start from")
            return None
        regression = self.regression_set()
        if regression is None:
            logger.info(
                "online round waits: the buffer has fewer than online.regression_size="
                "%d samples to freeze a regression set from",
                self.ocfg.regression_size,
            )
            return None
        new = self.pending()
        self.metrics.pending(len(new))
        if len(new) < self.ocfg.min_samples or not (force or self.due(len(new))):
            return None
        self._last_round = time.monotonic()
        held = max(self.ocfg.min_holdout, int(round(len(new) * self.ocfg.holdout_fraction)))
        train_part, holdout_part = new[:-held], new[-held:]
        frozen = {s.event_id for s in regression}
        fresh = [s for _, s in train_part if s.event_id not in frozen]
        replay = self._replay(train_part[0][0], fresh, self.ocfg.replay_fraction, frozen)
        train = fresh + replay
        data = RoundData(train=train, holdout=[s for _, s in holdout_part], regression=regression)
        if self.registry.root.joinpath(pointer.version).is_dir():
            parent_uri = str(self.registry.root / pointer.version)
        else:
            parent_uri = self.registry.register(pointer.uri).uri  # the start of the lineage
        staging = self.registry.root / ".candidates" / f"{time.time_ns()}"
        window = self._window(train_part, holdout_part, replay)
        try:
            result = self.runner(
                parent_uri,
                pointer.version,
                data,
                self.ocfg,
                str(staging),
                rank=self.cfg.serve.rank,
                drill=drill,
            )
            accepted, reasons, scores = gate(result, self.ocfg)
            version = None
            # A drill tests the gate: whatever the verdict, it never registers a version,
            # never promotes and never moves the cursor (the window's real samples still train).
            if accepted and drill is None:
                metrics = {
                    f"{d}/{s}/{self.ocfg.gate_metric}": v["candidate"]
                    for d, sets in scores.items()
                    for s, v in sets.items()
                }
                metrics["online"] = result.to_json()["targets"]
                record = self.registry.register(
                    result.path, parent=pointer.version, metrics=metrics, data_window=window
                )
                version = record.version
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        outcome = RoundOutcome(
            accepted=accepted,
            parent=pointer.version,
            version=version,
            metric=self.ocfg.gate_metric,
            scores=scores,
            reasons=reasons,
            data_window=window,
            seconds={"train": result.seconds, "round": time.perf_counter() - started},
            drill=drill,
        )
        if version is not None:
            self.registry.promote(self.store, version, reason=f"online: {outcome.summary()}")
        if drill is None:
            self.buffer.set_cursor(train_part[-1][0])  # the holdout trains next round
        self.buffer.log_decision(outcome.to_json())
        self.metrics.round(outcome)
        if drill is None:
            self.metrics.pending(len(new) - len(train_part))
        log = logger.info if accepted else logger.warning
        log("online round %s", outcome.summary())
        return outcome

    def _replay(
        self, before: str, new: list[Sample], fraction: float, exclude: set[str]
    ) -> list[Sample]:
        """Older buffered samples (before entry ``before``), drawn at random: per domain,
        ``fraction`` times as many as the round has new samples of that domain."""
        wanted: dict[str, int] = {}
        for s in new:
            wanted[s.domain] = wanted.get(s.domain, 0) + 1
        if fraction <= 0 or not wanted:
            return []
        older: dict[str, list[Sample]] = {}
        for entry_id, s in self.buffer.read(until=before):
            if entry_id != before and s.domain in wanted and s.event_id not in exclude:
                older.setdefault(s.domain, []).append(s)
        rng = np.random.default_rng([self.ocfg.seed, len(new)])
        out: list[Sample] = []
        for domain, pool in sorted(older.items()):
            count = min(len(pool), int(round(wanted[domain] * fraction)))
            picks = rng.choice(len(pool), size=count, replace=False)
            out += [pool[i] for i in sorted(picks.tolist())]
        return out

    @staticmethod
    def _window(
        train: list[tuple[str, Sample]], holdout: list[tuple[str, Sample]], replay: list[Sample]
    ) -> dict[str, Any]:
        times = [s.timestamp for _, s in train]
        return {
            "first_sample": train[0][0],
            "last_sample": train[-1][0],
            "first_event_time": min(times),
            "last_event_time": max(times),
            "new_samples": len(train),
            "replay_samples": len(replay),
            "holdout_samples": len(holdout),
            "holdout_last_sample": holdout[-1][0],
        }

    # ------------------------------------------------------------------ loop
    def run(
        self,
        *,
        should_stop: Callable[[], bool] = lambda: False,
        max_rounds: int | None = None,
        max_seconds: float | None = None,
        on_outcome: Callable[[RoundOutcome], None] | None = None,
    ) -> list[RoundOutcome]:
        """Checks the buffer every ``online.poll_s`` and runs rounds when due, until stopped,
        after ``max_rounds`` rounds or ``max_seconds``. A failed round is logged and the loop
        goes on."""
        outcomes: list[RoundOutcome] = []
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        while not should_stop():
            if max_rounds is not None and len(outcomes) >= max_rounds:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            try:
                outcome = self.run_round()
            except Exception:  # a failed round (store down, a task that died) must not end
                # the learner: nothing was promoted, the samples stay, the next check retries.
                logger.exception("online round failed (nothing promoted; retried later)")
                outcome = None
            if outcome is not None:
                outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)
                continue
            time.sleep(self.ocfg.poll_s)
        return outcomes
