"""Blocks of whole lines with exact resume offsets."""

from __future__ import annotations

import io
import threading

import pytest

from services.parser.formats import chunker as chunker_module
from services.parser.formats.chunker import LineChunker


def test_blocks_end_on_newlines_and_cover_the_file() -> None:
    data = b"".join(b"%d,%s\n" % (i, b"x" * (i % 13)) for i in range(5000)) + b"tail"
    chunker = LineChunker(io.BytesIO(data), 0, 3.0)
    pieces, offsets = [], []
    while True:
        block, end, eof = chunker.next_block(37)
        if not block:
            break
        pieces.append(block)
        offsets.append(end)
        assert block.endswith(b"\n") or eof
        assert block.count(b"\n") == 37 or eof
    assert b"".join(pieces) == data and offsets[-1] == len(data)


def test_large_surplus_uses_vectorised_cut() -> None:
    data = b"1\n" * 100_000
    chunker = LineChunker(io.BytesIO(data), 0, 1000.0)  # a bad estimate reads far too much
    block, end, _ = chunker.next_block(10)
    assert block == b"1\n" * 10 and end == 20
    assert chunker.next_block(5)[1] == 30


def test_exactly_n_newlines_never_hand_out_a_partial_line(monkeypatch: pytest.MonkeyPatch) -> None:
    # A read that ends inside a line after exactly n newlines used to return that partial line.
    monkeypatch.setattr(chunker_module, "_MIN_READ", 25)
    data = b"".join(b"%05d,1,2\n" % i for i in range(100))
    chunker = LineChunker(io.BytesIO(data), 0, 10.0)
    blocks = []
    while block := chunker.next_block(2)[0]:
        assert block.endswith(b"\n")
        blocks.append(block)
    assert b"".join(blocks) == data


def test_a_block_stops_at_max_block_bytes_when_lines_are_far_longer_than_estimated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(chunker_module, "MAX_BLOCK_BYTES", 256 * 1024)
    line = b"1," + b"9" * 10_000 + b"\n"
    data = line * 200  # ~2 MB; the estimate says 10 bytes a line
    chunker = LineChunker(io.BytesIO(data), 0, 10.0)
    pieces = []
    while True:
        block, _, eof = chunker.next_block(50_000)
        if not block:
            break
        assert len(block) <= 256 * 1024 and block.endswith(b"\n")
        assert chunker.last_lines == block.count(b"\n")
        pieces.append(block)
        if eof:
            break
    assert b"".join(pieces) == data and len(pieces) >= 8


class _ReadOnly:
    """A file object with `read` alone (no `readinto`), returning short reads."""

    def __init__(self, data: bytes) -> None:
        self._data, self._at = data, 0

    def read(self, n: int = -1) -> bytes:
        n = min(n, 1000)  # never more than 1000 bytes at a time
        piece = self._data[self._at : self._at + n]
        self._at += len(piece)
        return piece


def test_files_without_readinto_and_short_reads_give_the_same_blocks() -> None:
    data = b"".join(b"%d,%s\n" % (i, b"y" * (i % 7)) for i in range(3000)) + b"end"
    for f in (io.BytesIO(data), _ReadOnly(data)):
        chunker = LineChunker(f, 0, 5.0)  # type: ignore[arg-type]
        blocks = []
        while True:
            block, end, eof = chunker.next_block(250)
            if not block:
                break
            assert block.count(b"\n") == 250 or eof
            assert chunker.last_lines == block.count(b"\n")
            blocks.append(bytes(block))
            if eof:
                break
        assert b"".join(blocks) == data and end == len(data)


def test_count_newlines_across_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chunker_module, "_COUNT_SLICE", 7)
    data = b"a\nbb\n\n" * 11 + b"\n"
    assert chunker_module.count_newlines(data) == data.count(b"\n")
    assert chunker_module.count_newlines(bytearray(data), 5) == data[5:].count(b"\n")


class _Recording(io.BytesIO):
    """A file that notes which thread reads, and can fail from a given offset."""

    def __init__(self, data: bytes, fail_from: int | None = None) -> None:
        super().__init__(data)
        self.threads: list[str] = []
        self.fail_from = fail_from

    def readinto(self, buffer: object) -> int:
        self.threads.append(threading.current_thread().name)
        if self.fail_from is not None and self.tell() >= self.fail_from:
            raise OSError("the disk went away")
        return super().readinto(buffer)  # type: ignore[arg-type]


def test_the_next_read_runs_on_a_thread_and_blocks_stay_cut_by_line_counts() -> None:
    data = b"".join(b"%d,%s\n" % (i, b"z" * (i % 11)) for i in range(20_000))
    lines = data.splitlines(keepends=True)
    f = _Recording(data)
    chunker = LineChunker(f, 0, 4.0)
    at = 0
    for n in [10, 3000, 3000, 7, 1, 9000, 500, 50_000]:  # as an adaptive batch sizer asks
        block, end, _ = chunker.next_block(n)
        assert block == b"".join(lines[at : at + n]) and end == len(b"".join(lines[: at + n]))
        at += n
    assert chunker.next_block(10) == (b"", len(data), True)
    assert f.threads[0] == threading.current_thread().name  # the first read: nothing to overlap
    assert "chunker-read-ahead" in f.threads[1:]


def test_a_failed_read_ahead_is_raised_where_its_bytes_are_needed() -> None:
    data = b"1,2\n" * 100_000
    chunker = LineChunker(_Recording(data, fail_from=len(data) // 2), 0, 4.0)
    blocks = [bytes(chunker.next_block(1000)[0])]
    with pytest.raises(OSError, match="the disk went away"):
        while block := chunker.next_block(20_000)[0]:
            blocks.append(bytes(block))
    handed = b"".join(blocks)  # whole lines, in order, none after the failure
    assert data.startswith(handed) and chunker.offset == len(handed) < len(data)
