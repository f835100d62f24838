"""Where uploads go: one object per upload in the configured storage, named by its id only.

The user's filename is never part of a path; it is kept for display after sanitising.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from uuid import UUID

from imuflow.storage import ObjectWriter, Storage

MAX_FILENAME = 200
_UNSAFE = re.compile(r"[\x00-\x1f\x7f<>:\"|?*]")


def sanitize_filename(raw: str | None) -> str:
    """A display name: last path component, no control or shell-hostile characters."""
    name = unicodedata.normalize("NFC", raw or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", name).strip(" .")
    if len(name) > MAX_FILENAME:
        stem, dot, ext = name.rpartition(".")
        ext = ext[:20] if dot else ""
        name = (stem if dot else name)[: MAX_FILENAME - len(ext) - 1] + (f".{ext}" if ext else "")
    return name or "upload"


class UploadSink:
    """Streams one upload into storage as object `<file id>`, hashing and counting as it goes.

    `write` (called by the multipart parser, synchronously) only counts, hashes and queues
    the chunk; `drain` hands the queue to the store's writer, which sends a part whenever
    one is full and waits while its limit of parts is stored (S3: two parts in flight;
    local disk: a write to the page cache), so memory stays constant however big the
    upload. `discard` aborts an unfinished upload or deletes a stored one.
    """

    def __init__(self, storage: Storage, writer: ObjectWriter, file_id: UUID, max_bytes: int) -> None:
        self.storage = storage
        self.file_id = file_id
        self.uri = storage.uri(str(file_id))
        self.max_bytes = max_bytes
        self.size = 0
        self.too_large = False
        self.first_bytes = b""
        self._sha = hashlib.sha256()
        self._writer = writer
        self._pending: list[bytes] = []
        self._committed = False

    @classmethod
    async def open(cls, storage: Storage, file_id: UUID, max_bytes: int) -> UploadSink:
        """A sink writing the object named by `file_id`."""
        return cls(storage, await storage.create(str(file_id)), file_id, max_bytes)

    def write(self, chunk: bytes) -> None:
        """Queue a chunk, unless the upload already exceeded the limit."""
        if self.too_large:
            return
        self.size += len(chunk)
        if self.size > self.max_bytes:
            self.too_large = True
            self._pending.clear()
            return
        if len(self.first_bytes) < 4096:
            self.first_bytes += chunk[: 4096 - len(self.first_bytes)]
        self._sha.update(chunk)
        self._pending.append(chunk)

    async def drain(self) -> None:
        """Pass queued chunks to the store (waits while the store has its limit of parts in flight)."""
        while self._pending:
            await self._writer.write(self._pending.pop(0))

    def readable_while_writing(self) -> bool:
        """Make the bytes readable before `finish` (for a parse that overlaps the upload).

        A local file is read as it grows; an S3 writer stores the upload as segments
        (imuflow/storage/segments.py), which only one that has not sent a part yet can.
        """
        keep_segments = getattr(self._writer, "keep_segments", None)
        return True if keep_segments is None else bool(keep_segments())

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    async def finish(self) -> str:
        """Make the upload durable and visible under its final name; its storage URI."""
        await self.drain()
        await self._writer.commit()
        self._committed = True
        return self.uri

    async def discard(self) -> None:
        """Remove whatever was written (failed, rejected or duplicate upload)."""
        self._pending.clear()
        if self._committed:
            await self.storage.delete([self.uri])
        else:
            await self._writer.abort()
