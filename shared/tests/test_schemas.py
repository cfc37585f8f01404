"""The base request models: PATCH bodies tell an absent field from a null one."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from pydantic.json_schema import SkipJsonSchema

from ght_shared.schemas import PatchModel


class NoteUpdate(PatchModel):
    NULLABLE = frozenset({"comment"})

    title: str | SkipJsonSchema[None] = None
    comment: str | None = None


def test_a_field_left_out_of_a_patch_is_not_set() -> None:
    assert NoteUpdate.model_validate({}).model_fields_set == set()


def test_null_clears_a_field_declared_nullable() -> None:
    update = NoteUpdate.model_validate({"comment": None})

    assert update.model_dump(exclude_unset=True) == {"comment": None}


def test_null_for_any_other_field_is_refused_naming_the_field_and_the_rule() -> None:
    with pytest.raises(ValidationError) as caught:
        NoteUpdate.model_validate({"title": None})

    [error] = caught.value.errors()
    assert (error["loc"], error["type"]) == (("title",), "not_nullable")
    assert error["msg"] == "title may not be null: leave it out to keep its value"
    assert "anyOf" not in NoteUpdate.model_json_schema()["properties"]["title"]
