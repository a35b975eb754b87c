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

from crossrec.embedded.common import free_port
from crossrec.embedded.consumer import embedded_kafka_consumer_options
from crossrec.embedded.kafka import KAFKA_API_VERSION, EmbeddedKafka
from crossrec.embedded.redis_server import (
    REDIS_SERVER_ENV,
    EmbeddedRedis,
    EmbeddedRedisCluster,
    find_redis_server,
)

__all__ = [
    "KAFKA_API_VERSION",
    "REDIS_SERVER_ENV",
    "EmbeddedKafka",
    "EmbeddedRedis",
    "EmbeddedRedisCluster",
    "embedded_kafka_consumer_options",
    "find_redis_server",
    "free_port",
]
