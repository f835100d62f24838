"""A text upload with an endless line is refused with a reason, in bounded memory."""

from __future__ import annotations

import io
import tracemalloc

import pytest

from services.parser.formats.base import FormatError, ReadOptions
from services.parser.formats.chunker import MAX_LINE_BYTES, LineChunker
from services.parser.formats.registry import make_reader

HUGE = 50 * 1024 * 1024


def test_chunker_refuses_a_line_longer_than_the_cap() -> None:
    data = b"1,2\n" * 10 + b"9" * (MAX_LINE_BYTES + 10)
    chunker = LineChunker(io.BytesIO(data), 0, 4.0)
    with pytest.raises(FormatError, match="longer than 1 MiB"):
        while chunker.next_block(1000)[0]:
            pass


def test_chunker_keeps_lines_just_under_the_cap() -> None:
    line = b"x" * (MAX_LINE_BYTES - 1) + b"\n"
    chunker = LineChunker(io.BytesIO(line * 3), 0, 10.0)
    blocks = [chunker.next_block(1)[0] for _ in range(3)]
    assert blocks == [line] * 3


def test_reader_fed_50_mb_without_a_newline_fails_in_bounded_memory() -> None:
    head = b"time,ax,ay,az\n" + b"".join(b"%d,1,2,3\n" % i for i in range(100))
    data = head + b"7" * HUGE  # one 50 MB "line", no newline anywhere
    reader = make_reader("generic_csv")
    reader.open(io.BytesIO(data), ReadOptions(filename="endless.csv"), None)
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match="not a line-by-line text recording"):
            for _ in reader.batches(lambda: 50_000):
                pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB while refusing a 50 MB line"
