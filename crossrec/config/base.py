"""The base of every configuration section and the one list of data-format names."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict

DataFormat = Literal["synthetic", "movielens", "amazon", "llmcdsr", "recbole", "table"]
# The one list of data-format names (the loaders register the same names; a test checks).
DATA_FORMATS: tuple[str, ...] = get_args(DataFormat)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
