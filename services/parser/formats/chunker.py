"""Read a file forward in blocks of whole lines, tracking byte offsets for resume."""

from __future__ import annotations

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


class LineChunker:
    """Hands out blocks of about N complete lines; memory stays bounded by one block."""

    def __init__(self, f: BinaryIO, offset: int, bytes_per_line: float = 100.0) -> None:
        self._f = f
        self._buf = b""
        self._newlines = 0  # newlines in _buf
        self._offset = offset  # file offset of _buf[0]
        self._eof = False
        self._tail = 0  # bytes in _buf after its last newline (the unfinished line)
        self.bytes_per_line = max(bytes_per_line, 8.0)
        self.last_lines = 0  # newlines in the last handed-out block (its callers need it too)

    @property
    def offset(self) -> int:
        """File offset just after the last handed-out block."""
        return self._offset

    def next_block(self, n_lines: int) -> tuple[bytes, int, bool]:
        """(block, end_offset, at_eof); the block ends after a newline unless at EOF.

        A block holds `n_lines` lines, or fewer when they come to MAX_BLOCK_BYTES first
        (lines far longer than the estimate must not grow one block without bound).
        """
        pieces = [self._buf] if self._buf else []
        size = len(self._buf)
        while self._newlines < n_lines and not self._eof and size < MAX_BLOCK_BYTES:
            want = max(_MIN_READ, int((n_lines - self._newlines) * self.bytes_per_line * 1.05))
            piece = self._f.read(min(want, MAX_BLOCK_BYTES - size))
            if not piece:
                self._eof = True
                break
            self._newlines += piece.count(b"\n")
            last = piece.rfind(b"\n")
            self._tail = self._tail + len(piece) if last < 0 else len(piece) - last - 1
            if self._tail > MAX_LINE_BYTES:
                raise FormatError(
                    f"a line near byte {self._offset + size + len(piece) - self._tail} is longer "
                    f"than {MAX_LINE_BYTES >> 20} MiB: this is not a line-by-line text recording"
                )
            pieces.append(piece)  # joined once below: appending to bytes in the loop was quadratic
            size += len(piece)
        self._buf = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        # Exactly n newlines may still leave a partial line after the last one: cut there too.
        if self._newlines >= n_lines and self._newlines:
            cut = self._nth_newline(n_lines) + 1
            block, self._buf = self._buf[:cut], self._buf[cut:]
            self._newlines -= n_lines
            self.last_lines = n_lines
        elif not self._eof and self._newlines:  # MAX_BLOCK_BYTES reached: every whole line
            cut = len(self._buf) - self._tail
            block, self._buf = self._buf[:cut], self._buf[cut:]
            self.last_lines, self._newlines = self._newlines, 0
        else:
            block, self._buf, self.last_lines, self._tail = self._buf, b"", self._newlines, 0
            self._newlines = 0
        if n_lines and block:
            self.bytes_per_line = 0.8 * self.bytes_per_line + 0.2 * len(block) / max(1, self.last_lines)
        self._offset += len(block)
        return block, self._offset, self._eof and not self._buf

    def _nth_newline(self, n: int) -> int:
        surplus = self._newlines - n
        if surplus <= _RFIND_LIMIT:
            pos = len(self._buf)
            for _ in range(surplus + 1):
                pos = self._buf.rfind(b"\n", 0, pos)
            return pos
        marks = np.flatnonzero(np.frombuffer(self._buf, dtype=np.uint8) == 10)
        return int(marks[n - 1])
