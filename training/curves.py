"""Training curves: ``curves.png`` in the run folder, drawn from the stage histories.

One panel per measure (training loss, validation NDCG@10 of the primary target), one line per
``target/stage``, one point per epoch. matplotlib (headless ``Agg``) is an optional extra
(``pip install 'crossrec[plots]'``); without it the run says so and skips the picture.

Example:
    >>> png = draw_curves(run.stages)  # PNG bytes, or None without matplotlib
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from typing import Any, Protocol

logger = logging.getLogger(__name__)

CURVES_FILE = "curves.png"
PANELS = (("loss", "training loss"), ("valid_ndcg@10", "validation NDCG@10"))


class _Stage(Protocol):
    target: str
    stage: str
    history: list[dict[str, Any]]


def draw_curves(stages: Sequence[_Stage], title: str = "") -> bytes | None:
    """A PNG of every stage's per-epoch loss and validation NDCG@10; None when matplotlib is
    not installed or no stage has a history."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning(
            "curves.png skipped: matplotlib is not installed (pip install 'crossrec[plots]')"
        )
        return None
    drawn = [s for s in stages if s.history]
    if not drawn:
        return None
    fig, axes = plt.subplots(1, len(PANELS), figsize=(10, 3.6), dpi=100)
    for ax, (key, label) in zip(axes, PANELS, strict=True):
        for s in drawn:
            points = [(h["epoch"], h[key]) for h in s.history if h.get(key) is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", markersize=3, label=f"{s.target}/{s.stage}")
        ax.set_xlabel("epoch")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
    return out.getvalue()
