"""Build jobs in any state straight in Postgres, for the stuck-rule tests."""

from __future__ import annotations

import uuid
from datetime import timedelta

import asyncpg

from imuflow import auth


async def make_user(conn: asyncpg.Connection, name: str = "alice", *, admin: bool = False) -> uuid.UUID:
    """A user (created if needed)."""
    return await auth.ensure_user(conn, name, admin)


async def make_job(
    conn: asyncpg.Connection,
    user_id: uuid.UUID,
    *,
    status: str = "parsing",
    checkpoint_ago: float | None = None,
    claimed_ago: float | None = 10.0,
    queued_ago: float | None = None,
    attempts: int = 1,
    attempts_base: int = 0,
    filename: str = "walk.csv",
) -> uuid.UUID:
    """A file row; times are given in seconds before now (None = never)."""
    file_id = uuid.uuid4()

    def ago(seconds: float | None) -> timedelta | None:
        return None if seconds is None else timedelta(seconds=seconds)

    await conn.execute(
        """
        INSERT INTO imu_data_files
            (id, user_id, filename, size_bytes, sha256, storage_uri, status, attempts, attempts_base,
             resume_checkpoint_at, claimed_at, processing_started_at, queued_at, resume_samples,
             resume_batch_number)
        VALUES ($1::uuid, $2, $3, 1000, 'x', 'file:///nowhere/' || $1::uuid::text, $4, $5, $6,
                now() - $7::interval, now() - $8::interval, now() - $8::interval,
                now() - COALESCE($9::interval, $8::interval, interval '0'), 5000, 2)
        """,
        file_id,
        user_id,
        filename,
        status,
        attempts,
        attempts_base,
        ago(checkpoint_ago),
        ago(claimed_ago),
        ago(queued_ago),
    )
    return file_id


async def add_batches(
    conn: asyncpg.Connection,
    file_id: uuid.UUID,
    user_id: uuid.UUID,
    times_ms: list[float],
    *,
    spacing_seconds: float = 1.0,
    attempt: int = 1,
) -> None:
    """Batch log rows of run 1 whose completions are `spacing_seconds` apart, ending 1 s ago."""
    n = len(times_ms)
    for i, ms in enumerate(times_ms):
        back = 1.0 + (n - 1 - i) * spacing_seconds
        await conn.execute(
            """
            INSERT INTO streaming_processing_logs
                (file_id, user_id, run, batch_number, samples_in_batch, total_samples_processed,
                 batch_processing_time_ms, started_at, completed_at, attempt)
            VALUES ($1, $2, 1, $3, 1000, $4, $5::float8,
                    now() - make_interval(secs => $6::float8) - make_interval(secs => $5::float8 / 1000),
                    now() - make_interval(secs => $6::float8), $7)
            """,
            file_id,
            user_id,
            i + 1,
            1000 * (i + 1),
            ms,
            back,
            attempt,
        )


async def add_gapped_batches(
    conn: asyncpg.Connection,
    file_id: uuid.UUID,
    user_id: uuid.UUID,
    gaps_seconds: list[float],
    *,
    samples: int = 1000,
    first: int = 1,
    attempt: int = 1,
) -> None:
    """Batch log rows of run 1, `samples` each, the i-th completing `gaps_seconds[i]` after the one before.

    The first call's last batch completes now (a later call continues from the newest row);
    each batch's own processing time is a fifth of its gap, so the gaps set the rates.
    """
    newest = await conn.fetchval(
        "SELECT max(completed_at) FROM streaming_processing_logs WHERE file_id = $1", file_id
    )
    done = await conn.fetchval(
        "SELECT COALESCE(max(total_samples_processed), 0) FROM streaming_processing_logs WHERE file_id = $1",
        file_id,
    )
    at = newest or (await conn.fetchval("SELECT now()") - timedelta(seconds=sum(gaps_seconds)))
    for i, gap in enumerate(gaps_seconds):
        at += timedelta(seconds=gap)
        await conn.execute(
            """
            INSERT INTO streaming_processing_logs
                (file_id, user_id, run, batch_number, samples_in_batch, total_samples_processed,
                 batch_processing_time_ms, started_at, completed_at, attempt)
            VALUES ($1, $2, 1, $3, $4, $5, $6::float8 * 200,
                    $7::timestamptz - make_interval(secs => $6::float8 / 5), $7::timestamptz, $8)
            """,
            file_id,
            user_id,
            first + i,
            samples,
            done + samples * (i + 1),
            gap,
            at,
            attempt,
        )
