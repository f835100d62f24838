"""An S3 upload read while it is still being received: its parts, also stored as segments.

A multipart object cannot be read before it is completed, and S3 offers no GET of an
uploaded part. So while a large `POST /api/files` body streams (services/ingest/early.py),
each full 8 MiB part is also stored as an object of its own, `<key>.seg.<n>` (bytes
n x PART to (n + 1) x PART), beside the part. The parser reads through a `SegmentReader`:
block n is segment n by one GET, the next block is fetched while this one is parsed
(read-ahead, as for any S3 object), and a missing segment is waited for, like the bytes of
a growing local file. Once the record says the upload ended (its real size), the final
object is read instead: it is complete by then, and its segments may already be deleted.
The last, shorter part is never a segment: it is read from the final object.

Segment names are flat (`.seg.<n>`, no `/`): SeaweedFS would keep an empty directory
per upload otherwise.
"""

from __future__ import annotations

import re
import time
from typing import Protocol

from imuflow.storage.base import StorageError
from imuflow.storage.reader import Fetch, RangedReader

POLL = 0.1  # seconds between looks for a segment not stored yet (one arrives every 0.3 s at 25 MB/s)
_SEGMENT = re.compile(r"^(?P<name>[^/]+)\.seg\.(?P<n>\d+)$")


class UploadStopped(StorageError):
    """The upload ended without its last byte, or the job was taken away meanwhile."""


class UploadState(Protocol):
    """What the reader's job knows of the upload (services/parser/growing.UploadEnd)."""

    size: int | None  # the real size, once the last byte is stored
    stopped: str | None  # why the upload (or the job) stopped


def segment_key(key: str, index: int) -> str:
    """The key of segment `index` (0-based) of the object `key`."""
    return f"{key}.seg.{index}"


def segment_prefix(key: str) -> str:
    """The prefix every segment of `key` starts with (for listing them)."""
    return f"{key}.seg."


def segment_owner(name: str) -> str | None:
    """The object name a segment object's name belongs to (`<id>.seg.3` -> `<id>`), else None."""
    match = _SEGMENT.match(name)
    return match.group("name") if match else None


class SegmentReader(RangedReader):
    """A RangedReader whose size is the declared estimate until the upload's end is known.

    Its blocks are segments (`fetch` waits for one not stored yet): reads block like those
    of `GrowingFile` until the bytes exist, and return fewer bytes only at the real end.
    """

    def __init__(self, fetch: Fetch, estimate: int, upload: UploadState, *, block: int, name: str) -> None:
        super().__init__(fetch, estimate, block=block, name=name)
        self._upload = upload
        # A segment is waited for as long as the upload is receiving; a stale one is failed
        # by ingest's sweep within seconds and the job then stops its reader (upload.stopped).
        self.timeout = None

    def size(self) -> int:
        """The real size once known, else the declared estimate (an upper bound)."""
        return self._upload.size if self._upload.size is not None else self._size

    def read(self, size: int | None = -1) -> bytes:
        """`size` bytes, fewer only at the real end: a short read of what is stored (the
        completed object, before the record says the upload ended) waits for that end, so
        the job never sees its EOF (and completes) while the record is still receiving."""
        want = None if size is None or size < 0 else size
        data = super().read(size)
        if want is not None and len(data) >= want:
            return data
        end = self._wait_for_end()
        if self._pos < end:
            data += super().read(-1 if want is None else want - len(data))
            if self._pos < end and (want is None or len(data) < want):
                raise UploadStopped(f"the upload holds {self._pos:,} bytes, not {end:,}")
        return data

    def _wait_for_end(self) -> int:
        while self._upload.size is None:
            if self._upload.stopped is not None:
                raise UploadStopped(self._upload.stopped)
            time.sleep(POLL)
        return self._upload.size
