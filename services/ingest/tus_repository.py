"""Postgres state of resumable uploads (tus): offsets, S3 parts, locks, expiry."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

from imuflow import db, dberrors
from services.ingest.repository import StorageUnavailable

QUERIES = db.load_queries(Path(__file__).parent / "sql" / "tus.sql")


class UploadBusy(Exception):
    """Another request is writing this upload now (tus: 409)."""


@dataclass
class TusUpload:
    """One row of `tus_uploads`."""

    id: UUID
    user_id: UUID
    length: int
    offset: int
    metadata: dict[str, str]
    expires_at: Any
    s3_upload_id: str | None = None
    s3_parts: list[dict[str, Any]] = field(default_factory=list)
    tail_bytes: int = 0
    sha256: str | None = None
    file_id: UUID | None = None
    completed: bool = False

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> TusUpload:
        """Build from a `tus_uploads` row."""
        return cls(
            id=row["id"],
            user_id=row["user_id"],
            length=row["upload_length"],
            offset=row["upload_offset"],
            metadata=dict(row["metadata"] or {}),
            expires_at=row["expires_at"],
            s3_upload_id=row["s3_upload_id"],
            s3_parts=list(row["s3_parts"] or []),
            tail_bytes=row["tail_bytes"],
            sha256=row["sha256"],
            file_id=row["file_id"],
            completed=row["completed_at"] is not None,
        )


async def _call(pool: asyncpg.Pool, method: str, name: str, *args: Any) -> Any:
    with dberrors.translated(StorageUnavailable):
        return await getattr(pool, method)(QUERIES[name], *args)


async def create(
    pool: asyncpg.Pool, upload_id: UUID, user_id: UUID, length: int, metadata: dict[str, str], expiry: float
) -> TusUpload:
    """Insert a new upload at offset 0."""
    row = await _call(pool, "fetchrow", "create_upload", upload_id, user_id, length, metadata, expiry)
    return TusUpload.from_row(row)


async def pending_count(pool: asyncpg.Pool, user_id: UUID) -> int:
    """The user's unfinished, unexpired uploads."""
    return int(await _call(pool, "fetchval", "pending_count", user_id))


async def get(pool: asyncpg.Pool, upload_id: UUID, user_id: UUID) -> TusUpload | None:
    """The caller's upload, or None (another user's, terminated or expired)."""
    row = await _call(pool, "fetchrow", "get_upload", upload_id, user_id)
    return TusUpload.from_row(row) if row is not None else None


async def save_progress(pool: asyncpg.Pool, upload: TusUpload, expiry: float) -> None:
    """Persist the offset and the S3 state the bytes so far left (also renews the expiry)."""
    await _call(
        pool,
        "execute",
        "save_progress",
        upload.id,
        upload.offset,
        upload.s3_upload_id,
        upload.s3_parts,
        upload.tail_bytes,
        expiry,
    )


async def save_sha256(pool: asyncpg.Pool, upload_id: UUID, sha256: str) -> None:
    """The whole file's hash, once every byte is stored."""
    await _call(pool, "execute", "save_sha256", upload_id, sha256)


async def mark_completed(pool: asyncpg.Pool, upload_id: UUID, file_id: UUID) -> None:
    """The upload became (or matched) the file record `file_id`."""
    await _call(pool, "execute", "mark_completed", upload_id, file_id)


async def delete(pool: asyncpg.Pool, upload_id: UUID) -> None:
    """Forget the upload (terminated, expired or refused)."""
    await _call(pool, "execute", "delete_upload", upload_id)


async def expired(pool: asyncpg.Pool, limit: int = 100) -> list[TusUpload]:
    """Rows past their expiry, oldest first."""
    rows = await _call(pool, "fetch", "expired_uploads", limit)
    return [TusUpload.from_row(r) for r in rows]


async def still_expired(pool: asyncpg.Pool, upload_id: UUID) -> TusUpload | None:
    """The upload if it is still expired (read again under its lock)."""
    row = await _call(pool, "fetchrow", "expired_upload", upload_id)
    return None if row is None else TusUpload.from_row(row)


async def unfinished_ids(pool: asyncpg.Pool) -> set[str]:
    """Ids of every unfinished upload."""
    rows = await _call(pool, "fetch", "unfinished_ids")
    return {str(r["id"]) for r in rows}


async def in_progress(pool: asyncpg.Pool) -> int:
    """Unfinished, unexpired uploads of every user."""
    return int(await _call(pool, "fetchval", "in_progress"))


def lock_key(upload_id: UUID) -> int:
    """A signed 64-bit advisory-lock key for the upload, in a namespace of its own."""
    digest = hashlib.blake2b(b"tus:" + upload_id.bytes, digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@asynccontextmanager
async def writing(pool: asyncpg.Pool, upload_id: UUID) -> AsyncIterator[None]:
    """Hold the upload's advisory lock for one PATCH, or raise UploadBusy at once.

    The lock is a session lock on a connection kept for the whole body: if this ingest is
    killed, Postgres drops the connection and the lock with it, so the client's retry on
    another (or the restarted) ingest is not refused.
    """
    key = lock_key(upload_id)
    with dberrors.translated(StorageUnavailable):
        conn = await pool.acquire()
    try:
        with dberrors.translated(StorageUnavailable):
            if not await conn.fetchval(QUERIES["try_lock"], key):
                raise UploadBusy(str(upload_id))
            try:
                yield
            finally:
                await conn.fetchval(QUERIES["unlock"], key)
    finally:
        await pool.release(conn)
