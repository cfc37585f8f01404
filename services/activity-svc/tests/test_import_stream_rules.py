"""The rules of an import's byte stream, without HTTP or a database: gzip is inflated in
bounded pieces, and every line is checked wherever the chunks of the body fall."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Sequence

import pytest

from activity_svc.ingestion.staging import (
    PIECE_BYTES,
    ImportLimits,
    LimitExceeded,
    bounded,
    gunzip,
)


async def _stream(chunks: Sequence[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def test_a_gzip_bomb_is_inflated_in_bounded_pieces() -> None:
    expanded = 64 * 1_048_576
    bomb = gzip.compress(bytes(expanded))
    sizes = [len(piece) async for piece in gunzip(_stream([bomb]))]
    assert max(sizes) <= PIECE_BYTES
    assert sum(sizes) == expanded


def _chunked(body: bytes, every: int) -> list[bytes]:
    return [body[at : at + every] for at in range(0, len(body), every)] or [b""]


@pytest.mark.parametrize("every", [1, 2, 3, 7, 10, 1000])
@pytest.mark.parametrize("long_line", [1, 2, 5])
async def test_the_first_line_longer_than_the_limit_is_named_wherever_the_chunks_fall(
    every: int, long_line: int
) -> None:
    lines = [b"x" * 8, b"", b"y" * 7, b"z", b"w" * 8]
    lines[long_line - 1] = b"q" * 9
    limits = ImportLimits(max_bytes=1000, max_rows=100, max_line_bytes=8)
    with pytest.raises(LimitExceeded) as refused:
        async for _ in bounded(_stream(_chunked(b"\n".join(lines), every)), limits, 0):
            pass
    assert (refused.value.field, refused.value.line) == ("line", long_line)


@pytest.mark.parametrize("every", [1, 4, 1000])
@pytest.mark.parametrize(
    ("body", "header", "refused"),
    [
        (b"h\na\nb\n", 1, False),
        (b"h\na\nb", 1, False),
        (b"h\na\nb\nc", 1, True),
        (b"a\nb\n", 0, False),
        (b"a\nb\nc\n", 0, True),
    ],
)
async def test_rows_beyond_the_limit_are_refused(
    every: int, body: bytes, header: int, refused: bool
) -> None:
    limits = ImportLimits(max_bytes=1000, max_rows=2, max_line_bytes=8)
    try:
        async for _ in bounded(_stream(_chunked(body, every)), limits, header):
            pass
    except LimitExceeded as exc:
        assert refused and exc.field == "rows"
    else:
        assert not refused
