"""kafka-python consumer groups against the mock broker: the options and the assignor workaround."""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

from crossrec.embedded.kafka import KAFKA_API_VERSION

logger = logging.getLogger(__name__)


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
