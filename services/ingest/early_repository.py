"""Postgres access of uploads recorded at their first bytes (services/ingest/early.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

from contracts import topics
from contracts.events import FileQueued
from imuflow import db, dberrors, outbox
from services.ingest import repository
from services.ingest.repository import NewFile, StorageUnavailable

QUERIES = db.load_queries(Path(__file__).parent / "sql" / "early.sql")


@dataclass(frozen=True)
class Finished:
    """How the last transaction of an early record ended."""

    record: dict[str, Any] | None  # the record to answer with (None: it was deleted meanwhile)
    duplicate: bool  # the record was removed: `record` is the user's earlier upload


async def start(pool: asyncpg.Pool, new: NewFile, received: int) -> dict[str, Any]:
    """Insert the receiving record and its FileQueued (outbox) in one transaction."""
    with dberrors.translated(StorageUnavailable):
        async with pool.acquire() as conn, conn.transaction():
            await repository.insert(conn, new, enqueue=True)
            await conn.execute(QUERIES["mark_receiving"], new.id, received)
            await conn.fetchval(repository.QUERIES["record_event"], new.id)
            row = await conn.fetchrow(repository.QUERIES["file_record"], new.id, new.user_id)
    assert row is not None
    return dict(row)


async def touch(pool: asyncpg.Pool, file_id: UUID, received: int, *, new_bytes: bool = True) -> bool:
    """Say the receiving ingest is alive, with the bytes it has stored; True if that queued again
    a job the parser gave back for want of bytes (`new_bytes`: some arrived since the last touch)."""
    with dberrors.translated(StorageUnavailable):
        if not new_bytes:
            await pool.execute(QUERIES["touch"], file_id, received)
            return False
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(QUERIES["requeue_paused"], file_id)
            if row is not None:
                event = FileQueued.of_file(dict(row), "upload")
                await outbox.enqueue(conn, topics.FILES, file_id, event.model_dump(mode="json"))
            await conn.execute(QUERIES["touch"], file_id, received)
    return row is not None


async def finish(
    pool: asyncpg.Pool, file_id: UUID, size: int, sha256: str, allow_duplicate: bool
) -> Finished:
    """The last byte is stored: set size and sha256, or remove the record as a duplicate.

    One transaction under the record's row lock: a batch being committed finishes first,
    and a duplicate's speculative samples, batch log and preview go with its record (the
    parser's next checkpoint matches no row and rolls back).
    """
    with dberrors.translated(StorageUnavailable):
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(QUERIES["lock_receiving"], file_id)
            if row is None:  # deleted by its user meanwhile, or failed by a sweep
                return Finished(None, duplicate=False)
            user_id = row["user_id"]
            duplicate_of = await conn.fetchval(repository.QUERIES["find_duplicate"], user_id, sha256)
            if duplicate_of is not None and not allow_duplicate:
                await _remove(conn, file_id)
                existing = await conn.fetchrow(repository.QUERIES["file_record"], duplicate_of, user_id)
                return Finished(db.record(existing), duplicate=True)
            done = await conn.fetchrow(QUERIES["finish"], file_id, size, sha256, duplicate_of)
            if done is not None and row["upload_parked"] is not None and done["status"] == "queued":
                event = FileQueued.of_file(dict(done), "upload")
                await outbox.enqueue(conn, topics.FILES, file_id, event.model_dump(mode="json"))
            record = await conn.fetchrow(repository.QUERIES["file_record"], file_id, user_id)
    return Finished(db.record(record), duplicate=False)


async def fail(pool: asyncpg.Pool, file_id: UUID, reason: str) -> bool:
    """The upload stopped: fail the record with `reason`, removing what was parsed of it."""
    with dberrors.translated(StorageUnavailable):
        async with pool.acquire() as conn, conn.transaction():
            if await conn.fetchrow(QUERIES["lock_receiving"], file_id) is None:
                return False
            await _remove_parsed(conn, file_id)
            await conn.fetch(QUERIES["fail"], file_id, reason)
    return True


async def remove(pool: asyncpg.Pool, file_id: UUID) -> None:
    """Remove a receiving record and everything of it (options that came after the file)."""
    with dberrors.translated(StorageUnavailable):
        async with pool.acquire() as conn, conn.transaction():
            if await conn.fetchrow(QUERIES["lock_receiving"], file_id) is not None:
                await _remove(conn, file_id)


async def stale(pool: asyncpg.Pool, seconds: float) -> list[dict[str, Any]]:
    """Receiving records no ingest touched for `seconds` (their ingest was killed)."""
    with dberrors.translated(StorageUnavailable):
        rows = await pool.fetch(QUERIES["stale"], seconds)
    return [dict(r) for r in rows]


async def _remove_parsed(conn: asyncpg.Connection, file_id: UUID) -> None:
    await conn.execute(QUERIES["delete_samples"], file_id)
    await conn.execute(QUERIES["delete_preview"], file_id)
    await conn.execute(QUERIES["delete_batch_log"], file_id)


async def _remove(conn: asyncpg.Connection, file_id: UUID) -> None:
    await _remove_parsed(conn, file_id)
    await conn.execute(QUERIES["delete_pending_outbox"], str(file_id))
    await conn.execute(QUERIES["delete_file"], file_id)
    await conn.execute(QUERIES["delete_events"], file_id)


async def receiving(pool: asyncpg.Pool, file_id: UUID) -> bool | None:
    """True if the record's upload is still being received, False if not, None if no record."""
    with dberrors.translated(StorageUnavailable):
        value = await pool.fetchval(QUERIES["receiving"], file_id)
    return None if value is None else bool(value)
