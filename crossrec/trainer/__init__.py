"""The training loop of the cross-domain model, one process or on every Ray Train worker.

* `loop` — `CrossRecTrainer` and its stages (joint, pretrain, adapt), early stopping, the
  ranker fit; `StageRun` is one stage's run.
* `context` — `TrainContext` (where the loop runs) and the training windows (`WindowBatches`).
* `objective` — `StageObjective`, the loss of a stage.
* `state` — `StageReport`, `StageState` (what resumes a stage) and their JSON helpers.
* `checkpoint` — per-epoch stage checkpoints (save, restore, read the manifest).
* `estimator` — `CrossRecRecommender`: the model as a `Recommender` that trains itself.
* `gap` — `measure_domain_gap`, the held-out discriminator accuracy between domains.
"""

from crossrec.trainer.context import TrainContext, WindowBatches
from crossrec.trainer.gap import measure_domain_gap
from crossrec.trainer.loop import LOSS_PLATEAU, CrossRecTrainer, StageRun
from crossrec.trainer.objective import ADAPTER_PARAMETERS, StageObjective
from crossrec.trainer.state import EpochCallback, StageReport, StageState, json_safe

__all__ = [
    "ADAPTER_PARAMETERS",
    "LOSS_PLATEAU",
    "CrossRecTrainer",
    "EpochCallback",
    "StageObjective",
    "StageReport",
    "StageRun",
    "StageState",
    "TrainContext",
    "WindowBatches",
    "json_safe",
    "measure_domain_gap",
]
