from __future__ import annotations

from pathlib import Path

import pytest

from crossrec.config import CrossRecConfig, EvalConfig, SyntheticConfig
from crossrec.data.dataset import CrossDomainDataset
from crossrec.data.splits import Split, make_split
from crossrec.data.synthetic import generate_world


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Embedding caches of the test run stay in a temporary folder."""
    cache = tmp_path_factory.mktemp("crossrec-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("CROSSREC_CACHE_DIR", str(cache))
    mp.setenv("HF_HUB_OFFLINE", "1")
    yield
    mp.undo()


SMALL_WORLD = SyntheticConfig(
    seed=3, num_users=400, items_per_domain=[240, 160], mean_interactions=[16.0, 5.0]
)


@pytest.fixture(scope="session")
def small_world() -> CrossDomainDataset:
    return generate_world(SMALL_WORLD)


@pytest.fixture(scope="session")
def small_split(small_world: CrossDomainDataset) -> Split:
    return make_split(small_world, EvalConfig(), ["films"])


@pytest.fixture
def small_config() -> CrossRecConfig:
    cfg = CrossRecConfig()
    cfg.data.synthetic = SMALL_WORLD
    return cfg


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


# --------------------------------------------------------------------------- real services
@pytest.fixture(scope="session")
def kafka_broker():  # type: ignore[no-untyped-def]
    """A Kafka-protocol broker (librdkafka's mock cluster) for the whole test session."""
    from crossrec.embedded import EmbeddedKafka

    with EmbeddedKafka() as broker:
        yield broker


@pytest.fixture(scope="session")
def redis_server():  # type: ignore[no-untyped-def]
    """A real redis-server on a free loopback port for the whole test session."""
    from crossrec.embedded import EmbeddedRedis

    with EmbeddedRedis() as server:
        yield server


_NAMES = iter(range(1_000_000))


def services_config(kafka_broker, redis_server, name: str) -> CrossRecConfig:  # type: ignore[no-untyped-def]
    """A config on the session's broker and redis-server with its own topics (2 partitions),
    consumer group and key prefix, all named after ``name``; short timeouts for tests."""
    cfg = CrossRecConfig()
    s = cfg.stream
    s.bootstrap_servers, s.api_version, s.mock_broker = kafka_broker.bootstrap_servers, "2.1", True
    s.topic, s.dead_letter_topic, s.group_id = f"{name}-events", f"{name}-dlq", f"{name}-group"
    s.poll_timeout_ms, s.backoff_s, s.max_backoff_s, s.rejoin_timeout_s = 200, 0.1, 0.5, 20.0
    s.updates.model_check_s = 0.3
    for topic in (s.topic, s.dead_letter_topic):
        kafka_broker.create_topic(topic, 2)
    cfg.feature_store.url = redis_server.url
    cfg.feature_store.key_prefix = name
    return cfg


def unique(name: str) -> str:
    """A name no other test uses (topics, groups, key prefixes)."""
    return f"{name}-{next(_NAMES)}"


# --------------------------------------------------------------------------- a trained model
TRAINED_WORLD = SyntheticConfig(seed=11, num_users=700, items_per_domain=[300, 200])
FAST_TRAINING = [
    "train.max_epochs=6",
    "train.pretrain_max_epochs=5",
    "train.patience=3",
    "train.batch_size=64",
    "train.ranker_epochs=1",
]


@pytest.fixture(scope="session")
def trained_split() -> Split:
    """The world the trained model (`trained_version`) learned."""
    return make_split(generate_world(TRAINED_WORLD), EvalConfig(), ["films"])


@pytest.fixture(scope="session")
def trained_version(trained_split: Split, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """crossrec-transfer trained on `trained_split` (a few epochs), saved as a model version
    (``ROOT/films/``). Treat it as read-only: copy it to change it."""
    from crossrec.config import with_overrides
    from crossrec.models.variants import variant_config
    from crossrec.trainer.estimator import CrossRecRecommender

    cfg = CrossRecConfig()
    cfg.data.synthetic = TRAINED_WORLD
    variant = variant_config("crossrec-transfer", with_overrides(cfg, FAST_TRAINING))
    rec = CrossRecRecommender(variant)
    rec.fit(trained_split)
    root = tmp_path_factory.mktemp("trained") / "v1"
    rec.models["films"].save_pretrained(root / "films")
    return root


def init_local_ray(num_cpus: int = 2) -> None:
    """A test's local Ray, on loopback only (as every Ray crossrec starts)."""
    import ray

    from crossrec.ray_runtime import loopback_ray

    with loopback_ray():
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
