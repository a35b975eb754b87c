"""`RecommendationService`: what every serving replica does, without Ray or HTTP.

It holds the current `ServingModel`, reads the user's state from the feature store on every
request, and answers recommendations (for a stored user, or an inline history and/or a text
query), similar items, item upserts and event validation. Text is encoded by the caller (a Ray
Serve encoder deployment, or `encode_locally`), so the service itself never blocks on a model it
does not hold. Model versions are swapped whole: a request finishes on the version it started
with, and every answer names it.

Example:
    >>> service = RecommendationService(cfg, store)
    >>> service.swap(service.load_version("runs/demo/models"))
    >>> service.recommend_user("u42", "films", k=10).items[0].item_id
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import torch

from crossrec.config import CrossRecConfig
from crossrec.data.events import Event, check_event_context
from crossrec.data.schema import Item
from crossrec.encoders.template import ItemTextTemplate
from crossrec.errors import CrossRecError, EventError, RequestError, ServiceUnavailableError
from crossrec.feature_store.base import FeatureStore, NewItem
from crossrec.inference.catalogue import DomainCatalogue, ServingModel
from crossrec.inference.schemas import (
    Because,
    ColdStartRequest,
    EventBatch,
    Health,
    ItemUpsert,
    ItemUpserted,
    ModelInfo,
    Recommendations,
    ScoredItem,
    SimilarItems,
    SimilarItemsRequest,
)
from crossrec.models.bundle import ModelBundle
from crossrec.models.crossrec_model import CrossRecModel
from crossrec.stream.updates import history_context

logger = logging.getLogger(__name__)

# Queue entries read per round trip when catching up with other replicas' new items.
_NEW_ITEMS_PAGE = 1000
_NEW_ITEMS_MAX_PAGES = 1000


def encoder_identity(model: CrossRecModel) -> tuple[str, str, bool, int]:
    """What the text vectors of ``model`` depend on: an encoder with the same identity gives
    the same vectors (frozen mode)."""
    e = model.cfg.encoder
    return (e.model, e.pooling, e.normalize, e.max_length)


class RecommendationService:
    """The serving logic of one replica.

    Args:
        cfg: the whole config (``serve`` bounds and ranking, ``stream`` event checks).
        store: the feature store user state is read from (and item texts written to).
        model: the version to start with; None until :meth:`swap` is called.
    """

    def __init__(
        self, cfg: CrossRecConfig, store: FeatureStore, model: ServingModel | None = None
    ) -> None:
        self.cfg = cfg
        self.serve = cfg.serve
        self.store = store
        self._model = model
        self._new_item_lags: list[float] = []

    # ------------------------------------------------------------------ versions
    @property
    def model(self) -> ServingModel:
        model = self._model
        if model is None:
            raise ServiceUnavailableError(
                "no model version loaded yet (publish one, or start with a checkpoint)"
            )
        return model

    @property
    def current(self) -> ServingModel | None:
        """The version served now, or None before the first one is loaded."""
        return self._model

    @property
    def ready(self) -> bool:
        return self._model is not None

    def load_version(
        self, uri: str, version: str | None = None, *, follows_pointer: bool = True
    ) -> ServingModel:
        """Loads a version and brings it up to date with the items queued since (not swapped
        in yet: call :meth:`swap`)."""
        started = time.perf_counter()
        served = ServingModel(
            ModelBundle.load(uri, version=version), self.serve, follows_pointer=follows_pointer
        )
        added = self.sync_new_items(served)
        logger.info(
            "model version=%s ready in %.1fs (items from the queue: %d)",
            served.version,
            time.perf_counter() - started,
            added,
        )
        return served

    def swap(self, model: ServingModel) -> str | None:
        """Makes ``model`` current; requests already running finish on the old one."""
        old = self._model
        self._model = model
        return old.version if old is not None else None

    def sync_new_items(self, served: ServingModel | None = None) -> int:
        """Applies items queued in the feature store since the last call (added through
        another replica or by the stream's update trigger). Returns how many were applied."""
        served = served or self.model
        applied = 0
        for domain in served.domains:
            for _ in range(_NEW_ITEMS_MAX_PAGES):
                rows = self.store.new_items(
                    domain, served.new_items_cursor[domain], _NEW_ITEMS_PAGE
                )
                if not rows:
                    break
                latest: dict[str, NewItem] = {}
                for _, item in rows:
                    latest.pop(item.item_id, None)
                    latest[item.item_id] = item
                items = list(latest.values())
                served.apply_items(
                    domain,
                    [i.item_id for i in items],
                    [i.text for i in items],
                    np.stack([i.text_vector for i in items]),
                )
                served.new_items_cursor[domain] = rows[-1][0]
                applied += len(items)
                now = time.time()
                # A stream entry's id starts with its write time in milliseconds.
                self._new_item_lags += [now - int(str(r[0]).split("-")[0]) / 1000 for r in rows]
                del self._new_item_lags[:-1000]
                if len(rows) < _NEW_ITEMS_PAGE:
                    break
        return applied

    def take_new_item_lags(self) -> list[float]:
        """Seconds from each newly applied item's write to its application, since the last
        call (for the serving metrics)."""
        lags, self._new_item_lags = self._new_item_lags, []
        return lags

    def uses_shared_encoder(self, identity: tuple[str, str, bool, int] | None) -> bool:
        """Whether text for this version may be encoded by a shared encoder with ``identity``
        (not when the version fine-tuned its own encoder, or was trained with another)."""
        if identity is None:
            return False
        return all(
            m.item_tower.mode == "frozen" and encoder_identity(m) == tuple(identity)
            for m in self.model.bundle.models.values()
        )

    def encode_locally(self, texts: Sequence[str]) -> np.ndarray:
        """Encoder outputs computed in this process with the version's own encoder."""
        model = next(iter(self.model.bundle.models.values()))
        return model.encode_text(list(texts)).float().cpu().numpy()

    # ------------------------------------------------------------------ bounds
    def check_k(self, k: int | None) -> int:
        k = self.serve.default_k if k is None else k
        if not 1 <= k <= self.serve.max_k:
            raise RequestError(
                422, "invalid_k", f"k must be between 1 and {self.serve.max_k}, got {k}", field="k"
            )
        return k

    def check_text(self, text: str | None, field: str) -> None:
        if text is not None and len(text) > self.serve.max_text_chars:
            raise RequestError(
                413,
                "text_too_long",
                f"{field} has {len(text)} characters, more "
                f"than serve.max_text_chars={self.serve.max_text_chars}",
                field=field,
            )
        if text is not None and not text.strip():
            raise RequestError(422, "empty_text", f"{field} is blank", field=field)

    # ------------------------------------------------------------------ recommendations
    @torch.no_grad()
    def recommend_user(
        self,
        user_id: str,
        domain: str,
        *,
        k: int | None = None,
        exclude_seen: bool = True,
        explain: bool = False,
    ) -> Recommendations:
        """Top-k of ``domain`` for a user whose state the stream keeps in the feature store."""
        served = self.model
        k = self.check_k(k)
        catalogue = served.catalogue(domain)
        model = catalogue.model
        state = self.store.user_state(user_id, served.domains, domain)
        if not state.known:
            raise RequestError(
                404, "unknown_user", f"no events stored for user {user_id!r}", field="user_id"
            )
        context = history_context(model, state.history)
        if model.cfg.train.target_only:
            in_domain = model.item_tower.item_domain[context].numpy() == model.domain_index[domain]
            context = context[in_domain]
        stored = state.vector
        if (
            stored is not None
            and stored.model_version == served.version
            and stored.seq >= state.seq
            and served.bundle.models.get(domain) is model
            and stored.vector.shape == (model.cfg.model.dim,)
        ):
            user = torch.from_numpy(stored.vector)
            source = "stored"
        else:
            user = model.encode_users([context], domain)[0]
            source = "computed"
            if stored is not None and stored.model_version != served.version:
                # Made by another version: computed here for this answer, and recomputed by the
                # update trigger (lazily, on first read) so the next answers use it as stored.
                self.store.mark_dirty([user_id])
        items = self._top_items(catalogue, user, context, k, exclude_seen, explain)
        return Recommendations(
            domain=domain,
            model_version=served.version,
            items=items,
            user_id=user_id,
            history_length=len(state.history),
            user_vector=source,
        )

    @torch.no_grad()
    def recommend_cold(
        self, request: ColdStartRequest, query_vector: np.ndarray | None = None
    ) -> Recommendations:
        """Top-k for an inline history and/or a text query (encoded by the caller)."""
        served = self.model
        k = self.check_k(request.k)
        catalogue = served.catalogue(request.domain)
        model = catalogue.model
        if len(request.history) > self.serve.max_history_items:
            raise RequestError(
                413,
                "history_too_long",
                f"history has {len(request.history)} "
                f"items, more than serve.max_history_items="
                f"{self.serve.max_history_items}",
                field="history",
            )
        self.check_text(request.query, "query")
        if request.query is not None and query_vector is None:
            raise CrossRecError("a query needs its encoder output")
        gids = []
        for n, ref in enumerate(request.history):
            gid = model.key_index.get((ref.domain, ref.item_id))
            if gid is None:
                known = ref.domain in model.domain_index
                raise RequestError(
                    404 if known else 422,
                    "unknown_item" if known else "unknown_domain",
                    f"history[{n}]: "
                    + (
                        f"no item {ref.item_id!r} in domain {ref.domain!r}"
                        if known
                        else f"unknown domain {ref.domain!r}"
                    ),
                    field=f"history[{n}]",
                )
            gids.append(gid)
        context = np.asarray(gids, dtype=np.int64)
        queries = None if query_vector is None else torch.from_numpy(query_vector[None])
        user = model.encode_users([context], request.domain, queries)[0]
        items = self._top_items(
            catalogue,
            user,
            context,
            k,
            request.exclude_seen,
            request.explain,
            hybrid=request.query is None,
        )
        return Recommendations(
            domain=request.domain,
            model_version=served.version,
            items=items,
            history_length=len(gids),
            user_vector="query",
        )

    def _top_items(
        self,
        catalogue: DomainCatalogue,
        user: torch.Tensor,
        context: np.ndarray,
        k: int,
        exclude_seen: bool,
        explain: bool,
        hybrid: bool = True,
    ) -> list[ScoredItem]:
        model = catalogue.model
        history = torch.from_numpy(np.asarray(context, dtype=np.int64))
        # The hybrid ranker learned on histories; a text query (or no history at all) is served
        # in two-tower order, which is what carries its meaning.
        if self.serve.rank and model.hybrid is not None and hybrid and context.size:
            rows, scores = self._hybrid_top(catalogue, user, context, k, exclude_seen)
            return self._scored_items(catalogue, history, rows, scores, explain)
        seen = catalogue.rows_of(torch.unique(history)) if exclude_seen else torch.empty(0)
        want = max(k, model.cfg.model.ranker_candidates) if self.serve.rank else k
        n = min(want + int(seen.numel()), catalogue.size)
        if n == 0:
            return []
        user = user.float()
        scores, rows = catalogue.index.search(user[None], n)
        scores, rows = scores[0], rows[0]
        keep = rows >= 0
        if seen.numel():
            keep &= ~torch.isin(rows, seen)
        scores, rows = scores[keep][:want], rows[keep][:want]
        if self.serve.rank and rows.numel():
            # Ranked by logits: a sigmoid saturates (0.999994 for several items) and ties the top.
            logits = model.ranker.logits(user[None], catalogue.vectors[rows])
            order = logits.argsort(descending=True)[:k]
            rows, scores = rows[order], logits[order]
        else:
            rows, scores = rows[:k], scores[:k]
        return self._scored_items(catalogue, history, rows, scores, explain)

    def _hybrid_top(
        self,
        catalogue: DomainCatalogue,
        user: torch.Tensor,
        context: np.ndarray,
        k: int,
        exclude_seen: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows and logits of the top ``k`` by the hybrid ranker: candidates from the towers,
        co-visitation and popularity over the whole catalogue, re-scored from their features
        (never items of the history); if there are fewer candidates than ``k``, the rest
        follow in two-tower order."""
        model = catalogue.model
        tower = user.float()[None] @ catalogue.vectors.T
        cols, first, features = model.hybrid_features(
            [context], catalogue.domain, tower, ids=catalogue.gids
        )
        logits = model.hybrid_logits(features)[0].masked_fill(~first[0], float("-inf"))
        order = logits.argsort(descending=True)
        order = order[torch.isfinite(logits[order])][:k]
        rows, scores = cols[0][order], logits[order]
        if rows.numel() < k:
            rest = tower[0].clone()
            rest[rows] = float("-inf")
            if exclude_seen and context.size:
                rest[torch.isin(catalogue.gids, torch.from_numpy(np.asarray(context)))] = float(
                    "-inf"
                )
            extra = rest.topk(min(k - rows.numel(), rest.numel())).indices
            extra = extra[torch.isfinite(rest[extra])]
            low = (scores.min() if scores.numel() else torch.tensor(0.0)) - 1.0
            rows = torch.cat([rows, extra])
            scores = torch.cat([scores, low - torch.arange(extra.numel(), dtype=scores.dtype)])
        return rows, scores

    def _scored_items(
        self,
        catalogue: DomainCatalogue,
        history: torch.Tensor,
        rows: torch.Tensor,
        scores: torch.Tensor,
        explain: bool,
    ) -> list[ScoredItem]:
        model = catalogue.model
        gids = catalogue.gids[rows]
        because: list[Because | None] = [None] * int(rows.numel())
        if explain and history.numel():
            hist_vectors = model.item_vectors(history)
            sims = catalogue.vectors[rows] @ hist_vectors.T
            best = sims.argmax(dim=1)
            for n_item, col in enumerate(best.tolist()):
                g = int(history[col])
                d, item_id = model.item_keys[g]
                because[n_item] = Because(
                    domain=d,
                    item_id=item_id,
                    text=model.item_tower.texts[g],
                    similarity=float(sims[n_item, col]),
                )
        texts = model.item_tower.texts
        return [
            ScoredItem(
                item_id=model.item_keys[g][1],
                domain=catalogue.domain,
                text=texts[g],
                score=float(s),
                because=b,
            )
            for g, s, b in zip(gids.tolist(), scores.tolist(), because, strict=True)
        ]

    # ------------------------------------------------------------------ similar items
    @torch.no_grad()
    def similar_items(
        self, request: SimilarItemsRequest, text_vector: np.ndarray | None = None
    ) -> SimilarItems:
        """Items of ``request.domain`` nearest an item of any domain the model knows, or a
        text (encoded by the caller; it is placed in ``domain`` as a new item would be)."""
        served = self.model
        k = self.check_k(request.k)
        catalogue = served.catalogue(request.domain)
        model = catalogue.model
        exclude = torch.empty(0, dtype=torch.long)
        if request.item is not None:
            ref = request.item
            if ref.domain not in model.domain_index:
                raise RequestError(
                    422,
                    "unknown_domain",
                    f"item.domain: unknown domain {ref.domain!r}",
                    field="item.domain",
                )
            gid = model.key_index.get((ref.domain, ref.item_id))
            if gid is None:
                raise RequestError(
                    404,
                    "unknown_item",
                    f"no item {ref.item_id!r} in domain {ref.domain!r}",
                    field="item.item_id",
                )
            anchor = model.item_vectors(torch.tensor([gid]))[0]
            exclude = catalogue.rows_of(torch.tensor([gid]))
        else:
            self.check_text(request.text, "text")
            if text_vector is None:
                raise CrossRecError("a text needs its encoder output")
            anchor = model.text_item_vectors(torch.from_numpy(text_vector[None]), request.domain)[0]
        n = min(k + int(exclude.numel()), catalogue.size)
        scores, rows = catalogue.index.search(anchor.float()[None], n)
        keep = (rows[0] >= 0) & ~torch.isin(rows[0], exclude)
        scores, rows = scores[0][keep][:k], rows[0][keep][:k]
        texts = model.item_tower.texts
        items = [
            ScoredItem(
                item_id=model.item_keys[g][1], domain=request.domain, text=texts[g], score=float(s)
            )
            for g, s in zip(catalogue.gids[rows].tolist(), scores.tolist(), strict=True)
        ]
        return SimilarItems(domain=request.domain, model_version=served.version, items=items)

    # ------------------------------------------------------------------ items
    def item_text(self, domain: str, body: ItemUpsert) -> str:
        """The text an upserted item is encoded from: ``text`` as is, else its fields through
        the version's item text template (the one it was trained with)."""
        model = self.model.model_for(domain)
        template = ItemTextTemplate.from_config(model.cfg.encoder)
        if body.text is not None:
            text = body.text
        else:
            item = Item(
                domain=domain,
                item_id="-",
                title=body.title or "",
                description=body.description,
                categories=tuple(body.categories),
                brand=body.brand,
            )
            text = template.render(item)
        self.check_text(text, "text" if body.text is not None else "item fields")
        return text[: template.max_chars]

    def upsert_item(
        self, domain: str, item_id: str, text: str, text_vector: np.ndarray
    ) -> ItemUpserted:
        """Adds (or re-texts) an item in this replica's index at once, stores its text for the
        stream's update trigger, and queues it for the other replicas."""
        served = self.model
        [created] = served.apply_items(domain, [item_id], [text], text_vector[None])
        self.store.put_item_texts(domain, {item_id: text})
        self.store.queue_new_items([NewItem(domain, item_id, text, text_vector, served.version)])
        return ItemUpserted(
            domain=domain, item_id=item_id, created=created, text=text, model_version=served.version
        )

    # ------------------------------------------------------------------ events
    def check_events(self, batch: EventBatch) -> list[Event]:
        """Every event checked like the stream consumer does (domain, future timestamps), so
        the API accepts exactly what the consumer will store; all or nothing."""
        if len(batch.events) > self.serve.max_events_per_request:
            raise RequestError(
                413,
                "too_many_events",
                f"{len(batch.events)} events, more than "
                f"serve.max_events_per_request={self.serve.max_events_per_request}",
                field="events",
            )
        domains = self.cfg.stream.domains or self.model.domains
        now = time.time()
        for n, event in enumerate(batch.events):
            try:
                check_event_context(event, domains, self.cfg.stream.max_future_skew_s, now)
            except EventError as exc:
                raise RequestError(
                    422, "invalid_event", f"events[{n}]: {exc.reason}", field=f"events[{n}]"
                ) from None
        return list(batch.events)

    # ------------------------------------------------------------------ status
    def info(self) -> ModelInfo:
        served = self.model
        return ModelInfo(
            model_version=served.version,
            uri=served.uri,
            loaded_at=served.loaded_at,
            targets=served.targets,
            domains=served.sizes(),
            follows_pointer=served.follows_pointer,
        )

    def _stream_worker_check(self) -> str:
        from crossrec.errors import FeatureStoreError
        from crossrec.stream.supervisor import HEARTBEAT_NAME

        try:
            beat = self.store.heartbeat(HEARTBEAT_NAME)
        except FeatureStoreError as exc:
            return f"heartbeat not read: {exc}"
        if beat is None:
            return "no heartbeat (the stream worker's process is gone)"
        if beat.get("status") != "ok":
            return f"stream worker {beat.get('status')}: {beat.get('error') or 'unknown'}"
        return "ok"

    def health(self) -> Health:
        checks = {
            "model": "ok" if self.ready else "no model version loaded",
            "feature_store": "ok" if self.store.ping() else "unreachable",
        }
        if self.serve.require_stream_worker and checks["feature_store"] == "ok":
            checks["stream_worker"] = self._stream_worker_check()
        ok = all(v == "ok" for v in checks.values())
        version = self._model.version if self._model is not None else None
        return Health(status="ok" if ok else "unavailable", checks=checks, model_version=version)
