"""Base request/response models: unknown fields are rejected, not silently dropped."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError


class StrictModel(BaseModel):
    """Base of request bodies: an unknown field is a 422 naming it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PatchModel(StrictModel):
    """Base of PATCH bodies: a field left out keeps its value; ``null`` clears a field only
    where the model lists it in :attr:`NULLABLE`, and is a 422 naming the field (rule
    ``not_nullable``) anywhere else.

    Declare the other optional fields ``X | SkipJsonSchema[None] = None``: absent is
    allowed, null is not, and the OpenAPI document says so.
    """

    NULLABLE: ClassVar[frozenset[str]] = frozenset()
    """The fields a ``null`` clears."""

    # Field validators do not run on defaults: this sees only the values the client sent.
    @field_validator("*", mode="after")
    @classmethod
    def _null_only_where_nullable(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.field_name not in cls.NULLABLE:
            raise PydanticCustomError(
                "not_nullable",
                "{field} may not be null: leave it out to keep its value",
                {"field": info.field_name},
            )
        return value


class ReadModel(BaseModel):
    """Base of responses, built from ORM objects."""

    model_config = ConfigDict(from_attributes=True)
