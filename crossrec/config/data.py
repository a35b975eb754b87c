"""Configuration of the data: `data` (formats, paths, the synthetic world, tables) and `eval`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from crossrec.config.base import DataFormat, _Section


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
