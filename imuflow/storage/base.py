"""The storage interface every service uses for uploads (SPEC §7 `IMUFLOW_STORAGE_URL`).

An upload is one object named by its file id under the storage URL (a local directory
or an S3 bucket and prefix); `storage_uri` in `imu_data_files` is that object's URI. A
user's filename is never part of a key. Writes stream (`ObjectWriter`: nothing is
visible before `commit`, and `abort` leaves nothing behind); reads go through a
seekable, blocking file object meant for a worker thread (readers are synchronous).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol


class StorageError(Exception):
    """The store failed or refused an operation (unreachable, no permission, ...)."""


class ObjectMissing(StorageError):
    """No object at that URI (deleted, or never stored)."""


class ObjectWriter(Protocol):
    """One object being written; visible only after `commit`."""

    async def write(self, data: bytes) -> None:
        """Append bytes (may wait while parts are stored: a bounded number in flight)."""

    async def commit(self) -> None:
        """Make the object durable and visible under its key."""

    async def abort(self) -> None:
        """Discard what was written; idempotent, and a no-op after `commit`."""


@dataclass
class PartialState:
    """What must be remembered (in Postgres) of an object written over several requests.

    `offset` bytes are durable. On S3 they are `parts` of multipart upload `upload_id`
    (each part at least 5 MiB) plus `tail_bytes` in a small `<key>.tail` object; on a local
    disk they are the first `offset` bytes of `<key>.tus`.
    """

    offset: int = 0
    upload_id: str | None = None
    parts: list[dict[str, Any]] = field(default_factory=list)
    tail_bytes: int = 0


class PartialWriter(Protocol):
    """Appends one request's bytes to a partial object (resumable uploads)."""

    state: PartialState

    async def write(self, data: bytes) -> None:
        """Append bytes (may wait while a part is stored)."""

    def due(self) -> bool:
        """True when a checkpoint now is cheap and worth recording (a long request records
        its progress as it goes: local, every 8 MiB; S3, right after a part was stored)."""

    async def checkpoint(self) -> PartialState:
        """Make everything written durable (local: fsync; S3: store the tail); the new state."""

    async def complete(self) -> str:
        """Turn the partial object into the final one under its key; its URI."""

    async def close(self) -> None:
        """Release files; what was not checkpointed is forgotten (the recorded state stays valid)."""


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

    async def sweep(self, older_than: float, keep: frozenset[str] = frozenset()) -> int:
        """Remove unfinished uploads started more than `older_than` seconds ago (a writer
        that was killed could not abort its own), except those named in `keep`; how many."""

    async def resume(self, key: str, state: PartialState) -> PartialWriter:
        """Continue writing the partial object `key` from its recorded `state`."""

    async def abort_partial(self, key: str, state: PartialState) -> None:
        """Remove a partial object and everything stored for it (idempotent)."""

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
