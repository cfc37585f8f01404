"""The one cursor codec and page model of every list."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum

import orjson
import pytest

from ght_shared.errors import InvalidInput
from ght_shared.pagination import Page, decode_cursor, encode_cursor

MOMENT = datetime(2026, 11, 30, 8, 15, 3, 250_000, tzinfo=UTC)
ID = uuid.UUID("0193f6c2-0000-7000-8000-000000000001")


def _forge(*key: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode().rstrip("=")


class _Kind(StrEnum):
    STAY = "stay"


def test_a_key_of_every_supported_type_comes_back_as_it_went() -> None:
    key = ("CHU-IMG", 2026, ID, date(2026, 3, 1), MOMENT, _Kind.STAY)
    cursor = encode_cursor(*key)
    found = decode_cursor(cursor, str, int, uuid.UUID, date, datetime, _Kind)
    assert found == key and found[-1] is _Kind.STAY


def test_a_cursor_is_url_safe_and_unpadded() -> None:
    cursor = encode_cursor("é/?&=", 1)
    assert set(cursor) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_a_date_time_written_without_offset_is_read_as_utc() -> None:
    (moment,) = decode_cursor(_forge("2026-11-30T08:15:03"), datetime)
    assert moment == datetime(2026, 11, 30, 8, 15, 3, tzinfo=UTC)


@pytest.mark.parametrize(
    ("cursor", "types"),
    [
        ("not-a-cursor", (str,)),
        ("AA", (str,)),
        ("!!!", (str,)),
        (_forge("a", "b"), (str,)),  # wrong arity
        (_forge("a"), (str, str)),
        (_forge(3), (str,)),  # wrong type
        (_forge("3"), (int,)),
        (_forge(True), (int,)),  # a boolean is not an integer
        (_forge("not-a-uuid"), (uuid.UUID,)),
        (_forge("yesterday"), (datetime,)),
        (_forge("2026-02-30"), (date,)),
        (_forge("sejour"), (_Kind,)),  # not one of the enum's values
        (_forge("a\x00b"), (str,)),  # PostgreSQL text holds no NUL
        (base64.urlsafe_b64encode(b'["\\ud800"]').decode(), (str,)),  # a lone surrogate
        (_forge({"code": "x"}), (str,)),
    ],
)
def test_anything_but_a_cursor_of_these_types_is_one_422_naming_the_cursor(
    cursor: str, types: tuple[type, ...]
) -> None:
    with pytest.raises(InvalidInput) as refused:
        decode_cursor(cursor, *types)
    assert refused.value.status == 422
    assert refused.value.extra["errors"] == [
        {
            "field": "cursor",
            "rule": "cursor",
            "message": "The cursor is not one this list gave: pass next_cursor as it came.",
        }
    ]


@dataclass
class _Row:
    code: str
    rank: int


def test_a_page_of_limit_plus_one_rows_shows_limit_and_the_cursor_of_its_last() -> None:
    rows = [_Row("a", 1), _Row("b", 2), _Row("c", 3)]
    page = Page.of(rows, 2, key=lambda r: (r.code, r.rank), read=lambda r: r.code)
    assert page.items == ["a", "b"]
    assert page.next_cursor is not None
    assert decode_cursor(page.next_cursor, str, int) == ("b", 2)


@pytest.mark.parametrize("count", [0, 1, 2])
def test_the_last_page_has_no_cursor(count: int) -> None:
    rows = [_Row(str(n), n) for n in range(count)]
    page = Page.of(rows, 2, key=lambda r: (r.code,), read=lambda r: r.rank)
    assert page.items == list(range(count))
    assert page.next_cursor is None


def test_a_page_reads_as_items_and_next_cursor() -> None:
    assert Page[int](items=[1], next_cursor=None).model_dump() == {
        "items": [1],
        "next_cursor": None,
    }
