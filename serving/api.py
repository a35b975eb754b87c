"""The HTTP API (`/v1`): a FastAPI app over a `RecommendationService`.

`create_api(backend)` builds it for whatever runs it: the Ray Serve recommender replica (text
encoded by the encoder deployment, events produced to Kafka) or a plain process (tests, the
in-process benchmark). Every error is a JSON body ``{"error": {"code", "message", "field"}}``;
bad input gets a 4xx that names the field, never a 5xx.
"""

from __future__ import annotations

import logging
import secrets
from typing import Annotated, Any, Protocol

import numpy as np
from fastapi import Depends, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crossrec import __version__
from crossrec.config import CrossRecConfig
from crossrec.data.events import Event
from crossrec.errors import (
    CrossRecError,
    FeatureStoreError,
    RequestError,
    ServiceUnavailableError,
    StreamError,
)
from crossrec.inference.recommendations import RecommendationService
from crossrec.inference.schemas import (
    ColdStartRequest,
    ErrorBody,
    EventBatch,
    EventsAccepted,
    Health,
    ItemUpsert,
    ItemUpserted,
    ModelInfo,
    Recommendations,
    SimilarItems,
    SimilarItemsRequest,
)
from serving.auth import Keys, resolve_keys
from serving.metrics import RequestMetrics, ServingMetrics

logger = logging.getLogger(__name__)

VERSION_HEADER = "X-Model-Version"
PathId = Annotated[str, Path(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f]+$")]
DomainQuery = Annotated[
    str, Query(min_length=1, max_length=128, description="Domain to recommend from.")
]
KQuery = Annotated[int | None, Query(description="How many items (1..serve.max_k).")]
ExcludeSeenQuery = Annotated[bool, Query(description="Leave out items the user has seen.")]
ExplainQuery = Annotated[bool, Query(description="Name the history item behind each one.")]
_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False)
_BEARER = HTTPBearer(auto_error=False)
ApiKey = Annotated[str | None, Depends(_KEY_HEADER)]
BearerToken = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]


class ApiBackend(Protocol):
    """What the API needs from where it runs."""

    service: RecommendationService

    async def encode(self, texts: list[str]) -> np.ndarray:
        """Encoder outputs ``[len(texts), text_dim]`` for the current model version."""

    async def produce(self, events: list[Event]) -> str:
        """Produces the events to the event stream (acknowledged); returns the topic."""


def error_response(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "field": field}}
    return JSONResponse(status_code=status, content=body)


class BodyLimit:
    """Refuses bodies over ``limit`` bytes with 413, by Content-Length or while streaming
    (chunked uploads), before the route reads them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = error_response(
            413, "body_too_large", f"request body is larger than serve.max_body_bytes={self.limit}"
        )
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    bad = error_response(
                        400, "bad_content_length", "Content-Length is not a number"
                    )
                    await bad(scope, receive, send)
                    return
                if length > self.limit:
                    await too_big(scope, receive, send)
                    return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge(self.limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await too_big(scope, receive, send)


class _BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` while a body streams in: FastAPI passes HTTP exceptions
    through its body parsing (anything else would become its generic 400)."""

    def __init__(self, limit: int = 0) -> None:
        super().__init__(413, f"request body is larger than serve.max_body_bytes={limit}")


def _field_of(loc: tuple[Any, ...]) -> str:
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or ".".join(str(p) for p in loc)


def create_api(
    backend: ApiBackend,
    cfg: CrossRecConfig,
    keys: Keys | None = None,
    metrics: ServingMetrics | None = None,
) -> FastAPI:
    """The FastAPI app of one replica. Write endpoints need the write key and a stored user's
    recommendations the read or write key, unless ``serve.auth: none`` (`serving.auth`).
    ``keys``: the verifiers to check against (default: those of ``cfg`` and the environment);
    ``metrics``: where requests are recorded (a Serve replica's; None records nothing)."""
    serve_cfg = cfg.serve
    keys = keys if keys is not None else resolve_keys(serve_cfg)
    app = FastAPI(
        title="crossrec",
        version=__version__,
        description="Cross-domain recommendations through language. User state is read from "
        "the feature store on every request; every answer names the model version.",
        responses={
            "4XX": {"model": ErrorBody, "description": "Bad request (JSON error body)"},
            503: {"model": ErrorBody, "description": "A part the request needs is not ready"},
        },
    )
    app.add_middleware(BodyLimit, limit=serve_cfg.max_body_bytes)
    if metrics is not None:  # outermost: refused bodies count too
        app.add_middleware(RequestMetrics, metrics=metrics)
    service = backend.service

    def _given(key: str | None, token: HTTPAuthorizationCredentials | None) -> str | None:
        return key if key is not None else (token.credentials if token is not None else None)

    def _refuse(given: str | None, what: str) -> None:
        if given is None:
            raise RequestError(
                401,
                "missing_api_key",
                f"{what} needs an API key (X-API-Key or Authorization: Bearer)",
                field="X-API-Key",
            )
        raise RequestError(403, "invalid_api_key", "the API key is not valid", field="X-API-Key")

    def require_key(key: ApiKey, token: BearerToken) -> None:
        given = _given(key, token)
        if not keys.allows_write(given):
            _refuse(given, "this endpoint")

    def require_read_key(key: ApiKey, token: BearerToken) -> None:
        given = _given(key, token)
        if not keys.allows_user_read(given):
            _refuse(given, "a stored user's recommendations")

    # ------------------------------------------------------------------ errors
    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.field)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
        field = _field_of(tuple(first.get("loc", ())))
        if first.get("type") == "json_invalid":
            ctx: Any = first.get("ctx") or {}
            reason = ctx.get("error", "JSON decode error")
            at = first.get("loc", ())[-1] if first.get("loc") else "?"
            return error_response(
                422,
                "malformed_json",
                f"the body is not valid JSON: {reason} (at character {at})",
                "body",
            )
        message = "; ".join(
            f"{_field_of(tuple(e.get('loc', ())))}: "
            + str(e.get("msg", "")).removeprefix("Value error, ")
            for e in errors[:5]
        )
        return error_response(422, "invalid_request", message, field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            # FastAPI's answer to a body its JSON parser gave up on (e.g. nested thousands deep).
            return error_response(
                400,
                "malformed_json",
                "the body could not be parsed as JSON "
                "(malformed, or nested deeper than the parser allows)",
                "body",
            )
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            exc.status_code, "http_error"
        )
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(ServiceUnavailableError)
    @app.exception_handler(FeatureStoreError)
    @app.exception_handler(StreamError)
    async def _unavailable(request: Request, exc: CrossRecError) -> JSONResponse:
        logger.warning("unavailable path=%s error=%s", request.url.path, exc)
        return error_response(503, "unavailable", str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The details stay in the replica's log: exception text can carry internals (paths,
        # addresses, data) a client must not see. The reference ties the two together.
        reference = secrets.token_hex(6)
        logger.exception("unexpected error path=%s reference=%s", request.url.path, reference)
        return error_response(
            500,
            "internal_error",
            f"internal error ({type(exc).__name__}); reference {reference} in the server log",
        )

    def versioned(response: Response, version: str) -> None:
        response.headers[VERSION_HEADER] = version

    # ------------------------------------------------------------------ routes
    @app.get("/v1/healthz", tags=["status"])
    async def healthz() -> dict[str, str]:
        """Liveness: the replica's process answers."""
        return {"status": "ok"}

    @app.get(
        "/v1/readyz", response_model=Health, tags=["status"], responses={503: {"model": Health}}
    )
    async def readyz() -> JSONResponse:
        """Readiness: a model version is loaded and the feature store answers."""
        health = await run_in_threadpool(service.health)
        return JSONResponse(health.model_dump(), status_code=200 if health.status == "ok" else 503)

    @app.get("/v1/model", response_model=ModelInfo, tags=["status"])
    async def model_info(response: Response) -> ModelInfo:
        """The model version this replica serves."""
        info = service.info()
        versioned(response, info.model_version)
        return info

    @app.get(
        "/v1/users/{user_id}/recommendations",
        response_model=Recommendations,
        tags=["recommendations"],
        dependencies=[Depends(require_read_key)],
    )
    async def user_recommendations(
        response: Response,
        user_id: PathId,
        domain: DomainQuery,
        k: KQuery = None,
        exclude_seen: ExcludeSeenQuery = True,
        explain: ExplainQuery = False,
    ) -> Recommendations:
        """Top-k items of ``domain`` for a user, from their state in the feature store."""
        # Called on the event loop, not in a thread: it is ~1 ms of CPU (one Redis round trip and
        # a small matrix product), and threads contending for the GIL serve fewer requests.
        result = service.recommend_user(
            user_id, domain, k=k, exclude_seen=exclude_seen, explain=explain
        )
        versioned(response, result.model_version)
        if metrics is not None:
            metrics.user_vector(result.user_vector)
        return result

    @app.post("/v1/recommendations", response_model=Recommendations, tags=["recommendations"])
    async def cold_start_recommendations(
        response: Response, body: ColdStartRequest
    ) -> Recommendations:
        """Top-k for an inline history and/or a text query: a user crossrec has not seen."""
        service.check_k(body.k)
        service.check_text(body.query, "query")
        vector = (await backend.encode([body.query]))[0] if body.query else None
        result = service.recommend_cold(body, vector)
        versioned(response, result.model_version)
        if metrics is not None:
            metrics.user_vector(result.user_vector)
        return result

    @app.post("/v1/similar-items", response_model=SimilarItems, tags=["items"])
    async def similar_items(response: Response, body: SimilarItemsRequest) -> SimilarItems:
        """Items of ``domain`` nearest an item (of any domain) or a text."""
        service.check_k(body.k)
        service.check_text(body.text, "text")
        vector = (await backend.encode([body.text]))[0] if body.text else None
        result = service.similar_items(body, vector)
        versioned(response, result.model_version)
        return result

    @app.put(
        "/v1/items/{domain}/{item_id}",
        response_model=ItemUpserted,
        tags=["items"],
        dependencies=[Depends(require_key)],
    )
    async def upsert_item(
        response: Response, domain: PathId, item_id: PathId, body: ItemUpsert
    ) -> ItemUpserted:
        """Adds an item (or replaces its text): encoded and in the index at once, servable
        from its text alone. Needs the API key."""
        text = service.item_text(domain, body)
        [vector] = await backend.encode([text])
        result = await run_in_threadpool(service.upsert_item, domain, item_id, text, vector)
        versioned(response, result.model_version)
        response.status_code = 201 if result.created else 200
        return result

    @app.post(
        "/v1/events",
        response_model=EventsAccepted,
        status_code=202,
        tags=["events"],
        dependencies=[Depends(require_key)],
    )
    async def ingest_events(body: EventBatch) -> EventsAccepted:
        """Validates user events and produces them to the event stream (all or none); the
        stream consumers store them. Needs the API key."""
        events = service.check_events(body)
        topic = await backend.produce(events)
        return EventsAccepted(accepted=len(events), topic=topic)

    return app
