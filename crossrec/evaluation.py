"""`TargetDomainEvaluator`: full-ranking and sampled-negative evaluation, per domain and slice.

*Full* ranking ranks a case's target against every item of its domain, with the items already in
the case's context left out (the target itself is never left out). The *sampled* protocol of the
cross-domain sequential recommendation literature ranks the target against ``num_negatives``
(999) items drawn uniformly from its domain among those not in the context, with a fixed seed, so
every model faces the same negatives. Its numbers are higher and not comparable with full
ranking; reports always label them.

Cases are scored in batches of ``eval.batch_size``, so memory is bounded by
``batch_size x domain size`` floats whatever the number of cases.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from crossrec.config import EvalConfig
from crossrec.data.splits import SLICES, EvalCase, Split
from crossrec.errors import EvaluationError
from crossrec.ranking_metrics import metrics_from_ranks, ndcg_at_k, target_ranks
from crossrec.recommender import Recommender

logger = logging.getLogger(__name__)


@dataclass
class EvaluationRow:
    """Mean metrics of one model on one (domain, protocol, slice)."""

    model: str
    domain: str
    protocol: str
    slice: str
    num_cases: int
    metrics: dict[str, float]
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class TargetDomainEvaluator:
    """Evaluates recommenders on a split's validation or test cases.

    Example:
        >>> evaluator = TargetDomainEvaluator(split, cfg.eval)
        >>> rows = evaluator.evaluate(model)  # test cases, every protocol in cfg.eval.protocols
    """

    def __init__(self, split: Split, cfg: EvalConfig) -> None:
        self.split = split
        self.cfg = cfg
        self._negatives: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def for_model_selection(cls, split: Split) -> TargetDomainEvaluator:
        """The evaluator training loops use for early stopping: full ranking, large batches."""
        return cls(split, EvalConfig(protocols=["full"], batch_size=512))

    def evaluate(
        self,
        model: Recommender,
        which: str = "test",
        protocols: Sequence[str] | None = None,
        model_name: str | None = None,
        slices: Sequence[str] = SLICES,
    ) -> list[EvaluationRow]:
        """Scores every case of ``which`` (``"test"`` or ``"valid"``) and averages per slice."""
        cases = self._cases(which)
        protocols = list(protocols or self.cfg.protocols)
        name = model_name or model.name
        rows: list[EvaluationRow] = []
        for domain in self.split.target_domains:
            dom_cases = [(i, c) for i, c in enumerate(cases) if c.domain == domain]
            if not dom_cases:
                continue
            start = time.perf_counter()
            ranks = self._domain_ranks(model, which, domain, dom_cases, protocols)
            seconds = time.perf_counter() - start
            for protocol in protocols:
                for slice_name in slices:
                    mask = torch.tensor([slice_name in c.slices for _, c in dom_cases])
                    if not bool(mask.any()):
                        continue
                    rows.append(
                        EvaluationRow(
                            model=name,
                            domain=domain,
                            protocol=protocol,
                            slice=slice_name,
                            num_cases=int(mask.sum()),
                            metrics=metrics_from_ranks(ranks[protocol][mask], self.cfg.ks),
                            seconds=round(seconds, 3),
                        )
                    )
        return rows

    def ndcg_at(
        self,
        model: Recommender,
        k: int = 10,
        which: str = "valid",
        domains: Sequence[str] | None = None,
    ) -> float:
        """Mean full-ranking NDCG@k over the cases of ``which`` in ``domains`` (default: every
        target domain), for model selection."""
        total, count = self.ndcg_sum_at(model, k, which, domains)
        return total / max(count, 1)

    def ndcg_sum_at(
        self,
        model: Recommender,
        k: int = 10,
        which: str = "valid",
        domains: Sequence[str] | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> tuple[float, int]:
        """Sum and count of full-ranking NDCG@k over the cases of shard ``(index, count)``
        (every ``count``-th case from ``index``): distributed workers each score a shard and
        sum the results."""
        index, num_shards = shard
        if not 0 <= index < num_shards:
            raise EvaluationError(f"shard index {index} is outside 0..{num_shards - 1}")
        cases = self._cases(which)
        total, count = 0.0, 0
        for domain in domains or self.split.target_domains:
            dom_cases = [(i, c) for i, c in enumerate(cases) if c.domain == domain]
            dom_cases = dom_cases[index::num_shards]
            if dom_cases:
                ranks = self._domain_ranks(model, which, domain, dom_cases, ["full"])["full"]
                total += float(ndcg_at_k(ranks, k).sum())
                count += len(dom_cases)
        return total, count

    # ------------------------------------------------------------------ internals
    def _cases(self, which: str) -> list[EvalCase]:
        if which not in ("test", "valid"):
            raise EvaluationError(f"which must be 'test' or 'valid', got {which!r}")
        cases = self.split.test if which == "test" else self.split.valid
        if not cases:
            raise EvaluationError(f"the split has no {which} cases")
        return cases

    def _domain_ranks(
        self,
        model: Recommender,
        which: str,
        domain: str,
        dom_cases: list[tuple[int, EvalCase]],
        protocols: Sequence[str],
    ) -> dict[str, torch.Tensor]:
        ds = self.split.dataset
        d = ds.domain_index[domain]
        offset = int(ds.offsets[d])
        n_items = int(ds.offsets[d + 1]) - offset
        out: dict[str, list[torch.Tensor]] = {p: [] for p in protocols}
        for start in range(0, len(dom_cases), self.cfg.batch_size):
            batch = dom_cases[start : start + self.cfg.batch_size]
            batch_cases = [c for _, c in batch]
            with torch.no_grad():
                scores = model.score(batch_cases, domain)
            if scores.shape != (len(batch), n_items):
                raise EvaluationError(
                    f"{model.name}.score returned shape {tuple(scores.shape)} for {len(batch)} "
                    f"cases of domain {domain!r}; expected ({len(batch)}, {n_items})"
                )
            scores = scores.detach().to("cpu", torch.float32)
            targets = torch.tensor([c.target - offset for c in batch_cases])
            seen = torch.zeros(len(batch), n_items, dtype=torch.bool)
            for row, case in enumerate(batch_cases):
                ctx = case.context[ds.item_domain[case.context] == d] - offset
                seen[row, torch.from_numpy(ctx)] = True
            seen[torch.arange(len(batch)), targets] = False
            if "full" in protocols:
                out["full"].append(target_ranks(scores, targets, seen))
            if "sampled" in protocols:
                cand, valid = self._sampled_candidates(which, batch, seen, targets)
                gathered = torch.gather(scores, 1, cand)
                zeros = torch.zeros(len(batch), dtype=torch.long)
                out["sampled"].append(target_ranks(gathered, zeros, ~valid))
        return {p: torch.cat(v) for p, v in out.items()}

    def _sampled_candidates(
        self,
        which: str,
        batch: list[tuple[int, EvalCase]],
        seen: torch.Tensor,
        targets: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Column 0 is the target, the rest its negatives; ``valid`` masks padding."""
        n_items = seen.shape[1]
        width = 1 + min(self.cfg.num_negatives, n_items - 1)
        cand = torch.zeros(len(batch), width, dtype=torch.long)
        valid = torch.zeros(len(batch), width, dtype=torch.bool)
        for row, (case_index, _) in enumerate(batch):
            key = (which, case_index)
            if key not in self._negatives:
                rng = np.random.default_rng([self.cfg.seed, case_index, int(which == "test")])
                excluded = seen[row].clone()
                excluded[targets[row]] = True
                allowed = np.flatnonzero(~excluded.numpy())
                take = min(self.cfg.num_negatives, allowed.size)
                negs = rng.choice(allowed, size=take, replace=False)
                self._negatives[key] = (np.asarray([int(targets[row])]), negs)
            target, negs = self._negatives[key]
            cols = np.concatenate([target, negs])
            cand[row, : cols.size] = torch.from_numpy(cols)
            valid[row, : cols.size] = True
        return cand, valid


def format_rows(rows: Sequence[EvaluationRow], ks: Sequence[int], num_negatives: int = 999) -> str:
    """A markdown table, one line per (model, domain, protocol, slice)."""
    metric_cols = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg", "mrr")]
    header = ["model", "domain", "protocol", "slice", "cases", *metric_cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        protocol = r.protocol if r.protocol == "full" else f"sampled ({num_negatives} neg.)"
        values = [f"{r.metrics.get(c, float('nan')):.4f}" for c in metric_cols]
        lines.append(
            "| "
            + " | ".join([r.model, r.domain, protocol, r.slice, str(r.num_cases), *values])
            + " |"
        )
    return "\n".join(lines)
