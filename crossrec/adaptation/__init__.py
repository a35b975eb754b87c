"""Domain adaptation losses: align source and target representations during `adapt`.

* ``dann`` — a domain discriminator behind a gradient-reversal layer (Ganin & Lempitsky,
  "Unsupervised Domain Adaptation by Backpropagation", ICML 2015), with their lambda schedule.
* ``mmd`` — maximum mean discrepancy with a multi-bandwidth Gaussian kernel.
* ``coral`` — the distance between feature covariances (Sun & Saenko, Deep CORAL, 2016).
"""

from crossrec.adaptation.grl import GradientReversal, dann_lambda, grad_reverse
from crossrec.adaptation.losses import DomainDiscriminator, coral_distance, mmd_distance

# adaptation.method -> the statistical alignment loss between source and target representations
# (`dann` is the discriminator's loss instead: it needs the discriminator and the progress).
DISTANCES = {"mmd": mmd_distance, "coral": coral_distance}

__all__ = [
    "DISTANCES",
    "DomainDiscriminator",
    "GradientReversal",
    "coral_distance",
    "dann_lambda",
    "grad_reverse",
    "mmd_distance",
]
