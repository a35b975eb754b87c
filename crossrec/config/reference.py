"""The Markdown reference of every configuration field (`crossrec config reference`, embedded in
the README)."""

from __future__ import annotations

import json
import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from crossrec.config.schema import CrossRecConfig


# --------------------------------------------------------------------------- reference
def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Literal:
        return " \\| ".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default_text(info: Any) -> str:
    if info.default_factory is not None:
        value = info.default_factory()
    else:
        value = info.default
    if isinstance(value, BaseModel):
        return ""
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    text = json.dumps(value) if isinstance(value, list | dict | bool) else repr(value)
    return f"`{text}`".replace("|", "\\|")


def config_reference() -> str:
    """The configuration reference as Markdown (one table per section), generated from the
    config models: every field with its type, default and description. The README embeds it."""
    out: list[str] = []

    def rows(model: type[BaseModel], prefix: str) -> list[str]:
        lines = []
        for name, info in model.model_fields.items():
            sub = next(
                (
                    t
                    for t in (info.annotation, *get_args(info.annotation))
                    if isinstance(t, type) and issubclass(t, BaseModel)
                ),
                None,
            )
            if sub is not None and info.default_factory is not None:
                lines += rows(sub, f"{prefix}{name}.")
                continue
            kind = sub.__name__ if sub is not None else _type_name(info.annotation)
            if sub is not None:
                kind += " or null"
            desc = (info.description or "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{prefix}{name}` | {kind} | {_default_text(info)} | {desc} |")
        return lines

    for section, info in CrossRecConfig.model_fields.items():
        model = info.annotation
        assert isinstance(model, type)
        assert issubclass(model, BaseModel)
        doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        out += [
            f"#### `{section}`",
            "",
            doc,
            "",
            "| field | type | default | meaning |",
            "|---|---|---|---|",
            *rows(model, f"{section}."),
            "",
        ]
    return "\n".join(out).rstrip() + "\n"
