"""The parser's Postgres access: claim a job, commit batches with their checkpoint, finish.

Driver errors become `TransientError` (retry with backoff); a batch whose checkpoint
update matches no row raises `Fenced` (another attempt owns the job, or the user
cancelled or deleted it), and its transaction, samples included, rolls back.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

from contracts import events, topics
from imuflow import db, dberrors, outbox
from services.parser import pgcopy, preview_blocks
from services.parser.cursor import Cursor
from services.parser.formats.base import SampleBatch

QUERIES = db.load_queries(Path(__file__).parent / "sql" / "queries.sql")
DRIVER_ERRORS = dberrors.DRIVER
MAX_DEFERRALS = 3  # fair share: times a job is put back unclaimed between two claims


class ParserError(Exception):
    """Root of the parser's errors."""


class TransientError(ParserError, dberrors.Unavailable):
    """Postgres is unavailable or timed out; the job is retried later."""


class Fenced(ParserError):
    """The job is no longer this attempt's to write (cancelled, deleted, re-delivered)."""


@dataclass(frozen=True)
class Claim:
    """A job as this attempt took it."""

    file_id: UUID
    user_id: UUID
    filename: str
    size_bytes: int
    format: str | None
    sensor: str | None
    timezone: str
    storage_uri: str
    run: int
    attempt: int  # the attempt count (what users and MAX_ATTEMPTS see)
    lease: int  # the fencing token: every write of this claim requires it
    attempts_base: int
    resume_offset: int
    resume_samples: int
    resume_batch_number: int
    resume_state: dict[str, Any]
    rows_skipped: int
    warnings: list[str]
    last_error: str | None  # the previous attempt's transient error, if it had one
    upload_receiving: bool = False  # its upload is still streaming in (services/parser/growing.py)

    @property
    def event_ids(self) -> dict[str, Any]:
        """The fields every parse event of this attempt starts with."""
        return {"file_id": self.file_id, "user_id": self.user_id, "attempt": self.attempt, "run": self.run}


class ParserRepository:
    """Every query the parser runs."""

    def __init__(self, pool: asyncpg.Pool, hold_timeout: float = 600.0) -> None:
        self.pool = pool
        # The longest a batch transaction may hold the job's row lock. A parser that hangs
        # inside one (SIGSTOP, VM freeze, network partition mid-COPY) would otherwise keep
        # the row locked for hours: the watchdog skips locked rows and a redelivered claim
        # waits on the lock (found by fault tests). Postgres ends such a transaction.
        self.hold_timeout_ms = str(max(int(hold_timeout * 1000), 1000))

    async def claim(self, file_id: UUID, run: int) -> Claim | None:
        """Take the job (counting an attempt); None when it is no longer to be parsed."""
        with dberrors.translated(TransientError, "claim"):
            async with self.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(QUERIES["claim"], file_id, run)
                if row is not None:
                    await conn.fetchval(QUERIES["record_event"], file_id)
        if row is None:
            return None
        values = dict(row)
        values["file_id"] = values.pop("id")
        values["attempt"] = values.pop("attempts")
        return Claim(**values)

    async def set_format(
        self, claim: Claim, format_id: str, units: dict[str, str], warnings: list[str]
    ) -> None:
        """Record the detected format, its source units and header warnings; Fenced if not ours."""
        status = await self._execute(
            QUERIES["set_format"], claim.file_id, claim.lease, claim.run, format_id, units, warnings
        )
        if status != "UPDATE 1":
            raise Fenced("set_format matched no row")

    async def store_batch(
        self,
        claim: Claim,
        batch: SampleBatch,
        cursor: Cursor,
        *,
        progress: Callable[[], dict[str, Any]] | None = None,
        payload: Sequence[memoryview] | None = None,
        preview: preview_blocks.Encoded | None = None,
    ) -> None:
        """Commit the batch's samples, the checkpoint `cursor` (the position after the
        batch) and its progress event in one transaction.

        `progress` builds the batch's progress event once the samples are written; it goes
        to the outbox in the same transaction (fault tests found fire-and-forget sends lost
        to a crash right after the commit: holes in the batch log). `payload` and `preview`
        are the batch already encoded by `pgcopy.encode_parts` and `preview_blocks.encode` (the
        parser makes them in its read-ahead thread).
        """
        with dberrors.translated(TransientError, "store batch"):
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(QUERIES["hold_timeout"], self.hold_timeout_ms)
                status = await conn.execute(
                    QUERIES["checkpoint"],
                    claim.file_id,
                    claim.lease,
                    claim.run,
                    cursor.batch_number - 1,
                    cursor.batch_number,
                    batch.end_offset,
                    cursor.samples_done,
                    batch.state,
                    cursor.rows_skipped,
                    cursor.warnings,
                )
                if status != "UPDATE 1":
                    raise Fenced("checkpoint matched no row")
                await self.copy_samples(conn, claim, batch, payload, preview)
                if progress is not None:
                    event = progress()
                    await conn.execute(QUERIES["insert_batch_log"], *_log_row(event))
                    await outbox.enqueue(conn, topics.PROGRESS, claim.file_id, event)

    @staticmethod
    async def copy_samples(
        conn: asyncpg.Connection,
        claim: Claim,
        batch: SampleBatch,
        payload: Sequence[memoryview] | None = None,
        preview: preview_blocks.Encoded | None = None,
    ) -> None:
        """COPY the batch's samples and its preview pyramid rows (in the caller's transaction)."""
        if len(batch):
            await conn.copy_to_table(
                "imu_samples",
                source=_chunks(payload or pgcopy.encode_parts(claim.file_id, batch)),
                columns=list(pgcopy.COLUMNS),
                format="binary",
            )
        await preview_blocks.store(conn, claim.file_id, batch, preview)  # the preview pyramid (0014)

    async def complete(self, claim: Claim, total_samples: int) -> bool:
        """Mark the job completed with its exact count; False if fenced."""
        rows = await self._fetch(QUERIES["complete"], claim.file_id, claim.lease, claim.run, total_samples)
        return bool(rows)

    async def fail(
        self,
        file_id: UUID,
        lease: int | None,
        run: int,
        message: str,
        dead_letter: dict[str, Any] | None = None,
    ) -> bool:
        """Mark the job failed with a reason the user can act on; False if fenced.

        `dead_letter` (the job's file event) goes to the dead-letter topic through the
        outbox, committed with the failure, so a broker outage cannot lose it.
        """
        with dberrors.translated(TransientError):
            async with self.pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(QUERIES["fail"], file_id, lease, run, message)
                if rows and dead_letter is not None:
                    await outbox.enqueue(conn, topics.FILES_DEAD_LETTER, file_id, dead_letter)
        return bool(rows)

    async def status_of(self, file_id: UUID) -> dict[str, Any] | None:
        """The job's status, run, attempt count and lease (None once deleted)."""
        with dberrors.translated(TransientError, "status"):
            return db.record(await self.pool.fetchrow(QUERIES["status_of"], file_id))

    async def note_transient_error(self, claim: Claim, message: str) -> None:
        """Keep the last transient error on the job for operators (best effort)."""
        with contextlib.suppress(*DRIVER_ERRORS):
            await self.pool.execute(
                QUERIES["note_transient_error"], claim.file_id, claim.lease, message[:500]
            )

    async def defer_if_behind(self, file_id: UUID, run: int) -> bool:
        """Fair share at claim time: requeue the file unclaimed if another user comes first.

        Its event goes to the back of its partition through the outbox, in the same
        transaction; no attempt is counted. True when deferred.
        """
        with dberrors.translated(TransientError, "defer"):
            async with self.pool.acquire() as conn, conn.transaction():
                if not await conn.fetchval(QUERIES["behind_in_fair_order"], file_id):
                    return False
                row = await conn.fetchrow(QUERIES["defer"], file_id, run, MAX_DEFERRALS)
                if row is None:
                    return False  # deferred enough, or not queued (any more): the claim decides
                await outbox.enqueue(
                    conn,
                    topics.FILES,
                    file_id,
                    events.FileQueued.of_file(row, "requeue"),
                )
        return True

    async def others_waiting(self, claim: Claim) -> bool:
        """Whether another user with fewer running jobs has queued work (fair share)."""
        with dberrors.translated(TransientError, "fair share"):
            return bool(await self.pool.fetchval(QUERIES["others_waiting"], claim.user_id))

    async def yield_job(self, claim: Claim, batch_number: int) -> bool:
        """Give the parser back at a batch boundary: queued again from the checkpoint.

        The event that resumes it is republished through the outbox in the same
        transaction (behind the waiting work); False if the job was no longer ours.
        """
        with dberrors.translated(TransientError, "yield"):
            async with self.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    QUERIES["yield_job"], claim.file_id, claim.lease, claim.run, batch_number
                )
                if row is None:
                    return False
                await outbox.enqueue(
                    conn,
                    topics.FILES,
                    claim.file_id,
                    events.FileQueued.of_file(row, "requeue"),
                )
                await conn.fetchval(QUERIES["record_event"], claim.file_id)
        return True

    async def release_receiving(self, claim: Claim, parked: str) -> bool:
        """Give back a job whose upload still streams (`parked`: 'binary' or 'paused'; ingest
        queues it again); False if the upload ended meanwhile."""
        with dberrors.translated(TransientError, "release"):
            async with self.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    QUERIES["release_receiving"], claim.file_id, claim.lease, claim.run, parked
                )
                if row is not None:
                    await conn.fetchval(QUERIES["record_event"], claim.file_id)
        return row is not None

    async def _execute(self, query: str, *args: Any) -> str:
        with dberrors.translated(TransientError):
            result: str = await self.pool.execute(query, *args)
        return result

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        with dberrors.translated(TransientError):
            rows: list[asyncpg.Record] = await self.pool.fetch(query, *args)
        return rows


COPY_CHUNK = 4 * 1024 * 1024


def _log_row(event: dict[str, Any]) -> tuple[Any, ...]:
    """The batch log row of a batch's progress event (as JSON)."""
    return (
        UUID(event["file_id"]),
        UUID(event["user_id"]),
        event["run"],
        event["batch_number"],
        event["samples_in_batch"],
        event["total_samples_processed"],
        event["batch_processing_time_ms"],
        datetime.fromisoformat(event["started_at"]),
        datetime.fromisoformat(event["completed_at"]),
        event["attempt"],
    )


async def _chunks(parts: Sequence[memoryview]) -> AsyncIterator[memoryview]:
    """The payload in slices, without copying it: a file-like source would make asyncpg
    read it 512 KiB at a time through the thread pool, which costs more than the COPY."""
    for part in parts:
        for start in range(0, len(part), COPY_CHUNK):
            yield part[start : start + COPY_CHUNK]
