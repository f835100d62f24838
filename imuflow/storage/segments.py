"""An S3 upload stored as segments: readable while it is still being received.

A multipart object cannot be read before it is completed, and S3 offers no GET of an
uploaded part. So a large `POST /api/files` body (services/ingest/early.py) is stored as
segments instead of a multipart upload: each 8 MiB part is an object of its own,
`<key>.seg.<n>` (bytes n x PART to (n + 1) x PART; the last one shorter), and once the last
byte is stored a small manifest is put at `<key>` itself. Each byte is written once (the
first design stored every part twice, as a multipart part and as a segment, which doubled
the store's CPU while the body streamed: docs/scaling.md).

* Readers: `S3Storage.open` sees the manifest in the object's metadata (one HEAD, as for
  any object) and reads the bytes from the segments, so reparse, retry, export and the
  ZIP split read a segmented upload like any other; delete removes `<key>` and every
  `<key>.seg.*`. The manifest's body says in JSON what it is, for an operator who fetches
  `<key>` with another S3 client.
* While the upload streams the parser reads through a `SegmentReader`: block n is
  segment n by one GET, the next block is fetched while this one is parsed (read-ahead, as
  for any S3 object), and a missing segment is waited for, like the bytes of a growing
  local file.

Segment names are flat (`.seg.<n>`, no `/`): SeaweedFS would keep an empty directory
per upload otherwise.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from imuflow.storage.base import StorageError
from imuflow.storage.reader import Fetch, RangedReader

POLL = 0.1  # seconds between looks for a segment not stored yet (one arrives every 0.3 s at 25 MB/s)
_SEGMENT = re.compile(r"^(?P<name>[^/]+)\.seg\.(?P<n>\d+)$")
# The manifest's metadata (S3 user metadata: `x-amz-meta-*`, given back by every HEAD).
SEGMENTS, SIZE, PART_SIZE = "imuflow-segments", "imuflow-size", "imuflow-part"


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


@dataclass(frozen=True)
class Layout:
    """How an object's bytes are stored: in itself, or in `segments` of `part` bytes."""

    size: int
    segments: int | None = None
    part: int = 0

    def pieces(self, start: int, end: int) -> list[tuple[int, int, int]]:
        """(segment, from, to) byte ranges within the segments that hold `start`..`end`."""
        assert self.segments is not None and self.part > 0
        end = min(end, self.size)
        out = []
        while start < end:
            index, at = divmod(start, self.part)
            take = min(end - start, self.part - at)
            out.append((index, at, at + take))
            start += take
        return out


def manifest(count: int, size: int, part: int) -> tuple[bytes, dict[str, str]]:
    """The manifest of `count` segments of `part` bytes holding `size` bytes: body, metadata."""
    body = {
        "imuflow": "an upload stored as segments",
        "size": size,
        "segments": count,
        "part": part,
        "keys": f"<this key>.seg.0 .. .seg.{count - 1}",
    }
    meta = {SEGMENTS: str(count), SIZE: str(size), PART_SIZE: str(part)}
    return json.dumps(body).encode(), meta


def layout_of(length: int, metadata: Mapping[str, str]) -> Layout:
    """The layout from a HEAD's length and user metadata."""
    if SEGMENTS not in metadata:
        return Layout(length)
    return Layout(int(metadata[SIZE]), int(metadata[SEGMENTS]), int(metadata[PART_SIZE]))


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
        last segment, before the record says the upload ended) waits for that end, so the
        job never sees its EOF (and completes) while the record is still receiving."""
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
