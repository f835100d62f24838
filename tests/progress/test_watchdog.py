"""The stuck-job watchdog on a real Postgres: one replica acts per round, the gauge, alerts."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from imuflow import db, metrics
from imuflow.settings import Settings
from services.progress.notifier import Alert, Notifier
from services.progress.operations import WATCHDOG_LOCK, OperationsRepository
from services.progress.watchdog import Watchdog, interval_for
from tests.ops.jobs import make_job, make_user

pytestmark = pytest.mark.integration


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


class Recorder:
    """An alert sink that keeps what it is told."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def notify(self, alert: Alert) -> None:
        self.alerts.append(alert)


async def test_jobs_that_stay_stuck_despite_the_reset_are_alerted_once(
    pool: asyncpg.Pool, database_url: str
) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        hung = await make_job(conn, user, checkpoint_ago=400, claimed_ago=500, filename="hung.csv")
        requeued = await make_job(conn, user, checkpoint_ago=400, claimed_ago=500, filename="gone.csv")
    sink = Recorder()
    watchdog = Watchdog(Settings(database_url="x", stuck_after=60), OperationsRepository(pool), sink)
    parser = await db.connect(database_url)
    try:
        # A hung parser holds the row lock of its job: the reset skips it (it may be alive).
        async with parser.transaction():
            await parser.execute("SELECT 1 FROM imu_data_files WHERE id = $1 FOR UPDATE", hung)
            first = await watchdog.round()
            assert [a["file_id"] for a in first.actions] == [requeued]
            assert [a.kind for a in sink.alerts] == ["job_requeued"]
            assert (
                sink.alerts[0].details["filename"] == "gone.csv"
                and sink.alerts[0].details["owner"] == "alice"
            )
            await watchdog.round()
            await watchdog.round()
    finally:
        await parser.close()
    stuck = [a for a in sink.alerts if a.kind == "jobs_stuck"]
    assert len(stuck) == 1  # once, not every round
    (f,) = stuck[0].named_files()
    assert (f.file_id, f.filename, f.owner) == (str(hung), "hung.csv", "alice")
    assert "did not take" in f.reason and metrics.STUCK_JOBS._value.get() == 1
