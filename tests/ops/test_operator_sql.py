"""Migration 0012 on a real Postgres: the slowing rule, the trend views, failure reasons."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from imuflow import db
from tests.ops.jobs import add_gapped_batches, make_job, make_user

pytestmark = pytest.mark.integration


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    c = await db.connect(database_url)
    try:
        yield c
    finally:
        await c.close()


async def slowing_ids(conn: asyncpg.Connection) -> set[uuid.UUID]:
    return {r["file_id"] for r in await conn.fetch("SELECT * FROM get_slowing_streaming_processes()")}


async def test_a_job_is_slowing_after_five_slow_batches_in_a_row(conn: asyncpg.Connection) -> None:
    user = await make_user(conn)
    # 10 batches of 1000 samples every 0.1 s (10k samples/s), then the rate drops to 1k/s.
    slowing = await make_job(conn, user, checkpoint_ago=1, claimed_ago=30, filename="slow.csv")
    await add_gapped_batches(conn, slowing, user, [0.1] * 10 + [1.0] * 5)
    # Only four slow batches so far: not yet.
    four = await make_job(conn, user, checkpoint_ago=1, claimed_ago=30, filename="four.csv")
    await add_gapped_batches(conn, four, user, [0.1] * 10 + [1.0] * 4)
    # Slower, but not by a factor of three (10k/s -> 4k/s).
    mild = await make_job(conn, user, checkpoint_ago=1, claimed_ago=30, filename="mild.csv")
    await add_gapped_batches(conn, mild, user, [0.1] * 10 + [0.25] * 6)
    # Slow from the start: its own median is slow, so it is not slowing down.
    steady = await make_job(conn, user, checkpoint_ago=1, claimed_ago=30, filename="steady.csv")
    await add_gapped_batches(conn, steady, user, [1.0] * 15)
    # A slow tail with one fast batch in the last five: not "in a row".
    broken = await make_job(conn, user, checkpoint_ago=1, claimed_ago=30, filename="broken.csv")
    await add_gapped_batches(conn, broken, user, [0.1] * 10 + [1.0, 1.0, 0.1, 1.0, 1.0])
    # Finished jobs are never slowing.
    done = await make_job(conn, user, status="completed", checkpoint_ago=1, claimed_ago=30)
    await add_gapped_batches(conn, done, user, [0.1] * 10 + [1.0] * 5)

    assert await slowing_ids(conn) == {slowing}
    row = await conn.fetchrow("SELECT * FROM get_slowing_streaming_processes()")
    assert row["owner"] == "alice" and row["filename"] == "slow.csv" and row["slow_batches"] == 5
    assert row["median_rate"] == pytest.approx(10_000, rel=0.01)
    assert row["recent_rate"] == pytest.approx(1_000, rel=0.01)
    assert row["batch_number"] == 15

    # A fast batch ends the warning.
    await add_gapped_batches(conn, slowing, user, [0.1], first=16)
    assert await slowing_ids(conn) == set()


async def test_trend_views_count_throughput_outcomes_and_times_per_hour(conn: asyncpg.Connection) -> None:
    user = await make_user(conn)
    ok = await make_job(conn, user, status="completed", checkpoint_ago=5, claimed_ago=60)
    bad = await make_job(conn, user, status="failed", checkpoint_ago=5, claimed_ago=60)
    gave_up = await make_job(conn, user, status="failed", checkpoint_ago=5, claimed_ago=60)
    await conn.execute(
        """
        UPDATE imu_data_files SET created_at = now() - interval '70 seconds',
               processing_started_at = now() - interval '60 seconds',
               completed_at = now() - interval '20 seconds'
        WHERE id = ANY($1::uuid[])
        """,
        [ok, bad, gave_up],
    )
    await conn.execute("UPDATE imu_data_files SET error_message = 'no header row' WHERE id = $1", bad)
    await conn.execute(
        "UPDATE imu_data_files SET error_message = 'gave up after 5 attempts; last error: x' WHERE id = $1",
        gave_up,
    )
    await add_gapped_batches(conn, ok, user, [0.5] * 4)
    hourly = await conn.fetch("SELECT * FROM streaming_trends_hourly")
    assert 720 <= len(hourly) <= 722  # every hour of 30 days, empty ones included
    last = dict(hourly[-1])
    if last["files_completed"] == 0:  # the hour turned during the test
        last = dict(hourly[-2])
    assert last["batches"] == 4 and last["samples"] == 4000
    assert last["files_completed"] == 1 and last["files_failed"] == 2
    assert last["failed_by_reason"] == {"format": 1, "attempts": 1}
    assert last["queue_wait_p50_seconds"] == pytest.approx(10, abs=0.5)
    assert last["parse_p50_seconds"] == pytest.approx(40, abs=0.5)
    assert last["samples_per_second"] > 0 and last["samples_per_busy_second"] > 0
    daily = await conn.fetch("SELECT * FROM streaming_trends_daily")
    assert 30 <= len(daily) <= 32 and sum(r["files_failed"] for r in daily) == 2
    week = await conn.fetch("SELECT * FROM streaming_trends('hour', 7)")
    assert 168 <= len(week) <= 170


async def test_failure_reasons(conn: asyncpg.Connection) -> None:
    cases = {
        "stuck (no checkpoint for 400 s (limit 300 s)) after 5 of 5 attempts; retry resumes": "stuck",
        "gave up after 5 attempts; last error: connection reset": "attempts",
        "the file holds no readable IMU samples": "format",
    }
    for message, reason in cases.items():
        assert await conn.fetchval("SELECT failure_reason($1)", message) == reason
    assert await conn.fetchval("SELECT failure_reason(NULL)") == "unknown"
