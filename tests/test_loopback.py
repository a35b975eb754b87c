"""What crossrec starts on one machine listens on loopback only: a local Ray (GCS, raylet,
workers, agents), Ray Serve's HTTP proxy, the embedded redis-server and Kafka-protocol broker."""

from __future__ import annotations

import ipaddress

import psutil
import pytest

from crossrec.embedded import EmbeddedKafka, EmbeddedRedis
from crossrec.ray_runtime import ray_session

pytestmark = pytest.mark.integration


def _listeners() -> list[tuple[str, str, int]]:
    me = psutil.Process()
    out = []
    for proc in [me, *me.children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="inet")
            name = proc.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out += [(name, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return out


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def test_a_local_stack_listens_on_loopback_only(
    kafka_broker: EmbeddedKafka, redis_server: EmbeddedRedis
) -> None:
    import ray
    from ray import serve

    from crossrec.embedded import free_port

    @serve.deployment(ray_actor_options={"num_cpus": 0.1})
    class Echo:
        def __call__(self, request: object) -> str:
            return "ok"

    assert not ray.is_initialized()
    with ray_session(None, num_cpus=2):
        serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
        try:
            serve.run(Echo.bind(), name="echo", route_prefix="/echo")
            listeners = _listeners()
        finally:
            serve.shutdown()
    names = {name for name, _, _ in listeners}
    assert {"gcs_server", "raylet"} <= names, names  # Ray's own processes were looked at
    assert any(port == redis_server.port for _, _, port in listeners)
    wide = [(name, ip, port) for name, ip, port in listeners if not _loopback(ip)]
    # The one exception Ray does not let anyone configure: each Serve replica's inter-deployment
    # gRPC server binds "[::]:0" (ray/serve/_private/replica.py, Ray 2.60). The README's
    # operating section names it.
    replicas = [w for w in wide if w[0].startswith("ray::ServeRepli")]
    assert replicas, "the replica exception is gone: update the README and this test"
    assert wide == replicas, f"listening beyond loopback: {wide}"
