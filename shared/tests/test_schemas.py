"""The base request models: PATCH bodies tell an absent field from a null one."""

from __future__ import annotations

import sys
import unicodedata

import pytest
from pydantic import ValidationError
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from ght_shared.schemas import UNPRINTABLE_RANGES, PatchModel, printable, printable_lines


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


def test_the_unprintable_ranges_are_this_python_s_control_format_and_surrogate_characters() -> None:
    expected = [
        code
        for code in range(sys.maxunicode + 1)
        if unicodedata.category(chr(code)) in ("Cc", "Cf", "Cs")
    ]

    written = [code for start, end in UNPRINTABLE_RANGES for code in range(start, end + 1)]

    assert written == expected


@pytest.mark.parametrize(
    "text", ["a\x00b", "a\rb", "\x1b[31m", "pay\u202egnp", "a\u200bb", "\ufeff"]
)
def test_a_control_or_format_character_is_refused_with_its_code_and_position(text: str) -> None:
    with pytest.raises(PydanticCustomError) as refused:
        printable(text)

    first = next(i for i, char in enumerate(text) if unicodedata.category(char) in ("Cc", "Cf"))
    assert refused.value.context == {"code": ord(text[first]), "position": first}


def test_accents_emoji_and_other_scripts_are_printable() -> None:
    text = "Hôpital Saint-Éloi, 病院 🏥 مستشفى"

    assert printable(text) == text


def test_a_text_of_several_lines_keeps_its_line_breaks_as_lf_and_nothing_else() -> None:
    assert printable_lines("Grève des manipulateurs\r\ndu 3 au 7.\rReprise le 10.") == (
        "Grève des manipulateurs\ndu 3 au 7.\nReprise le 10."
    )
    for text in ("a\n\x1b[31m", "line\n\u202eevil", "tab\there"):
        with pytest.raises(PydanticCustomError):
            printable_lines(text)
