"""Loading a configuration: defaults -> a YAML file -> ``a.b=c`` overrides, with errors that name
the field."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from crossrec.config.schema import CrossRecConfig
from crossrec.errors import ConfigError


# --------------------------------------------------------------------------- loading
def _first_error(exc: ValidationError, source: str | None) -> ConfigError:
    err = exc.errors()[0]
    path = ".".join(str(p) for p in err["loc"])
    reason = err["msg"]
    if err["type"] == "extra_forbidden":
        reason = "unknown field"
    if "input" in err and err["type"] != "extra_forbidden" and not isinstance(err["input"], dict):
        reason += f" (got {err['input']!r})"
    more = len(exc.errors()) - 1
    if more:
        reason += f"; and {more} more error(s)"
    return ConfigError(path, reason, source)


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError("", f"override {text!r} must look like section.field=value", "--set")
    key, _, raw = text.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError("", f"override {text!r} has an empty key", "--set")
    # YAML parsing gives numbers, booleans, null and [lists] their natural types, never code.
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None
) -> CrossRecConfig:
    """Loads the effective configuration.

    Args:
        path: YAML file, or None for the defaults.
        overrides: ``a.b=c`` strings applied on top, in order.

    Raises:
        ConfigError: unreadable file, bad YAML, unknown field or invalid value; the message names
            the field path and the reason.
    """
    raw: dict[str, Any] = {}
    source = None
    if path is not None:
        source = str(path)
        file = Path(path)
        if not file.is_file():
            raise ConfigError("", "config file not found", source)
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError("", f"not valid YAML: {exc}", source) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError("", "top level must be a mapping of sections", source)
        raw = loaded
    origin = source if not overrides else (f"{source} + --set" if source else "--set")
    return _validate(_apply_overrides(raw, overrides or []), origin)


def _apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        parts, value = _parse_override(text)
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(".".join(parts), f"{part!r} is not a section", "--set")
            node = child
        node[parts[-1]] = value
    return raw


def _validate(raw: dict[str, Any], origin: str | None) -> CrossRecConfig:
    try:
        return CrossRecConfig.model_validate(raw)
    except ValidationError as exc:
        raise _first_error(exc, origin) from None


def with_overrides(
    cfg: CrossRecConfig, overrides: list[str], origin: str = "--set"
) -> CrossRecConfig:
    """A copy of ``cfg`` with ``a.b=c`` overrides applied (validated like `load_config`)."""
    raw = cfg.model_dump(mode="json")
    return _validate(_apply_overrides(raw, overrides), origin)
