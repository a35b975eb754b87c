"""Request and response bodies of the HTTP API (`/v1`), as pydantic models: they are the
OpenAPI schema the API publishes, and what `RecommendationService` returns."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from crossrec.data.events import Event

ID_PATTERN = r"^[^\x00-\x1f]{1,256}$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ItemRef(_Body):
    """An item by domain and id."""

    domain: str = Field(min_length=1, max_length=128, examples=["books"])
    item_id: str = Field(pattern=ID_PATTERN, examples=["b00042"])


class Because(BaseModel):
    """The history item that most supports a recommendation (``explain=true``)."""

    domain: str
    item_id: str
    text: str
    similarity: float = Field(description="Cosine similarity of the two item vectors.")


class ScoredItem(BaseModel):
    """One recommended (or similar) item."""

    item_id: str
    domain: str
    text: str = Field(description="The item's text, as the model reads it.")
    score: float = Field(description="Ranker probability (rank on) or retrieval cosine.")
    because: Because | None = None


class Recommendations(BaseModel):
    """Top-k items of a domain, best first."""

    domain: str
    model_version: str
    items: list[ScoredItem]
    user_id: str | None = None
    history_length: int = Field(0, description="History events the user vector was read from.")
    user_vector: Literal["stored", "computed", "query"] = Field(
        description="stored: the vector the stream's update trigger wrote for this version and "
        "history; computed: recomputed from the stored history for this request (the trigger "
        "had not caught up, or the version changed); query: a cold-start request."
    )


class ColdStartRequest(_Body):
    """Recommendations for an inline history and/or a text query (a user crossrec has not
    seen)."""

    domain: str = Field(min_length=1, max_length=128, examples=["films"])
    history: list[ItemRef] = Field(
        default_factory=list, description="Items the user interacted with, oldest first."
    )
    query: str | None = Field(
        None,
        min_length=1,
        description="Free text describing what the user wants.",
        examples=["a voyage to the stars"],
    )
    k: int | None = Field(None, description="How many items (1..serve.max_k).")
    exclude_seen: bool = True
    explain: bool = False

    @model_validator(mode="after")
    def _something_to_go_on(self) -> ColdStartRequest:
        if not self.history and not self.query:
            raise ValueError("give a history, a query, or both")
        return self


class SimilarItemsRequest(_Body):
    """Items of ``domain`` similar to an item (``item``) or to a text (``text``)."""

    domain: str = Field(min_length=1, max_length=128, examples=["films"])
    item: ItemRef | None = None
    text: str | None = Field(None, min_length=1, examples=["The Starship of the Nebula"])
    k: int | None = Field(None, description="How many items (1..serve.max_k).")

    @model_validator(mode="after")
    def _one_anchor(self) -> SimilarItemsRequest:
        if (self.item is None) == (self.text is None):
            raise ValueError("give exactly one of item or text")
        return self


class SimilarItems(BaseModel):
    domain: str
    model_version: str
    items: list[ScoredItem]


class ItemUpsert(_Body):
    """An item's text fields; ``text`` is used as is, otherwise the fields are joined by the
    model's item text template (as in training)."""

    title: str | None = Field(None, min_length=1, examples=["The Starship of the Nebula"])
    description: str | None = None
    categories: list[str] = Field(default_factory=list, max_length=64)
    brand: str | None = None
    text: str | None = Field(None, min_length=1, description="The full item text, verbatim.")

    @model_validator(mode="after")
    def _has_text(self) -> ItemUpsert:
        if self.text is None and self.title is None:
            raise ValueError("give a title (with optional fields) or a text")
        return self


class ItemUpserted(BaseModel):
    domain: str
    item_id: str
    created: bool = Field(description="True for a new item, False when its text was replaced.")
    text: str
    model_version: str


class EventBatch(_Body):
    """User events to produce to the event stream (validated first; all or none)."""

    events: list[Event] = Field(min_length=1)


class EventsAccepted(BaseModel):
    accepted: int
    topic: str


class ModelInfo(BaseModel):
    model_version: str
    uri: str
    loaded_at: float
    targets: list[str] = Field(description="Domains with a trained model (recommendable).")
    domains: dict[str, int] = Field(description="Items in each domain's index.")
    follows_pointer: bool = Field(
        description="True when the replica switches to the feature store's current version."
    )


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)
    model_version: str | None = None


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer."""

    error: ErrorDetail
