"""A job that keeps failing ends failed with its last error, dead-lettered, checkpoint kept;
a retry resumes from that checkpoint. Cancel stops at a batch boundary; retry resumes too."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from contracts import topics
from imuflow import kafka
from imuflow.settings import Settings
from tests.e2e.helpers import bearer, make_token, upload
from tests.faults.helpers import (
    FAST_JOB_ENV,
    Stored,
    fetchval,
    stored,
    synth_csv,
    wait_checkpoint,
    wait_for,
    wait_terminal,
)
from tests.stack import StartStack

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(180)]
SAMPLES = 500_000
BATCH = 5_000
ENV = {**FAST_JOB_ENV, "IMUFLOW_BATCH_SIZE": str(BATCH), "IMUFLOW_MAX_ATTEMPTS": "3"}

# A switchable fault inside Postgres: while on, every insert into imu_samples fails.
FAULT_SQL = """
CREATE TABLE fault_switch (active boolean NOT NULL);
INSERT INTO fault_switch VALUES (false);
CREATE FUNCTION inject_fault() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT active FROM fault_switch) THEN
        RAISE EXCEPTION 'injected fault: disk on fire';
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER inject_fault BEFORE INSERT ON imu_samples
    FOR EACH STATEMENT EXECUTE FUNCTION inject_fault();
"""


async def _assert_retry_resumed(database_url: str, file_id: str, before: Stored) -> None:
    """The retried job completed exactly, resuming after `before`'s last checkpoint."""
    done = await wait_terminal(database_url, file_id, timeout=60)
    assert done.status == "completed", done
    assert (done.samples, done.distinct) == (SAMPLES, SAMPLES)
    # Its first batch is the one after the last committed checkpoint.
    first_retried = await wait_for(
        database_url,
        "SELECT min(batch_number) FROM streaming_processing_logs WHERE file_id = $1::uuid AND attempt > $2 "
        "HAVING count(*) = $3",
        file_id,
        before.attempts,
        SAMPLES // BATCH - before.resume_batch_number,
        timeout=30,
        what="the retry's batch log",
    )
    assert first_retried == before.resume_batch_number + 1


async def _dead_letters(settings: Settings, timeout: float = 20.0) -> list[dict[str, object]]:
    """Every message on the test's dead-letter topic (read from the start, no group)."""
    consumer = AIOKafkaConsumer(
        kafka.topic(settings, topics.FILES_DEAD_LETTER),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        found: list[dict[str, object]] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while not found and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            found += [json.loads(r.value) for rs in batch.values() for r in rs]
        return found
    finally:
        await consumer.stop()


async def _retry(progress_url: str, token: str, file_id: str) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(f"{progress_url}/api/files/{file_id}/retry", headers=bearer(token))
    assert response.status_code == 200, response.text


async def test_failing_job_ends_failed_with_reason_then_retry_resumes(
    tmp_path: Path, test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(FAULT_SQL)
    finally:
        await conn.close()
    path = synth_csv(tmp_path / "big.csv", SAMPLES)
    stack = await service_stack(test_settings, env=ENV)
    token = await make_token(database_url, "alice")
    file_id = (await upload(stack.ingest_url, token, path)).json()["id"]

    await wait_checkpoint(database_url, file_id, 10, timeout=60)
    await fetchval(database_url, "UPDATE fault_switch SET active = true")
    failed = await wait_terminal(database_url, file_id, timeout=90)
    assert failed.status == "failed", failed
    assert failed.error_message is not None
    assert "gave up after 3 attempts" in failed.error_message
    assert "injected fault: disk on fire" in failed.error_message  # the last error, for the user
    # Every batch before the fault is kept, exactly once, with its checkpoint.
    assert failed.resume_samples >= 10 * BATCH
    assert failed.samples == failed.distinct == failed.resume_samples
    dead = await _dead_letters(test_settings)
    assert [m["file_id"] for m in dead] == [file_id]

    await fetchval(database_url, "UPDATE fault_switch SET active = false")
    await _retry(stack.progress_url, token, file_id)
    await _assert_retry_resumed(database_url, file_id, failed)


async def test_cancel_stops_at_a_batch_boundary_and_retry_resumes(
    tmp_path: Path, test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    path = synth_csv(tmp_path / "big.csv", SAMPLES)
    stack = await service_stack(test_settings, env=ENV)
    token = await make_token(database_url, "alice")
    file_id = (await upload(stack.ingest_url, token, path)).json()["id"]

    await wait_checkpoint(database_url, file_id, 5, timeout=60)
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{stack.progress_url}/api/files/{file_id}/cancel", headers=bearer(token)
        )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    # The parser notices at its next batch boundary; give it time to (not) write more.
    await asyncio.sleep(1.0)
    cancelled = await stored(database_url, file_id)
    assert cancelled.status == "cancelled"
    assert 0 < cancelled.resume_samples < SAMPLES
    assert cancelled.resume_samples == cancelled.resume_batch_number * BATCH  # a whole number of batches
    assert cancelled.samples == cancelled.distinct == cancelled.resume_samples  # nothing half-written
    await asyncio.sleep(1.0)
    assert await stored(database_url, file_id) == cancelled  # and nothing after

    await _retry(stack.progress_url, token, file_id)
    await _assert_retry_resumed(database_url, file_id, cancelled)
