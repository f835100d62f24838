"""A seekable, blocking file object over an object store, read by ranged GETs.

Readers (ZIP directories, `.gt3x`, `.cwa` resume) seek, so the object is read in
aligned blocks fetched with one ranged GET each. While a block is consumed sequentially
the next one is already being fetched (read-ahead), so a parser thread rarely waits for
the network; memory stays at two blocks. `fetch(start, end)` returns a future, which lets
the fetch run on another thread or event loop than the reader.
"""

from __future__ import annotations

import concurrent.futures
import io
from collections.abc import Callable
from concurrent.futures import Future

Fetch = Callable[[int, int], "Future[bytes]"]

BLOCK = 8 * 1024 * 1024


class RangedReader(io.RawIOBase):
    """Reads `size` bytes of one object through `fetch`, with one block of read-ahead."""

    def __init__(self, fetch: Fetch, size: int, *, block: int = BLOCK, name: str = "") -> None:
        super().__init__()
        self._fetch = fetch
        self._size = size
        self._block = block
        self._pos = 0
        self._blocks: dict[int, Future[bytes]] = {}
        self._last = -1  # reading from the start counts as sequential
        self.name = name
        self.requests = 0  # ranged GETs issued (for tests and benchmarks)
        self.timeout: float | None = 300.0  # a block's GET retries inside the client; this bounds it all

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def size(self) -> int:
        """The object's size (a reader of a growing upload knows it only at the end)."""
        return self._size

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size() + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def _get(self, index: int) -> Future[bytes]:
        future = self._blocks.get(index)
        if future is None:
            start = index * self._block
            future = self._fetch(start, min(self.size(), start + self._block))
            self.requests += 1
            self._blocks[index] = future
        return future

    def _block_at(self, index: int) -> bytes:
        sequential = index in (self._last, self._last + 1)
        self._last = index
        # Keep this block and the next; drop the rest (bounded memory).
        for old in [i for i in self._blocks if i not in (index, index + 1)]:
            self._blocks.pop(old).cancel()
        current = self._get(index)
        if sequential and (index + 1) * self._block < self.size():
            self._get(index + 1)
        try:
            return current.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError as exc:
            # The loop that fetches is gone or stuck: never leave a parser thread waiting forever.
            current.cancel()
            self._blocks.pop(index, None)
            raise TimeoutError(
                f"no answer for bytes {index * self._block}+ of {self.name} within {self.timeout}s"
            ) from exc

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("read of a closed reader")
        total = self.size()
        end = total if size is None or size < 0 else min(total, self._pos + size)
        parts: list[memoryview] = []  # views into the blocks: the join below is the one copy
        while self._pos < end:
            index = self._pos // self._block
            data = memoryview(self._block_at(index))
            at = self._pos - index * self._block
            piece = data[at : at + (end - self._pos)]
            if not piece:
                break  # the object is shorter than it said
            parts.append(piece)
            self._pos += len(piece)
        return b"".join(parts)

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        for future in self._blocks.values():
            future.cancel()
        self._blocks.clear()
        super().close()
