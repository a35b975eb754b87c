"""Secrets in a configuration: which fields hold them, how they are redacted, and the environment
variables that carry them to workers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crossrec.config.schema import CrossRecConfig


REDACTED = "**redacted**"
SECRET_FIELDS = (
    ("serve", "api_key"),
    ("serve", "read_api_key"),
    ("stream", "sasl_password"),
    ("feature_store", "password"),
)
URL_FIELDS = (("feature_store", "url"),)


SECRET_ENV = {"feature_store": "CROSSREC_REDIS_PASSWORD", "stream": "CROSSREC_KAFKA_PASSWORD"}


def secret_environment(cfg: CrossRecConfig) -> dict[str, str]:
    """The config's service passwords as the environment variables the feature store and the
    Kafka clients also read (`SECRET_ENV`): how a Ray that crossrec starts hands them to its
    workers, whose arguments get `CrossRecConfig.public_dump` (Ray stores arguments)."""
    out: dict[str, str] = {}
    redis_password = cfg.feature_store.password or url_password(cfg.feature_store.url or "")
    if redis_password:
        out[SECRET_ENV["feature_store"]] = redis_password
    if cfg.stream.sasl_password:
        out[SECRET_ENV["stream"]] = cfg.stream.sasl_password
    return out


def url_password(url: str) -> str | None:
    """The password of ``url``'s ``user:password@`` part, if it has one."""
    _, sep, rest = url.partition("://")
    netloc = rest.split("/", 1)[0]
    if not sep or "@" not in netloc:
        return None
    user_info = netloc.rpartition("@")[0]
    _, has_password, password = user_info.partition(":")
    return password if has_password and password else None


def redact_url(url: str, mask: str | None = REDACTED) -> str:
    """``url`` with the password of its ``user:password@`` part replaced by ``mask`` (None:
    dropped)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    auth, _, host = rest.partition("@")
    user, has_password, _ = auth.partition(":")
    if not has_password:
        return url
    return f"{scheme}://{user}:{mask}@{host}" if mask else f"{scheme}://{user}@{host}"


def redact_secrets(data: dict[str, Any], mask: str | None = None) -> dict[str, Any]:
    """A copy of config data (``model_dump(mode="json")``) without its secrets."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for section, key in SECRET_FIELDS:
        if isinstance(out.get(section), dict) and out[section].get(key):
            out[section][key] = mask
    for section, key in URL_FIELDS:
        if isinstance(out.get(section), dict) and isinstance(out[section].get(key), str):
            out[section][key] = redact_url(out[section][key], mask)
    return out
