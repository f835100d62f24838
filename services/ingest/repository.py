"""The ingest service's Postgres access; driver errors become IngestError."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

from contracts import topics
from contracts.events import FileQueued
from imuflow import db, dberrors, outbox

QUERIES = db.load_queries(Path(__file__).parent / "sql" / "queries.sql")


class IngestError(Exception):
    """Root of the ingest service's errors."""


class StorageUnavailable(IngestError, dberrors.Unavailable):
    """Postgres could not record the upload."""


@dataclass(frozen=True)
class NewFile:
    """A stored upload, about to be recorded."""

    id: UUID
    user_id: UUID
    filename: str
    size_bytes: int
    sha256: str
    storage_uri: str
    format: str | None
    sensor: str | None
    timezone: str
    duplicate_of: UUID | None = None
    parent_id: UUID | None = None


async def find_duplicate(pool: asyncpg.Pool, user_id: UUID, sha256: str) -> UUID | None:
    """The user's earlier upload of the same bytes, if any."""
    with dberrors.translated(StorageUnavailable):
        found: UUID | None = await pool.fetchval(QUERIES["find_duplicate"], user_id, sha256)
    return found


async def record_upload(pool: asyncpg.Pool, new: NewFile, *, enqueue: bool = True) -> dict[str, Any]:
    """Insert the file and (unless `enqueue` is False) its outbox event in one transaction."""
    with dberrors.translated(StorageUnavailable):
        async with pool.acquire() as conn, conn.transaction():
            await insert(conn, new, enqueue=enqueue)
            await conn.fetchval(QUERIES["record_event"], new.id)
            row = await conn.fetchrow(QUERIES["file_record"], new.id, new.user_id)
    assert row is not None
    return dict(row)


async def record_archive(
    pool: asyncpg.Pool, parent: NewFile, children: list[NewFile], notes: list[str]
) -> dict[str, Any]:
    """Insert a ZIP upload (never parsed itself) and its queued streams in one transaction."""
    with dberrors.translated(StorageUnavailable):
        async with pool.acquire() as conn, conn.transaction():
            await insert(conn, parent, enqueue=False)
            await conn.execute(QUERIES["mark_archive"], parent.id, notes)
            for child in children:
                await insert(conn, child, enqueue=True)
                await conn.fetchval(QUERIES["record_event"], child.id)
            row = await conn.fetchrow(QUERIES["file_record"], parent.id, parent.user_id)
    assert row is not None
    return dict(row)


async def insert(conn: asyncpg.Connection, new: NewFile, *, enqueue: bool) -> None:
    await conn.execute(
        QUERIES["insert_file"],
        new.id,
        new.user_id,
        new.filename,
        new.size_bytes,
        new.sha256,
        new.format,
        new.sensor,
        new.timezone,
        new.storage_uri,
        new.duplicate_of,
        new.parent_id,
    )
    if enqueue:
        event = FileQueued.of_file(dataclasses.asdict(new), "upload")
        await outbox.enqueue(conn, topics.FILES, new.id, event.model_dump(mode="json"))


async def file_record(pool: asyncpg.Pool, file_id: UUID, user_id: UUID) -> dict[str, Any] | None:
    """The caller's file record, or None."""
    with dberrors.translated(StorageUnavailable):
        row = await pool.fetchrow(QUERIES["file_record"], file_id, user_id)
    return db.record(row)
