"""Base request/response models: unknown fields are rejected, not silently dropped."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Base of request bodies: an unknown field is a 422 naming it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ReadModel(BaseModel):
    """Base of responses, built from ORM objects."""

    model_config = ConfigDict(from_attributes=True)
