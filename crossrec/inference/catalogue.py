"""`ServingModel`: one loaded model version with a retrieval index per domain, growing as new
items arrive (from the API or other replicas) without blocking readers.

Readers take a `DomainCatalogue` snapshot (immutable) and work on it; adding items builds a new
snapshot under a lock and swaps it in, so a request never sees half an update, and a request
that started on the old snapshot finishes on it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from crossrec.config import ServeConfig
from crossrec.errors import RequestError
from crossrec.models.bundle import ModelBundle
from crossrec.models.crossrec_model import CrossRecModel
from crossrec.models.index import ExactIndex, ItemIndex, IVFIndex

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DomainCatalogue:
    """The items of one domain as the serving model sees them.

    Args:
        gids: global item indices in the model, ascending; row ``r`` of ``vectors`` is item
            ``gids[r]``.
        vectors: ``[n, dim]`` unit-norm item vectors.
        index: maximum inner-product search over ``vectors`` (ids are rows).
    """

    domain: str
    model: CrossRecModel
    gids: torch.Tensor
    vectors: torch.Tensor
    index: ItemIndex

    @property
    def size(self) -> int:
        return int(self.gids.numel())

    def rows_of(self, gids: torch.Tensor) -> torch.Tensor:
        """Rows of the given global indices (those of this domain; others are dropped)."""
        if gids.numel() == 0 or self.size == 0:
            return torch.empty(0, dtype=torch.long)
        pos = torch.searchsorted(self.gids, gids).clamp(max=self.size - 1)
        return pos[self.gids[pos] == gids]


def make_index(cfg: ServeConfig) -> ItemIndex:
    if cfg.index == "ivf":
        return IVFIndex(nlist=cfg.ivf_nlist, nprobe=cfg.ivf_nprobe)
    return ExactIndex()


class ServingModel:
    """A model version ready to serve: its models (one per target domain) and an index per
    domain, built from the model that serves that domain.

    Example:
        >>> served = ServingModel(ModelBundle.load("runs/demo/models"), cfg.serve)
        >>> served.catalogue("films").size
    """

    def __init__(
        self, bundle: ModelBundle, cfg: ServeConfig, *, follows_pointer: bool = True
    ) -> None:
        self.bundle = bundle
        self.cfg = cfg
        self.version = bundle.version
        self.uri = bundle.uri
        self.follows_pointer = follows_pointer
        self.loaded_at = time.time()
        self._lock = threading.Lock()
        for model in bundle.models.values():
            model.eval()
        self.domains = bundle.domains
        self._catalogues = {d: self._build(d) for d in self.domains}
        # Position in each domain's queue of new items (feature store stream ids).
        self.new_items_cursor: dict[str, str] = dict.fromkeys(self.domains, "0")

    # ------------------------------------------------------------------ lookup
    @property
    def targets(self) -> list[str]:
        return sorted(self.bundle.models)

    def model_for(self, domain: str) -> CrossRecModel:
        """The model that serves ``domain``: the one trained for it, else the first that knows
        it (a source domain)."""
        model = self.bundle.models.get(domain)
        if model is not None:
            return model
        for candidate in self.bundle.models.values():
            if domain in candidate.domain_index:
                return candidate
        raise RequestError(
            404,
            "unknown_domain",
            f"unknown domain {domain!r}; model {self.version} knows: {', '.join(self.domains)}",
            field="domain",
        )

    def catalogue(self, domain: str) -> DomainCatalogue:
        found = self._catalogues.get(domain)
        if found is None:
            self.model_for(domain)  # raises the 404 naming the known domains
            raise AssertionError(domain)
        return found

    def item_gid(self, domain: str, item_id: str) -> int | None:
        return self.model_for(domain).key_index.get((domain, item_id))

    def sizes(self) -> dict[str, int]:
        return {d: c.size for d, c in self._catalogues.items()}

    # ------------------------------------------------------------------ building
    @torch.no_grad()
    def _build(self, domain: str) -> DomainCatalogue:
        model = self.model_for(domain)
        gids = model.domain_items(domain)
        vectors = model.item_matrix(domain).float().contiguous()
        index = make_index(self.cfg)
        index.build(vectors)
        return DomainCatalogue(domain, model, gids, vectors, index)

    @torch.no_grad()
    def apply_items(
        self,
        domain: str,
        item_ids: Sequence[str],
        texts: Sequence[str],
        text_vectors: np.ndarray | torch.Tensor,
    ) -> list[bool]:
        """Adds new items, or replaces the text of known ones, in every model that knows
        ``domain`` and in its index. Returns, per item, True when it was new. Items whose text
        is unchanged are left alone."""
        if len(set(item_ids)) != len(item_ids):
            raise ValueError("item ids to apply must be distinct")
        vectors = torch.as_tensor(np.asarray(text_vectors, dtype=np.float32))
        with self._lock:
            serving = self.model_for(domain)
            created = [(domain, i) not in serving.key_index for i in item_ids]
            touched: list[int] = []
            for model in self.bundle.models.values():
                if domain not in model.domain_index:
                    continue
                new_rows, new_ids = [], []
                for row, item_id in enumerate(item_ids):
                    gid = model.key_index.get((domain, item_id))
                    if gid is None:
                        new_rows.append(row)
                        new_ids.append(item_id)
                    elif model.item_tower.texts[gid] != texts[row]:
                        model.set_item_text(gid, texts[row], vectors[row])
                        if model is serving:
                            touched.append(gid)
                if new_rows:
                    gids = model.add_item_vectors(
                        domain, new_ids, [texts[r] for r in new_rows], vectors[new_rows]
                    )
                    if model is serving:
                        touched += gids.tolist()
            if touched:
                self._catalogues[domain] = self._extend(self._catalogues[domain], touched)
        return created

    def _extend(self, old: DomainCatalogue, gids: list[int]) -> DomainCatalogue:
        model = old.model
        ids = torch.tensor(sorted(set(gids)), dtype=torch.long)
        fresh = model.item_vectors(ids).float()
        existing = torch.isin(ids, old.gids)
        vectors, all_gids = old.vectors, old.gids
        index = old.index
        if bool(existing.any()):
            vectors = vectors.clone()
            vectors[old.rows_of(ids[existing])] = fresh[existing]
        added = ~existing
        if bool(added.any()):
            vectors = torch.cat([vectors, fresh[added]])
            all_gids = torch.cat([all_gids, ids[added]])
        if bool(existing.any()) or index.size == 0:
            index = make_index(self.cfg)
            index.build(vectors)
        else:
            # Indexes are appended to in place; a reader holding the old snapshot only ever
            # sees rows it has ids for (search results index the snapshot's gids).
            index = _copy_index(index)
            index.add(fresh[added])
        return DomainCatalogue(old.domain, model, all_gids, vectors.contiguous(), index)


def _copy_index(index: ItemIndex) -> ItemIndex:
    clone = type(index).__new__(type(index))
    clone.__dict__.update(index.__dict__)
    return clone
