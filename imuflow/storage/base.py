"""The storage interface every service uses for uploads (SPEC §7 `IMUFLOW_STORAGE_URL`).

An upload is one object named by its file id under the storage URL (a local directory
or an S3 bucket and prefix); `storage_uri` in `imu_data_files` is that object's URI. A
user's filename is never part of a key. Writes stream (`ObjectWriter`: nothing is
visible before `commit`, and `abort` leaves nothing behind); reads go through a
seekable, blocking file object meant for a worker thread (readers are synchronous).
"""

from __future__ import annotations

import uuid
from typing import BinaryIO, Protocol


class StorageError(Exception):
    """The store failed or refused an operation (unreachable, no permission, ...)."""


class ObjectMissing(StorageError):
    """No object at that URI (deleted, or never stored)."""


class ObjectWriter(Protocol):
    """One object being written; visible only after `commit`."""

    async def write(self, data: bytes) -> None:
        """Append bytes (may wait while a part is uploaded: one part in flight)."""

    async def commit(self) -> None:
        """Make the object durable and visible under its key."""

    async def abort(self) -> None:
        """Discard what was written; idempotent, and a no-op after `commit`."""


class Storage(Protocol):
    """Where uploads live: a local directory (`file://`) or an S3 bucket (`s3://`)."""

    url: str

    def uri(self, key: str) -> str:
        """The `storage_uri` of the object named `key`."""

    def owns(self, uri: str) -> bool:
        """True when `uri` names an object of this store."""

    async def create(self, key: str) -> ObjectWriter:
        """Start writing the object named `key`."""

    async def open(self, uri: str) -> BinaryIO:
        """A seekable, blocking reader of the object (ObjectMissing); read it in a thread."""

    async def exists(self, uri: str) -> bool:
        """True when the object is stored."""

    async def delete(self, uris: list[str]) -> None:
        """Remove these objects (missing ones are fine); only keys that are file ids."""

    async def sweep(self, older_than: float) -> int:
        """Remove unfinished uploads started more than `older_than` seconds ago (a writer
        that was killed could not abort its own); how many."""

    async def check(self) -> str | None:
        """None when the store answers (cheap; for `/readyz`), else why not."""

    async def close(self) -> None:
        """Release connections."""


def is_file_id(name: str) -> bool:
    """True for a key this system wrote (a UUID), never a user's filename."""
    try:
        uuid.UUID(name)
    except ValueError:
        return False
    return True
