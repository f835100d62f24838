"""The progress service's read and command queries; driver errors become ProgressError."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

from contracts import topics
from contracts.events import FileQueued
from imuflow import db, dberrors, outbox

QUERIES = db.load_queries(Path(__file__).parent / "sql" / "queries.sql")
DRIVER_ERRORS = dberrors.DRIVER


class ProgressError(Exception):
    """Root of the progress service's errors."""


class Unavailable(ProgressError, dberrors.Unavailable):
    """Postgres did not answer."""


class ProgressRepository:
    """Queries behind the files API, the SSE streams and the commands."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def list_files(
        self,
        user_id: UUID,
        limit: int,
        before: datetime | None,
        after: tuple[datetime, UUID] | None = None,
    ) -> list[dict[str, Any]]:
        """The user's files, newest first, older than `before` and past the (created_at, id) `after`."""
        at, last = after if after else (None, None)
        return [dict(r) for r in await self._fetch(QUERIES["list_files"], user_id, limit, before, at, last)]

    async def get_file(self, file_id: UUID, user_id: UUID | None) -> dict[str, Any] | None:
        """One file record (None when absent or another user's)."""
        rows = await self._fetch(QUERIES["get_file"], file_id, user_id)
        return dict(rows[0]) if rows else None

    async def progress_row(self, file_id: UUID) -> dict[str, Any] | None:
        """The row of `get_file_processing_progress`."""
        rows = await self._fetch(QUERIES["progress_row"], file_id)
        return dict(rows[0]) if rows and rows[0]["file_id"] is not None else None

    async def batch_log(self, file_id: UUID) -> list[dict[str, Any]]:
        """The file's batch log, oldest first."""
        return [dict(r) for r in await self._fetch(QUERIES["batch_log"], file_id)]

    async def cancel(self, file_id: UUID, user_id: UUID) -> bool:
        """Cancel a job that has not ended; False when there was nothing to cancel."""
        return bool(await self._fetch(QUERIES["cancel"], file_id, user_id))

    async def retry(self, file_id: UUID, user_id: UUID) -> bool:
        """Requeue a failed or cancelled job to resume from its checkpoint."""
        with dberrors.translated(Unavailable):
            async with self.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(QUERIES["requeue_for_retry"], file_id, user_id)
                if row is None:
                    return False
                await outbox.enqueue(conn, topics.FILES, file_id, FileQueued.of_file(row, "retry"))
                await conn.fetchval(QUERIES["record_event"], file_id)
        return True

    async def max_event_id(self) -> int:
        """The newest event id (0 when there is none)."""
        rows = await self._fetch(QUERIES["max_event_id"])
        return int(rows[0][0])

    async def resumable(self, after: int) -> bool:
        """Whether a replay after this Last-Event-ID misses nothing (known, not pruned past)."""
        rows = await self._fetch(QUERIES["resumable"], after)
        return bool(rows[0][0])

    async def replay(
        self, after: int, user_id: UUID | None, file_id: UUID | None, limit: int
    ) -> list[asyncpg.Record]:
        """Events after `after`, in order, scoped; superseded progress events come without data."""
        return await self._fetch(QUERIES["replay"], after, user_id, file_id, limit)

    async def snapshot(self, user_id: UUID | None, file_id: UUID | None, limit: int) -> list[dict[str, Any]]:
        """Current records of the most recently changed files a stream covers, with `event_id`."""
        return [dict(r) for r in await self._fetch(QUERIES["snapshot"], user_id, file_id, limit)]

    async def prune_events(self, retention_seconds: float, batch: int) -> int:
        """Delete a batch of finished files' superseded events older than the retention."""
        rows = await self._fetch(QUERIES["prune_events"], retention_seconds, batch)
        return int(rows[0][0])

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        with dberrors.translated(Unavailable):
            rows: list[asyncpg.Record] = await self.pool.fetch(query, *args)
        return rows
