"""The stuck-job watchdog on a real Postgres: one replica acts per round, the gauge, alerts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from imuflow import db, metrics
from imuflow.settings import Settings
from services.progress.notifier import Notifier
from services.progress.operations import WATCHDOG_LOCK, OperationsRepository
from services.progress.watchdog import Watchdog, interval_for
from tests.ops.jobs import make_job, make_user

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(database_url, max_size=4)
    try:
        yield p
    finally:
        await p.close()


def test_interval_is_a_fraction_of_stuck_after_within_bounds() -> None:
    assert interval_for(300) == 15.0
    assert interval_for(30) == 3.0
    assert interval_for(2) == 1.0


async def test_round_writes_the_config_resets_and_sets_the_gauge(pool: asyncpg.Pool) -> None:
    settings = Settings(database_url="x", stuck_after=120, max_attempts=3)
    async with pool.acquire() as conn:
        user = await make_user(conn)
        job = await make_job(conn, user, checkpoint_ago=200, claimed_ago=300)
    watchdog = Watchdog(settings, OperationsRepository(pool), None)
    metrics.STUCK_JOBS.set(99)
    result = await watchdog.round()
    assert result.acted and [(a["file_id"], a["action"]) for a in result.actions] == [(job, "requeued")]
    config = await pool.fetchrow("SELECT stuck_after, max_attempts FROM imuflow_config")
    assert config["stuck_after"].total_seconds() == 120 and config["max_attempts"] == 3
    assert metrics.STUCK_JOBS._value.get() == 0


async def test_only_the_replica_holding_the_lock_acts(pool: asyncpg.Pool, database_url: str) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        job = await make_job(conn, user, checkpoint_ago=400, claimed_ago=500)
    ops = OperationsRepository(pool)
    other = await db.connect(database_url)
    try:
        async with other.transaction():
            assert await other.fetchval("SELECT pg_try_advisory_xact_lock($1)", WATCHDOG_LOCK)
            waiting = await Watchdog(Settings(database_url="x"), ops, None).round()
            assert not waiting.acted
            # It still reports what is stuck, so an alert fires if the lock holder is wedged.
            assert metrics.STUCK_JOBS._value.get() == 1
    finally:
        await other.close()
    # Two replicas racing: exactly one requeues the job.
    rounds = await asyncio.gather(*(ops.watchdog_round(collect_failed=False) for _ in range(2)))
    actions = [a for r in rounds for a in r.actions]
    assert [(a["file_id"], a["action"]) for a in actions] == [(job, "requeued")]
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 1


async def test_failed_jobs_are_alerted_once_and_history_is_not(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        old = await make_job(conn, user, status="failed")
        await conn.execute("SELECT record_file_event($1)", old)  # before the watchdog's first round
    notifier = Notifier("http://127.0.0.1:9/never-called")
    watchdog = Watchdog(Settings(database_url="x"), OperationsRepository(pool), notifier)
    await watchdog.round()
    assert notifier.pending == 0
    async with pool.acquire() as conn:
        new = await make_job(conn, user, checkpoint_ago=1, claimed_ago=5)
        await conn.execute(
            "UPDATE imu_data_files SET status = 'failed', error_message = 'bad' WHERE id = $1", new
        )
        await conn.execute("SELECT record_file_event($1)", new)
    await watchdog.round()
    await watchdog.round()
    assert notifier.pending == 1
