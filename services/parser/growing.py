"""A blocking reader of an upload that is still being received (local storage).

Ingest records a large upload at its first bytes (services/ingest/early.py: a `POST
/api/files` body, written to `<id>.part`, or a resumable upload, written to `<id>.tus`),
both renamed to `<id>` after the last byte. The parser reads it while it grows: at the
current end a read waits until more bytes arrive, the upload is finished (then the real end
is `UploadEnd.size`, read from its record) or it stopped (the read raises UploadStopped).
No byte for `pause_after` seconds raises UploadPaused: the job gives its slot back and is
queued again by the next bytes (services/parser/upload_follower.py). Its open descriptor
survives the rename, and a redelivered job opens whichever name exists, resuming at its
checkpoint like any other.

Until the end is known, the file's size is the declared estimate ingest recorded (an upper
bound: the body's Content-Length minus what came before the file part), so progress is
measured against it and never goes backwards; `sample_count` is an estimate until the end.
"""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path
from typing import BinaryIO

from imuflow.storage.segments import UploadStopped

__all__ = ["GrowingFile", "UploadEnd", "UploadPaused", "UploadStopped", "open_growing"]

POLL = 0.02  # seconds between looks at the file's size while waiting for bytes


PARTIAL_SUFFIXES = (".part", ".tus")  # POST /api/files, resumable (tus) uploads


class UploadPaused(Exception):
    """No byte arrived for a while: the client paused (a tus upload continues later)."""


class UploadEnd:
    """What the job's watcher learned of the upload (set from the event loop, read in the thread)."""

    def __init__(self) -> None:
        self.size: int | None = None  # the real size, once the last byte is stored
        self.stopped: str | None = None
        self._changed = threading.Event()

    def finish(self, size: int) -> None:
        self.size = size
        self._changed.set()

    def stop(self, why: str) -> None:
        if self.size is None and self.stopped is None:
            self.stopped = why
        self._changed.set()

    def wait(self, timeout: float) -> None:
        self._changed.wait(timeout)

    def wait_finished(self) -> int:
        """Block until the upload is finished (its size) or stopped (UploadStopped)."""
        while self.size is None:
            if self.stopped is not None:
                raise UploadStopped(self.stopped)
            self._changed.wait(1.0)
        return self.size


def open_growing(
    path: Path, estimate: int, end: UploadEnd, pause_after: float = float("inf")
) -> GrowingFile | None:
    """The upload being received at `path` (its partial file, else the finished one); None if none."""
    for candidate in (*(path.with_name(path.name + s) for s in PARTIAL_SUFFIXES), path):
        try:
            return GrowingFile(open(candidate, "rb", buffering=0), estimate, end, pause_after)
        except FileNotFoundError:
            continue
    return None


class GrowingFile(io.RawIOBase):
    """Reads a file another process is appending to, up to the upload's real end."""

    def __init__(self, f: BinaryIO, estimate: int, end: UploadEnd, pause_after: float = float("inf")) -> None:
        super().__init__()
        self._f = f
        self._estimate = estimate
        self._end = end
        self._pos = 0
        self._pause_after = pause_after
        self._last_byte = time.monotonic()  # when a read last got bytes (or the file was opened)
        self.name = getattr(f, "name", "")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def size(self) -> int:
        """The real size once known, else the declared estimate."""
        return self._end.size if self._end.size is not None else self._estimate

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size()}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        """At least one byte, waiting for it if the upload is not there yet; 0 at the real end."""
        want = len(buffer)
        if want == 0:
            return 0
        while True:
            end = self._end.size
            if end is not None:
                want = min(want, max(end - self._pos, 0))
                if want == 0:
                    return 0
            got = os.preadv(self._f.fileno(), [memoryview(buffer)[:want]], self._pos) if want else 0
            if got:
                self._pos += got
                self._last_byte = time.monotonic()
                return got
            if end is not None:  # finished, yet shorter than its record says
                raise UploadStopped(f"the upload holds {self._pos:,} bytes, not {end:,}")
            if self._end.stopped is not None:
                raise UploadStopped(self._end.stopped)
            if time.monotonic() - self._last_byte > self._pause_after:
                raise UploadPaused(f"no byte for {self._pause_after:g} s at {self._pos:,}")
            self._end.wait(POLL)

    def read(self, size: int = -1) -> bytes:
        """`size` bytes (fewer only at the real end): readers sniffing a head count on it."""
        if size is None or size < 0:
            size = max(self.size() - self._pos, 0)
        out = bytearray()
        while len(out) < size:
            chunk = bytearray(size - len(out))
            got = self.readinto(chunk)
            if not got:
                break
            out += chunk[:got]
        return bytes(out)

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()
