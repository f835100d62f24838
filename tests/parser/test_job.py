"""One delivery of a job (FileJob) on a real Postgres and broker: what it tells the worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from contracts import events
from imuflow import kafka
from imuflow.producer import FastStreamProducer
from imuflow.settings import Settings
from services.parser.job import FileJob, Outcome
from services.parser.repository import ParserRepository
from tests.ops.jobs import make_job, make_user

pytestmark = pytest.mark.integration

# A transient server error (serialisation failure, SQLSTATE 40001) on the write that
# records a failure, as a failover or a deadlock would give.
FAIL_WRITE_BREAKS = """
CREATE FUNCTION break_fail() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'could not serialize access' USING ERRCODE = '40001';
END;
$$;
CREATE TRIGGER break_fail BEFORE UPDATE ON imu_data_files
    FOR EACH ROW WHEN (NEW.status = 'failed') EXECUTE FUNCTION break_fail();
"""


@pytest.fixture
async def producer(test_settings: Settings) -> AsyncIterator[FastStreamProducer]:
    p = kafka.producer(test_settings)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


def _event(file_id: object, user_id: object) -> events.FileQueued:
    return events.FileQueued(
        file_id=file_id,
        user_id=user_id,
        storage_uri=f"file:///nowhere/{file_id}",
        filename="walk.csv",
        size_bytes=1000,
        queued_at=datetime.now(UTC),
    )


async def test_a_failure_that_cannot_be_written_leaves_the_message_uncommitted(
    pool: asyncpg.Pool, producer: FastStreamProducer, test_settings: Settings
) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        # Its stored upload is missing: the job fails with a reason (a FormatError).
        file_id = await make_job(conn, user, status="queued", claimed_ago=None, attempts=0)
        await conn.execute(FAIL_WRITE_BREAKS)
    repo = ParserRepository(pool)
    job = FileJob(test_settings, repo, producer, _event(file_id, user), asyncio.Event())
    # Not DONE: the worker must not commit the offset of a job left `parsing`.
    assert await job.run() is Outcome.RETRY
    row = await pool.fetchrow("SELECT status, last_error FROM imu_data_files WHERE id = $1", file_id)
    assert row["status"] == "parsing" and "could not record a failure" in row["last_error"]
    await pool.execute("DROP TRIGGER break_fail ON imu_data_files")
    # The retry (a new claim) records it.
    assert await job.run() is Outcome.DONE
    row = await pool.fetchrow("SELECT status, error_message FROM imu_data_files WHERE id = $1", file_id)
    assert row["status"] == "failed" and "stored upload is missing" in row["error_message"]
