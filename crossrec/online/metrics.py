"""Prometheus metrics of the online learner (its own registry; served on
``online.metrics_port`` when set, as the stream worker's are on ``stream.metrics_port``).

==========================================  =============================================
metric                                       what
==========================================  =============================================
``crossrec_online_rounds_total``             rounds by outcome: promoted, rejected,
                                             drill_rejected, drill_passed
``crossrec_online_gate_score``               the last round's gate scores, by domain, set
                                             (holdout / regression) and model (current /
                                             candidate)
``crossrec_online_round_seconds``            a round's wall time (train + gate + register)
``crossrec_online_pending_samples``          new samples since the last round's window
``crossrec_online_promotions_total``         versions promoted by the gate
``crossrec_online_promoted_timestamp``       when the last version was promoted (unix s)
==========================================  =============================================
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from crossrec.stream.metrics import close_server, serve_registry

if TYPE_CHECKING:
    from crossrec.online.learner import RoundOutcome

logger = logging.getLogger(__name__)


class OnlineMetrics:
    """Counters and gauges of one online learner.

    Example:
        >>> m = OnlineMetrics(); m.round(outcome); m.serve(9410)
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self._rounds = Counter(
            "crossrec_online_rounds", "Online rounds by outcome.", ["outcome"], registry=r
        )
        self._score = Gauge(
            "crossrec_online_gate_score",
            "The last round's gate metric by domain, set, model.",
            ["domain", "set", "model"],
            registry=r,
        )
        self._seconds = Histogram(
            "crossrec_online_round_seconds",
            "Wall time of a round.",
            buckets=(1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640),
            registry=r,
        )
        self._pending = Gauge(
            "crossrec_online_pending_samples",
            "New samples since the last round's window.",
            registry=r,
        )
        self._promotions = Counter(
            "crossrec_online_promotions", "Versions the gate promoted.", registry=r
        )
        self._promoted_at = Gauge(
            "crossrec_online_promoted_timestamp",
            "When the last version was promoted (unix seconds).",
            registry=r,
        )
        self._server: Any = None

    def round(self, outcome: RoundOutcome) -> None:
        if outcome.drill is not None:
            kind = "drill_passed" if outcome.accepted else "drill_rejected"
        else:
            kind = "promoted" if outcome.version is not None else "rejected"
        self._rounds.labels(kind).inc()
        for domain, sets in outcome.scores.items():
            for set_name, scores in sets.items():
                for model in ("current", "candidate"):
                    if model in scores:
                        self._score.labels(domain, set_name, model).set(scores[model])
        self._seconds.observe(outcome.seconds.get("round", 0.0))
        if kind == "promoted":
            self._promotions.inc()
            self._promoted_at.set(time.time())

    def pending(self, n: int) -> None:
        self._pending.set(n)

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when absent)."""
        return float(self.registry.get_sample_value(name, labels) or 0.0)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serves ``/metrics`` on ``host:port`` (a daemon thread)."""
        self._server = serve_registry(self.registry, port, host)
        logger.info("online learner metrics on http://%s:%d/metrics", host, port)

    def close(self) -> None:
        close_server(self._server)
        self._server = None
