"""Configuration of the running services: `serve`, `stream`, `feature_store`, `online` and
`registry`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from crossrec.config.base import _Section


class AutoscalingSettings(_Section):
    """Ray Serve autoscaling of one deployment (passed as its ``autoscaling_config``)."""

    min_replicas: int = Field(1, ge=0, description="Fewest replicas (0 scales to zero).")
    max_replicas: int = Field(4, ge=1, description="Most replicas.")
    initial_replicas: int | None = Field(None, ge=0, description="Replicas at deploy time.")
    target_ongoing_requests: float = Field(
        8.0, gt=0, description="Ongoing requests per replica the autoscaler aims for."
    )
    upscale_delay_s: float = Field(10.0, ge=0, description="How long load must stay high.")
    downscale_delay_s: float = Field(60.0, ge=0, description="How long load must stay low.")

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingSettings:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})"
            )
        if self.initial_replicas is not None and not (
            self.min_replicas <= self.initial_replicas <= self.max_replicas
        ):
            raise ValueError("initial_replicas must lie between min_replicas and max_replicas")
        return self


class DeploymentSettings(_Section):
    """Replicas and resources of one Ray Serve deployment."""

    num_replicas: int | None = Field(
        1, ge=1, description="Fixed replica count; set to null when `autoscaling` is given."
    )
    autoscaling: AutoscalingSettings | None = Field(
        None, description="Autoscale between min and max replicas instead of a fixed count."
    )
    num_cpus: float = Field(
        0.5, ge=0, description="CPUs per replica (fractions let the app fit on a laptop)."
    )
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica (the encoder runs on it).")
    memory_gb: float | None = Field(None, gt=0, description="Memory reserved per replica.")
    max_ongoing_requests: int = Field(
        64, ge=1, description="Requests one replica works on at once (queueing beyond that)."
    )
    torch_threads: int | None = Field(
        1, ge=1, description="torch intra-op threads per replica; null keeps torch's default."
    )

    @model_validator(mode="before")
    @classmethod
    def _autoscaling_replaces_count(cls, data: Any) -> Any:
        # Ray's rule: num_replicas is not allowed when autoscaling_config is provided. Giving
        # `autoscaling` alone switches the default fixed count off.
        if isinstance(data, dict) and data.get("autoscaling") is not None:
            if data.get("num_replicas") not in (None, "auto"):
                raise ValueError("num_replicas is not allowed when autoscaling is provided")
            data = {**data, "num_replicas": None}
        return data

    @model_validator(mode="after")
    def _has_replicas(self) -> DeploymentSettings:
        if self.num_replicas is None and self.autoscaling is None:
            raise ValueError("give num_replicas or autoscaling")
        return self

    def ray_options(self) -> dict[str, Any]:
        """Keyword arguments for ``Deployment.options``."""
        actor: dict[str, Any] = {"num_cpus": self.num_cpus}
        if self.num_gpus:
            actor["num_gpus"] = self.num_gpus
        if self.memory_gb:
            actor["memory"] = int(self.memory_gb * 2**30)
        options: dict[str, Any] = {
            "ray_actor_options": actor,
            "max_ongoing_requests": self.max_ongoing_requests,
        }
        if self.autoscaling is not None:
            options["autoscaling_config"] = self.autoscaling.model_dump(exclude_none=True)
        else:
            options["num_replicas"] = self.num_replicas
        return options


class EncoderDeploymentSettings(DeploymentSettings):
    """The text encoder deployment: requests are batched by ``@serve.batch``."""

    max_batch_size: int = Field(32, ge=1, description="Texts encoded in one forward pass.")
    batch_wait_timeout_s: float = Field(
        0.005, ge=0, description="How long a batch waits to fill before it runs."
    )

    @model_validator(mode="after")
    def _room_for_a_batch(self) -> EncoderDeploymentSettings:
        if self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(
                f"max_ongoing_requests ({self.max_ongoing_requests}) is below max_batch_size "
                f"({self.max_batch_size}): a batch could never fill"
            )
        return self


class ServeConfig(_Section):
    """The HTTP API on Ray Serve (`crossrec serve`, `serving.app:build_app`)."""

    host: str = Field("127.0.0.1", description="Address the Serve HTTP proxy listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port of the Serve HTTP proxy.")
    route_prefix: str = Field("/", pattern=r"^/", description="Where the API is mounted.")
    app_name: str = Field("crossrec", min_length=1, description="Serve application name.")
    ray_address: str | None = Field(
        None, description="'auto', 'ray://HOST:10001' or None to start a local Ray."
    )
    max_k: int = Field(200, ge=1, description="Largest `k` a request may ask for.")
    default_k: int = Field(10, ge=1, description="`k` when a request gives none.")
    auth: Literal["key", "none"] = Field(
        "key",
        description="'key': write endpoints need `api_key` and user-keyed reads need "
        "`read_api_key` or `api_key` (crossrec serve / demo generate one when none is set; a "
        "deployment without one refuses to start). 'none': no credentials, for a trusted "
        "network only (logs a warning).",
    )
    api_key: str | None = Field(
        None,
        description="The write key (header X-API-Key or Authorization: Bearer); "
        "CROSSREC_API_KEY also sets it. It also allows user-keyed reads.",
    )
    read_api_key: str | None = Field(
        None,
        description="A key for user-keyed reads only (recommendations of a stored user); "
        "CROSSREC_READ_API_KEY also sets it.",
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest request body; bigger ones get 413."
    )
    max_history_items: int = Field(
        500, ge=1, description="Most history items an inline (cold-start) request may carry."
    )
    max_text_chars: int = Field(
        4000, ge=1, description="Longest query or item text a request may carry."
    )
    max_events_per_request: int = Field(1000, ge=1, description="Most events one POST carries.")
    require_stream_worker: bool = Field(
        False,
        description="Readiness also needs the in-process stream worker's heartbeat in the "
        "feature store (`crossrec serve` sets it when it runs one).",
    )
    rank: bool = Field(True, description="Re-rank retrieved candidates with the ranker.")
    index: Literal["exact", "ivf"] = Field(
        "exact", description="Item index: exact inner product, or IVF for large catalogues."
    )
    ivf_nlist: int = Field(256, ge=1, description="IVF cells (index=ivf).")
    ivf_nprobe: int = Field(16, ge=1, description="IVF cells probed per query (index=ivf).")
    model_check_s: float = Field(
        2.0, gt=0, description="How often replicas look for a new current model version."
    )
    new_items_check_s: float = Field(
        0.5, gt=0, description="How often replicas pick up items other replicas added."
    )
    metrics: bool = Field(
        True,
        description="Replicas record request, model and index metrics through Ray Serve's "
        "metrics API (exported by Ray's Prometheus endpoint; see serving/metrics.py).",
    )
    haproxy: bool = Field(
        False,
        description="Ray Serve's HAProxy ingress straight to the replicas (sets "
        "RAY_SERVE_ENABLE_HA_PROXY=1 and RAY_SERVE_THROUGHPUT_OPTIMIZED=1 for a local Ray; set "
        "them in the cluster's environment otherwise). Several times the default proxy's "
        "throughput; replica ports then listen on all interfaces.",
    )
    request_timeout_s: float = Field(
        30.0, gt=0, description="Serve's HTTP request timeout (the proxy answers 408 after it)."
    )
    encoder: EncoderDeploymentSettings = Field(default_factory=EncoderDeploymentSettings)
    recommender: DeploymentSettings = Field(default_factory=DeploymentSettings)

    @model_validator(mode="after")
    def _k_bounds(self) -> ServeConfig:
        if self.default_k > self.max_k:
            raise ValueError(f"default_k ({self.default_k}) is above max_k ({self.max_k})")
        return self


EventTypeName = Literal["view", "click", "purchase", "rating"]


class UpdatesConfig(_Section):
    """When written users get their vectors recomputed (the update trigger)."""

    mode: Literal["immediate", "debounce"] = Field(
        "immediate",
        description="immediate: right after each batch is written; debounce: once a user has "
        "been quiet for `debounce_s` (fewer recomputes for bursty users).",
    )
    debounce_s: float = Field(0.5, ge=0.0, description="Quiet time before a recompute (debounce).")
    max_batch: int = Field(256, ge=1, description="Users recomputed in one model call.")
    model_check_s: float = Field(
        5.0, gt=0.0, description="How often workers look for a new current model version."
    )


class StreamConfig(_Section):
    """Kafka consumer workers (kafka-python). Security settings pass through to the client."""

    bootstrap_servers: str | None = Field(
        None, description="Kafka brokers; None starts the embedded Kafka-protocol broker."
    )
    topic: str = Field("crossrec-events", min_length=1, description="Topic of user events.")
    dead_letter_topic: str = Field(
        "crossrec-events-dlq", min_length=1, description="Where invalid events go, with reason."
    )
    group_id: str = Field("crossrec-stream", min_length=1, description="Consumer group.")
    partitions: int = Field(
        4, ge=1, description="Partitions of the topics the embedded broker creates."
    )
    batch_size: int = Field(500, ge=1, description="Most records one poll returns.")
    poll_timeout_ms: int = Field(500, ge=1, description="How long one poll waits for records.")
    domains: list[str] | None = Field(
        None,
        description="Domains an event may name; None: the current model's domains (then a "
        "model must be published).",
    )
    max_event_bytes: int = Field(65536, ge=64, description="Larger records go to the DLQ.")
    max_future_skew_s: float = Field(
        300.0, ge=0.0, description="Events stamped further in the future go to the DLQ."
    )
    api_version: str | None = Field(
        None, description="Kafka protocol version for kafka-python ('2.1'); None: auto-detect."
    )
    mock_broker: bool = Field(
        False,
        description="The brokers are librdkafka's mock cluster (the embedded broker sets this): "
        "consumers use the group settings it needs. Never for real Kafka.",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="Kafka security protocol.",
    )
    sasl_mechanism: str | None = Field(None, description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, …")
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: str | None = Field(None, description="Prefer CROSSREC_KAFKA_PASSWORD.")
    ssl_cafile: str | None = Field(None, description="CA file for Kafka TLS.")
    ssl_certfile: str | None = Field(None, description="Client certificate for Kafka TLS.")
    ssl_keyfile: str | None = Field(None, description="Client key for Kafka TLS.")
    ssl_check_hostname: bool = Field(
        True,
        description="Check the broker's host name against its certificate.",
    )
    client_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra kafka-python settings passed to consumer and producer as they are.",
    )
    consumer_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra KafkaConsumer settings (session_timeout_ms, fetch_max_bytes, …).",
    )
    backoff_s: float = Field(0.2, gt=0.0, description="First retry delay when Redis fails.")
    max_backoff_s: float = Field(10.0, gt=0.0, description="Longest retry delay.")
    workers: int = Field(1, ge=1, description="Consumer workers `crossrec stream` starts.")
    worker_num_cpus: float = Field(0.5, gt=0.0, description="CPUs a Ray worker actor asks for.")
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Prometheus /metrics port of worker 0 (worker i: port + i); None: off.",
    )
    metrics_host: str = Field("127.0.0.1", description="Address the /metrics server binds.")
    lag_interval_s: float = Field(5.0, gt=0.0, description="How often consumer lag is read.")
    rejoin_timeout_s: float = Field(
        120.0, gt=0.0, description="A group rejoin taking longer recreates the consumer."
    )
    updates: UpdatesConfig = Field(default_factory=UpdatesConfig)

    @model_validator(mode="after")
    def _check(self) -> StreamConfig:
        if self.topic == self.dead_letter_topic:
            raise ValueError("dead_letter_topic must differ from topic")
        if self.sasl_mechanism and not self.security_protocol.startswith("SASL"):
            raise ValueError("sasl_mechanism needs security_protocol SASL_PLAINTEXT or SASL_SSL")
        if self.backoff_s > self.max_backoff_s:
            raise ValueError("backoff_s must not exceed max_backoff_s")
        return self


class FeatureStoreConfig(_Section):
    """The Redis feature store. Every key starts with `key_prefix`; per-user keys carry the
    user id as a hash tag, so one user's keys share a Redis Cluster slot."""

    type: str = Field(
        "redis",
        description="Feature store implementation (`crossrec.feature_store.STORES`); `redis` "
        "ships.",
    )
    url: str | None = Field(
        None, description="redis://[user:pass@]host:port/db or rediss:// (TLS); None: embedded."
    )
    cluster: bool = Field(False, description="Connect as a Redis Cluster client.")
    password: str | None = Field(
        None, description="Overrides the URL's; prefer CROSSREC_REDIS_PASSWORD."
    )
    tls: bool = Field(False, description="TLS even for a redis:// URL.")
    ssl_ca_certs: str | None = Field(None, description="CA file for Redis TLS.")
    ssl_certfile: str | None = Field(None, description="Client certificate for Redis TLS.")
    ssl_keyfile: str | None = Field(None, description="Client key for Redis TLS.")
    key_prefix: str = Field(
        "crossrec",
        min_length=1,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Prefix of every Redis key crossrec writes (one per deployment or test).",
    )
    history_length: int = Field(50, ge=1, description="Events kept per user and domain.")
    dedupe_ttl_s: int = Field(
        7 * 24 * 3600, ge=1, description="How long an event id is remembered (replay window)."
    )
    dedupe_max_per_user: int = Field(
        10_000,
        ge=1,
        description="Event ids a user's dedupe set keeps at most (the newest by arrival): a "
        "flood of events for one user bounds its memory; a replay of an id beyond it counts again.",
    )
    popularity_half_life_s: float = Field(
        7 * 24 * 3600.0, gt=0.0, description="Popularity halves over this time."
    )
    popularity_dedupe_window_s: int = Field(
        3600,
        ge=4,
        description="How long popularity remembers an event id (time buckets per domain): a "
        "replay older than this counts in popularity again; histories dedupe for dedupe_ttl_s.",
    )
    popularity_weights: dict[EventTypeName, float] = Field(
        default_factory=lambda: {"view": 1.0, "click": 1.0, "purchase": 3.0, "rating": 1.0},  # type: ignore[arg-type]
        description="What one event of each type adds to its item's popularity.",
    )
    socket_timeout_s: float = Field(5.0, gt=0.0, description="Redis socket timeout.")
    connect_timeout_s: float = Field(5.0, gt=0.0, description="Redis connect timeout.")
    max_connections: int = Field(32, ge=1, description="Connection pool size.")
    retries: int = Field(3, ge=0, description="Retries of a failed command (with backoff).")
    embedded_dir: str | None = Field(
        None, description="Data folder of the embedded redis-server; None: a temporary one."
    )


class OnlineConfig(_Section):
    """Online learning (`crossrec online`): stream events become training samples; short
    fine-tunes from the current version are promoted only when a gate finds them no worse."""

    record_samples: bool = Field(
        True, description="Stream workers turn written events into samples (history -> item)."
    )
    sample_domains: list[str] | None = Field(
        None, description="Domains whose events become samples; None = every domain."
    )
    buffer_size: int = Field(
        20000, ge=100, description="Samples the buffer keeps (a Redis stream; oldest dropped)."
    )
    context_length: int = Field(
        50, ge=1, description="Most history items (all domains, newest) a sample keeps."
    )
    every_samples: int = Field(
        500, ge=1, description="A round starts once this many new samples arrived (N)."
    )
    every_s: float = Field(
        600.0, gt=0, description="…or once this long passed since the last round (T)."
    )
    min_samples: int = Field(
        50, ge=2, description="Fewest new samples for a round started by time."
    )
    holdout_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="Newest share of a round's samples held out for the gate."
    )
    min_holdout: int = Field(20, ge=1, description="Fewest holdout samples of a round.")
    ranker_share: float = Field(
        0.2,
        ge=0.0,
        lt=1.0,
        description="Models with the hybrid ranker: share of a round's training samples kept "
        "from the towers and used to refit the ranker after them (at least 50 samples, else "
        "the ranker stays as it is).",
    )
    replay_fraction: float = Field(
        1.0, ge=0.0, description="Older buffered samples replayed per new training sample."
    )
    finetune: Literal["adapter", "full"] = Field(
        "adapter",
        description="What a round trains: `adapter` (item adapter, item/domain embeddings, the "
        "user tower's output layers) or `full` (every weight but the text encoder and ranker).",
    )
    steps: int = Field(40, ge=1, description="Optimizer steps of one round.")
    batch_size: int = Field(64, ge=1, description="Samples per step.")
    lr: float = Field(5e-4, gt=0, description="Learning rate of a round (AdamW).")
    num_negatives: int = Field(256, ge=1, description="Sampled negatives per step (InfoNCE).")
    gate_metric: str = Field(
        "recall@20",
        pattern=r"^(recall|ndcg|mrr)@[1-9][0-9]*$",
        description="Metric the gate compares: recall@K, ndcg@K or mrr@K.",
    )
    margin: float = Field(
        0.02,
        ge=0.0,
        description="On the holdout (the newest events), a candidate may score this much below "
        "the current version (mind the holdout's noise: about 0.5/sqrt(holdout size)).",
    )
    regression_margin: float = Field(
        0.15,
        ge=0.0,
        description="On the fixed regression set, a candidate may score this much below the "
        "current version: it catches broken updates, and allows the drop a real preference "
        "shift brings to old behaviour.",
    )
    regression_relative_margin: float = Field(
        0.25,
        ge=0.0,
        le=1.0,
        description="On the regression set, a candidate may also lose at most this share of "
        "the current score: the allowed drop is the smaller of this and regression_margin, so "
        "a weak current model (a low score) is protected as well as a strong one.",
    )
    regression_path: str | None = Field(
        None,
        description="A fixed regression set (JSONL samples); None = frozen from the buffer's "
        "oldest samples on the first round and kept in the registry.",
    )
    regression_size: int = Field(
        200, ge=1, description="Samples frozen into the regression set when none is given."
    )
    runner: Literal["local", "ray"] = Field(
        "local", description="Where a round trains: in this process, or as a Ray task."
    )
    num_cpus: float = Field(1.0, gt=0, description="CPUs of the Ray task (runner=ray).")
    num_gpus: float = Field(0.0, ge=0, description="GPUs of the Ray task (runner=ray).")
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Prometheus /metrics port of `crossrec online run` (rounds, gate scores, "
        "promotions, pending samples); None: off.",
    )
    metrics_host: str = Field("127.0.0.1", description="Address the /metrics server binds.")
    poll_s: float = Field(1.0, gt=0, description="How often `crossrec online` checks the buffer.")
    seed: int = Field(0, description="Seed of replay draws, batches and negatives.")

    @model_validator(mode="after")
    def _holdout_fits(self) -> OnlineConfig:
        if self.min_holdout >= self.min_samples:
            raise ValueError(
                f"min_holdout ({self.min_holdout}) must be below min_samples "
                f"({self.min_samples}): a round needs samples left to train on"
            )
        return self


class RegistryConfig(_Section):
    """Where model versions are kept (`crossrec models`)."""

    root: str = Field(
        "runs/registry", description="Registry folder: one subfolder per model version."
    )
