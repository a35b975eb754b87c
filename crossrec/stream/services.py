"""The stream's services: the configured Kafka and Redis, or embedded ones.

`stream.bootstrap_servers` unset starts the embedded Kafka-protocol broker (librdkafka's mock
cluster, in this process) with the event and dead-letter topics created with
`stream.partitions` partitions; `feature_store.url` unset starts a real `redis-server` on a free
loopback port. The embedded services are for one machine, the demo and tests — not for
production: they live only as long as the process that started them.

Example:
    >>> with stream_services(cfg) as services:
    ...     StreamWorker(services.cfg).run(idle_exit_s=5)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from crossrec.config import CrossRecConfig
from crossrec.embedded import KAFKA_API_VERSION, EmbeddedKafka, EmbeddedRedis

logger = logging.getLogger(__name__)


@dataclass
class StreamServices:
    """The config with real addresses filled in, and the embedded services behind them."""

    cfg: CrossRecConfig
    kafka: EmbeddedKafka | None = None
    redis: EmbeddedRedis | None = None

    def describe(self) -> list[str]:
        lines = []
        kafka = "embedded Kafka-protocol broker" if self.kafka else "Kafka"
        lines.append(
            f"{kafka} at {self.cfg.stream.bootstrap_servers} "
            f"(topic {self.cfg.stream.topic}, dead letters "
            f"{self.cfg.stream.dead_letter_topic})"
        )
        redis = "embedded redis-server" if self.redis else "Redis"
        url = self.cfg.feature_store.url or ""
        lines.append(
            f"{redis} at {url.split('@')[-1]} (key prefix {self.cfg.feature_store.key_prefix})"
        )
        return lines


@contextmanager
def stream_services(cfg: CrossRecConfig) -> Iterator[StreamServices]:
    """Starts the embedded services ``cfg`` asks for (by leaving their address unset) and
    stops them on exit."""
    with ExitStack() as stack:
        cfg = cfg.model_copy(deep=True)
        services = StreamServices(cfg)
        if cfg.stream.bootstrap_servers is None:
            kafka = stack.enter_context(EmbeddedKafka())
            for topic in (cfg.stream.topic, cfg.stream.dead_letter_topic):
                kafka.create_topic(topic, cfg.stream.partitions)
            cfg.stream.bootstrap_servers = kafka.bootstrap_servers
            cfg.stream.api_version = ".".join(str(p) for p in KAFKA_API_VERSION)
            cfg.stream.mock_broker = True
            services.kafka = kafka
            logger.info("embedded Kafka-protocol broker at %s", kafka.bootstrap_servers)
        if cfg.feature_store.url is None:
            server = EmbeddedRedis(data_dir=cfg.feature_store.embedded_dir)
            stack.callback(server.close)
            server.start()
            cfg.feature_store.url = server.url
            services.redis = server
            logger.info("embedded redis-server at %s", server.url)
        yield services
