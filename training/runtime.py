"""Connecting to Ray (kept here for the training entry points; it lives in
`crossrec.ray_runtime` so the stream workers use the same one)."""

from crossrec.ray_runtime import ray_session

__all__ = ["ray_session"]
