"""The update trigger: users written by the stream get fresh vectors from the current model.

After a batch is written, its users are *dirty*. :meth:`UserVectorUpdater.run_once` takes up to
``stream.updates.max_batch`` of them (in ``debounce`` mode only users quiet for
``debounce_s``), reads their histories across domains, runs the user tower of every target
domain's model in one batch, and writes the vectors with the model version and the history's
event counter. A user marked again meanwhile stays dirty for the next round.

Items seen in events that the model does not know are encoded from their text (written to the
feature store by the API) and queued for serving indexes; items without a known text are marked
pending and left out of the history until their text arrives.

Example:
    >>> updater = UserVectorUpdater(store, cfg)
    >>> updater.run_once().vectors
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from crossrec.config import CrossRecConfig
from crossrec.feature_store.base import FeatureStore, HistoryEntry, NewItem, UserVector
from crossrec.models.bundle import ModelBundle
from crossrec.models.crossrec_model import CrossRecModel

logger = logging.getLogger(__name__)


@dataclass
class UpdateReport:
    """What one round did."""

    users: int = 0
    vectors: int = 0
    new_items: int = 0
    pending_items: int = 0
    skipped_no_model: bool = False


def history_context(model: CrossRecModel, entries: Sequence[HistoryEntry]) -> np.ndarray:
    """Global item indices of the entries the model knows, oldest first (what its user tower
    reads); entries of unknown items are left out."""
    index = model.key_index
    rows = [index[(e.domain, e.item_id)] for e in entries if (e.domain, e.item_id) in index]
    return np.asarray(rows, dtype=np.int64)


class UserVectorUpdater:
    """Recomputes dirty users' vectors with the current model version.

    Args:
        store: the feature store.
        cfg: ``stream.updates`` sets the policy.
        bundle: a loaded model version to use; when None the store's current model pointer is
            followed (checked every ``stream.updates.model_check_s``).
    """

    def __init__(
        self, store: FeatureStore, cfg: CrossRecConfig, bundle: ModelBundle | None = None
    ) -> None:
        self.store = store
        self.cfg = cfg
        self.policy = cfg.stream.updates
        self.bundle = bundle
        self._follow = bundle is None
        self._checked_at = 0.0
        self._warned_no_model = False

    # ------------------------------------------------------------------ model
    def refresh_model(self, force: bool = False) -> ModelBundle | None:
        """Loads the store's current model version when it changed (rate-limited)."""
        if not self._follow:
            return self.bundle
        now = time.monotonic()
        if not force and now - self._checked_at < self.policy.model_check_s:
            return self.bundle
        self._checked_at = now
        pointer = self.store.current_model()
        if pointer is None:
            return self.bundle
        if self.bundle is None or self.bundle.version != pointer.version:
            logger.info(
                "model version changed: %s -> %s (uri=%s)",
                self.bundle.version if self.bundle else None,
                pointer.version,
                pointer.uri,
            )
            self.bundle = ModelBundle.load(pointer.uri, version=pointer.version)
            self._warned_no_model = False
        return self.bundle

    # ------------------------------------------------------------------ rounds
    def run_once(self) -> UpdateReport:
        """One round: up to ``max_batch`` dirty users get new vectors."""
        bundle = self.refresh_model()
        if bundle is None:
            if not self._warned_no_model:
                logger.warning(
                    "no model version published (feature store key %s:{model}:current): "
                    "histories and popularity are updated, user vectors are skipped until "
                    "one is published",
                    self.cfg.feature_store.key_prefix,
                )
                self._warned_no_model = True
            return UpdateReport(skipped_no_model=True)
        quiet = self.policy.debounce_s if self.policy.mode == "debounce" else 0.0
        claims = self.store.dirty_users(self.policy.max_batch, quiet_for_s=quiet)
        if not claims:
            return UpdateReport()
        users = [u for u, _ in claims]
        vectors, report = self.compute(users, bundle)
        report.vectors = self.store.write_user_vectors(vectors)
        self.store.clear_dirty(claims)
        report.users = len(users)
        return report

    @torch.no_grad()
    def compute(
        self, users: Sequence[str], bundle: ModelBundle
    ) -> tuple[list[UserVector], UpdateReport]:
        """Vectors of ``users`` for every target domain of ``bundle`` (not written)."""
        report = UpdateReport()
        histories = self.store.histories(users, bundle.domains)
        report.new_items, report.pending_items = self._add_new_items(histories, bundle)
        now = time.time()
        out: list[UserVector] = []
        for target, model in bundle.models.items():
            model.eval()
            contexts = [history_context(model, histories[u][1]) for u in users]
            vectors = model.encode_users(contexts, target).float().cpu().numpy()
            for user, vec in zip(users, vectors, strict=True):
                out.append(UserVector(user, target, vec, bundle.version, now, histories[user][0]))
        return out, report

    def _add_new_items(
        self, histories: dict[str, tuple[int, list[HistoryEntry]]], bundle: ModelBundle
    ) -> tuple[int, int]:
        unknown: dict[str, set[str]] = {}
        for _, entries in histories.values():
            for e in entries:
                if any((e.domain, e.item_id) not in m.key_index for m in bundle.models.values()):
                    unknown.setdefault(e.domain, set()).add(e.item_id)
        added = pending = 0
        for domain, ids in unknown.items():
            texts = self.store.item_texts(domain, sorted(ids))
            missing = sorted(ids - set(texts))
            if missing:
                self.store.mark_items_pending(domain, missing)
                pending += len(missing)
                logger.debug("items without text domain=%s n=%d (pending)", domain, len(missing))
            queued: list[NewItem] = []
            for model in bundle.models.values():
                fresh = [i for i in sorted(texts) if (domain, i) not in model.key_index]
                if not fresh or domain not in model.domain_index:
                    continue
                gids = model.add_items(domain, fresh, [texts[i] for i in fresh])
                if not queued:
                    text_vectors = model.item_tower.text_vectors[gids].float().cpu().numpy()
                    queued = [
                        NewItem(domain, i, texts[i], v, bundle.version)
                        for i, v in zip(fresh, text_vectors, strict=True)
                    ]
            if queued:
                self.store.queue_new_items(queued)
                added += len(queued)
                logger.info("new items encoded domain=%s n=%d", domain, len(queued))
        return added, pending
