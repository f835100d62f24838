"""Read a file forward in blocks of whole lines, tracking byte offsets for resume.

While the caller parses a block, the file's next read runs on a thread (one read ahead,
so memory stays at two blocks): the kernel copy, the zero-fill and the page faults of the
next block's buffer then overlap pyarrow's parse instead of preceding it, as pyarrow's own
reader does with its I/O thread. Blocks are cut by line counts alone, so they are the
same whatever the reads; only the too-long-line guard looks at how much is buffered.
"""

from __future__ import annotations

import threading
from typing import BinaryIO

import numpy as np

from services.parser.formats.base import FormatError

_MIN_READ = 64 * 1024
# No real IMU text row comes near this; a longer "line" (a binary file, a file with no
# newlines at all) would otherwise be buffered whole, however large the upload.
MAX_LINE_BYTES = 1 << 20
# A block of lines never holds more than this, however many lines were asked for.
MAX_BLOCK_BYTES = 64 << 20
# Past this many surplus lines, one numpy pass beats walking back with rfind.
_RFIND_LIMIT = 8192
# Newlines are counted this many bytes at a time: the comparison's temporary stays small.
_COUNT_SLICE = 1 << 20
# Off only where instructions are counted (benchmarks.tracking_overhead under callgrind):
# a second thread's GIL hand-offs make a run's count vary by millions.
READ_AHEAD = True


def count_newlines(data: bytes | bytearray, start: int = 0) -> int:
    """How many b"\n" bytes `data[start:]` holds.

    numpy's vectorised compare-and-count runs ~10x faster than `bytes.count` (a byte at
    a time), and this count is a pass over every byte of the file.
    """
    view = np.frombuffer(data, dtype=np.uint8, offset=start)
    return sum(
        int(np.count_nonzero(view[i : i + _COUNT_SLICE] == 10)) for i in range(0, view.size, _COUNT_SLICE)
    )


class LineChunker:
    """Hands out blocks of about N complete lines; memory stays bounded by one block."""

    def __init__(self, f: BinaryIO, offset: int, bytes_per_line: float = 100.0) -> None:
        self._f = f
        self._buf: bytes | bytearray = b""
        self._newlines = 0  # newlines in _buf
        self._offset = offset  # file offset of _buf[0]
        self._eof = False
        self._tail = 0  # bytes in _buf after its last newline (the unfinished line)
        self.bytes_per_line = max(bytes_per_line, 8.0)
        self.last_lines = 0  # newlines in the last handed-out block (its callers need it too)
        self._ahead: _ReadAhead | None = None  # the next read, running on a thread

    @property
    def offset(self) -> int:
        """File offset just after the last handed-out block."""
        return self._offset

    def next_block(self, n_lines: int) -> tuple[bytes | bytearray, int, bool]:
        """(block, end_offset, at_eof); the block ends after a newline unless at EOF.

        A block holds `n_lines` lines, or fewer when they come to MAX_BLOCK_BYTES first
        (lines far longer than the estimate must not grow one block without bound).
        The file is read straight into the block's own buffer and only the bytes after
        the cut are copied out: one copy of the data instead of three (read, join, slice).
        """
        buf: bytes | bytearray = self._buf
        while self._newlines < n_lines and not self._eof and len(buf) < MAX_BLOCK_BYTES:
            have = len(buf)
            if self._ahead is not None:
                buf, self._ahead = self._ahead.result(buf), None
            else:
                buf = self._read_after(buf, self._want(n_lines, have))
            if len(buf) == have:
                self._eof = True
                break
            self._newlines += count_newlines(buf, have)
            last = buf.rfind(b"\n", have)
            self._tail = self._tail + len(buf) - have if last < 0 else len(buf) - last - 1
            if self._tail > MAX_LINE_BYTES:
                raise FormatError(
                    f"a line near byte {self._offset + len(buf) - self._tail} is longer "
                    f"than {MAX_LINE_BYTES >> 20} MiB: this is not a line-by-line text recording"
                )
        self._buf = buf
        # Exactly n newlines may still leave a partial line after the last one: cut there too.
        if self._newlines >= n_lines and self._newlines:
            block = self._cut(self._nth_newline(n_lines) + 1)
            self._newlines -= n_lines
            self.last_lines = n_lines
        elif not self._eof and self._newlines:  # MAX_BLOCK_BYTES reached: every whole line
            block = self._cut(len(self._buf) - self._tail)
            self.last_lines, self._newlines = self._newlines, 0
        else:
            block, self._buf, self.last_lines, self._tail = self._buf, b"", self._newlines, 0
            self._newlines = 0
        if n_lines and block:
            self.bytes_per_line = 0.8 * self.bytes_per_line + 0.2 * len(block) / max(1, self.last_lines)
        self._offset += len(block)
        if READ_AHEAD and not self._eof and self._ahead is None and self._newlines < n_lines:
            # What the next call's first read will be if it asks for as many lines.
            self._ahead = _ReadAhead(self._f, len(self._buf), self._want(n_lines, len(self._buf)))
        return block, self._offset, self._eof and not self._buf

    def _want(self, n_lines: int, have: int) -> int:
        """How many bytes to read for `n_lines` lines after the `have` buffered."""
        want = max(_MIN_READ, int((n_lines - self._newlines) * self.bytes_per_line * 1.05))
        return min(want, MAX_BLOCK_BYTES - have)

    def _read_after(self, buf: bytes | bytearray, want: int) -> bytearray:
        """`buf` followed by up to `want` more bytes of the file, as one bytearray."""
        readinto = getattr(self._f, "readinto", None)
        if isinstance(buf, bytearray) or readinto is None:  # a second read: rare
            out = buf if isinstance(buf, bytearray) else bytearray(buf)
            out += self._f.read(want)
            return out
        out = bytearray(len(buf) + want)
        out[: len(buf)] = buf
        with memoryview(out) as view:
            got = readinto(view[len(buf) :]) or 0
        del out[len(buf) + got :]  # a short read (the end of the file)
        return out

    def _cut(self, cut: int) -> bytes | bytearray:
        """Hand out `_buf[:cut]`, keeping the rest; a bytearray is truncated in place."""
        buf = self._buf
        if isinstance(buf, bytearray):
            self._buf = bytes(buf[cut:])
            del buf[cut:]
            return buf
        block, self._buf = buf[:cut], buf[cut:]
        return block

    def _nth_newline(self, n: int) -> int:
        surplus = self._newlines - n
        # The n-th newline is `surplus` newlines from the end: find it in a vectorised
        # pass over a tail of about twice the bytes those lines should take.
        tail = min(len(self._buf), int((surplus + 1) * self.bytes_per_line * 2) + 4096)
        marks = np.flatnonzero(np.frombuffer(self._buf, dtype=np.uint8, offset=len(self._buf) - tail) == 10)
        if marks.size > surplus:
            return len(self._buf) - tail + int(marks[-(surplus + 1)])
        if surplus <= _RFIND_LIMIT:
            pos = len(self._buf)
            for _ in range(surplus + 1):
                pos = self._buf.rfind(b"\n", 0, pos)
            return pos
        marks = np.flatnonzero(np.frombuffer(self._buf, dtype=np.uint8) == 10)
        return int(marks[n - 1])


class _ReadAhead:
    """One read of `want` bytes on a thread, into a new buffer with `reserve` bytes of room
    in front for what the chunker still holds then (a suffix of it by the time it is used:
    blocks are only cut off the front)."""

    def __init__(self, f: BinaryIO, reserve: int, want: int) -> None:
        self._reserve = reserve
        self._out = bytearray()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._read, args=(f, want), name="chunker-read-ahead", daemon=True
        )
        self._thread.start()

    def _read(self, f: BinaryIO, want: int) -> None:
        try:
            readinto = getattr(f, "readinto", None)
            if readinto is None:
                self._out = bytearray(self._reserve) + f.read(want)
                return
            out = bytearray(self._reserve + want)
            with memoryview(out) as view:
                got = readinto(view[self._reserve :]) or 0
            del out[self._reserve + got :]  # a short read (the end of the file)
            self._out = out
        except BaseException as exc:  # raised again where the read is used
            self._error = exc

    def result(self, buf: bytes | bytearray) -> bytearray:
        """`buf` (what the chunker holds now) followed by the bytes read."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        out, start = self._out, self._reserve - len(buf)
        if start < 0:  # cannot happen (blocks are cut off the front); stay correct anyway
            return bytearray(buf) + out[self._reserve :]
        out[start : self._reserve] = buf
        del out[:start]  # O(1): a bytearray drops its front by moving its start
        return out
