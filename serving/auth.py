"""API credentials: which key a request needs, and a key for a local run that has none.

With ``serve.auth: key`` (the default) the write endpoints (``PUT /v1/items``,
``POST /v1/events``) need the write key and user-keyed reads (``GET
/v1/users/{id}/recommendations``) need the read key or the write key; anonymous text-query,
similar-item and status reads stay open. ``serve.auth: none`` turns every check off, for a
trusted network only. Keys come from the config or the environment (``CROSSREC_API_KEY``,
``CROSSREC_READ_API_KEY``; on KubeRay from a Secret); a deployment with ``auth: key`` and no
write key refuses to start, while `crossrec serve` and `crossrec demo` generate one and print it
once, as Jupyter does with its token.

Example:
    >>> cfg, generated = with_local_key(cfg)  # crossrec serve / demo
    >>> keys = resolve_keys(cfg.serve)          # the driver: verifiers, not keys
    >>> keys.allows_write(request_key)          # every replica
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from typing import Any

from crossrec.config import CrossRecConfig, ServeConfig
from crossrec.errors import CrossRecError

logger = logging.getLogger(__name__)

API_KEY_ENV = "CROSSREC_API_KEY"
READ_API_KEY_ENV = "CROSSREC_READ_API_KEY"


@dataclass(frozen=True)
class Verifier:
    """Checks a key without holding it: a random salt and the key's HMAC-SHA256 under it.
    What replicas get (in their Ray arguments, which Ray stores) instead of the key."""

    salt: bytes
    digest: bytes

    @classmethod
    def of(cls, key: str) -> Verifier:
        salt = secrets.token_bytes(16)
        return cls(salt, _digest(salt, key))

    def matches(self, given: str) -> bool:
        return hmac.compare_digest(_digest(self.salt, given), self.digest)

    def to_json(self) -> str:
        return f"{self.salt.hex()}:{self.digest.hex()}"

    @classmethod
    def from_json(cls, text: str) -> Verifier:
        salt, _, digest = text.partition(":")
        return cls(bytes.fromhex(salt), bytes.fromhex(digest))


def _digest(salt: bytes, key: str) -> bytes:
    return hmac.new(salt, key.encode("utf-8"), hashlib.sha256).digest()


@dataclass(frozen=True)
class Keys:
    """What one replica checks keys against; ``open`` means ``serve.auth: none``."""

    write: Verifier | None
    read: Verifier | None
    open: bool = False

    def allows_write(self, given: str | None) -> bool:
        return self.open or _same(given, self.write)

    def allows_user_read(self, given: str | None) -> bool:
        return self.open or _same(given, self.write) or _same(given, self.read)

    def to_json(self) -> dict[str, Any]:
        """Plain data for a replica's arguments: verifiers only, never a key."""
        return {
            "open": self.open,
            "write": self.write.to_json() if self.write else None,
            "read": self.read.to_json() if self.read else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Keys:
        def verifier(value: Any) -> Verifier | None:
            return Verifier.from_json(value) if isinstance(value, str) else None

        return cls(verifier(data.get("write")), verifier(data.get("read")), bool(data["open"]))


def _same(given: str | None, verifier: Verifier | None) -> bool:
    if given is None or verifier is None:
        return False
    return verifier.matches(given)


def configured_key(serve: ServeConfig) -> str | None:
    return serve.api_key or os.environ.get(API_KEY_ENV) or None


def resolve_keys(serve: ServeConfig) -> Keys:
    """The keys of ``serve`` (config first, then the environment).

    Raises:
        CrossRecError: ``auth: key`` with no write key (a deployment must not start open)."""
    if serve.auth == "none":
        logger.warning(
            "serve.auth is 'none': every endpoint answers without a credential "
            "(writes included); use it on a trusted network only"
        )
        return Keys(None, None, open=True)
    write = configured_key(serve)
    if write is None:
        raise CrossRecError(
            "serve.auth is 'key' but no API key is set: set serve.api_key or "
            f"${API_KEY_ENV} (on KubeRay the crossrec-secrets Secret's api-key), or "
            "serve.auth: none for a trusted network"
        )
    read = serve.read_api_key or os.environ.get(READ_API_KEY_ENV) or None
    return Keys(Verifier.of(write), Verifier.of(read) if read else None)


def with_local_key(cfg: CrossRecConfig) -> tuple[CrossRecConfig, str | None]:
    """For a local `crossrec serve` / `crossrec demo`: with ``auth: key`` and no key anywhere, a
    copy of ``cfg`` with a freshly generated one, and that key (else ``cfg`` and None)."""
    if cfg.serve.auth == "none" or configured_key(cfg.serve) is not None:
        return cfg, None
    out = cfg.model_copy(deep=True)
    out.serve.api_key = secrets.token_urlsafe(24)
    return out, out.serve.api_key


def describe_key(url: str, key: str, target: str | None = None) -> list[str]:
    """The lines that print a generated key once, with a ready curl line."""
    path = "/v1/model" if target is None else f"/v1/users/USER/recommendations?domain={target}"
    return [
        f"API key (writes and user reads; generated for this run, shown once): {key}",
        f"  curl -H 'X-API-Key: {key}' '{url}{path}'",
    ]
