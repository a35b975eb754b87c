"""What the embedded services share: loopback ports, readiness timing, child-process hygiene."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from crossrec.errors import EmbeddedServiceError

logger = logging.getLogger(__name__)


_LOOPBACK = "127.0.0.1"
_READY_TIMEOUT_S = 10.0
_READY_MAX_ATTEMPTS = 400
_READY_POLL_S = 0.025
_STOP_TIMEOUT_S = 10.0
_LOG_TAIL_LINES = 20
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    Another process can take it before the caller binds it; callers that bind it soon after
    (as :class:`EmbeddedRedis` does) rarely lose that race, and fail loudly when they do.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _cluster_port() -> int:
    """A free port for a cluster node: at most 55535, with its bus port (+10000) free too."""
    import random

    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 45535)
        try:
            for p in (port, port + 10000):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind((_LOOPBACK, p))
        except OSError:
            continue
        return port
    raise EmbeddedServiceError("no free port pair (N, N+10000) for a Redis Cluster node")


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive SIGTERM when its parent dies (Linux only).

    libc is loaded here, in the parent: the function that runs in the forked child only calls
    into it, which is safe between fork and exec.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        logger.debug("prctl unavailable; child processes rely on atexit only")
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent_pid = os.getpid()

    def set_pdeathsig() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        # The parent may have died between fork and prctl; then no signal would ever come.
        if os.getppid() != parent_pid:
            os._exit(1)

    return set_pdeathsig


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """Last ``lines`` lines of a text file, or a note when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(log {path} unreadable: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"
