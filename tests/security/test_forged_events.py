"""Forged progress events (unknown file, someone else's file) are counted and change nothing.

Anyone who can write to the progress topic must not be able to move another user's
progress, add to its batch log or create records. Duplicate, late and malformed events
are the fault tests' business (tests/faults); this is about ownership only.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from contracts import events, topics
from imuflow import kafka
from imuflow.settings import Settings
from tests.e2e.helpers import DATA, follow_until_done, make_token, upload
from tests.stack import StartStack
from tests.waiting import until

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(180)]
XIO = DATA / "xio_fusion_sensor_data.csv"


async def _outcomes(progress_url: str) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"{progress_url}/metrics")).text
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "imuflow_progress_events_total":
                counts[sample.labels["outcome"]] = sample.value
    return counts


async def _state(url: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(url)
    try:
        files = await conn.fetch(
            "SELECT id, user_id, status, samples_processed, sample_count, percent, batch_number, "
            "last_checkpoint_at, eta_seconds FROM imu_data_files ORDER BY id"
        )
        logs = await conn.fetch("SELECT * FROM streaming_processing_logs ORDER BY 1, 2, 3")
    finally:
        await conn.close()
    return [dict(r) for r in files] + [dict(r) for r in logs]


async def _settled_outcomes(progress_url: str) -> dict[str, float]:
    """The counters once the job's own events are applied (the consumer may lag the parser)."""
    deadline = time.monotonic() + 60
    seen, since = await _outcomes(progress_url), time.monotonic()
    while time.monotonic() - since < 3 or not seen.get("applied"):
        assert time.monotonic() < deadline, f"the job's own events were never applied: {seen}"
        await asyncio.sleep(0.5)
        now = await _outcomes(progress_url)
        if now != seen:
            seen, since = now, time.monotonic()
    return seen


def _forged(file_id: uuid.UUID, user_id: uuid.UUID) -> events.BatchProgress:
    now = datetime.now(UTC)
    return events.BatchProgress(
        file_id=file_id,
        user_id=user_id,
        attempt=1,
        batch_number=99,
        samples_in_batch=1_000_000,
        total_samples_processed=10_000_000,
        estimated_total_samples=10_000_000,
        bytes_processed=10,
        bytes_total=10,
        batch_processing_time_ms=1.0,
        started_at=now,
        completed_at=now,
    )


async def test_forged_progress_events_are_skipped_and_counted(
    test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    stack = await service_stack(test_settings)
    alice = await make_token(database_url, "alice")
    await make_token(database_url, "bob")
    uploaded = await upload(stack.ingest_url, alice, XIO)
    assert uploaded.status_code == 202, uploaded.text
    file_id = uuid.UUID(uploaded.json()["id"])
    stream = f"{stack.progress_url}/api/files/{file_id}/events"
    assert (await asyncio.wait_for(follow_until_done(stream, alice), 120))[-1].type == "completed"

    conn = await asyncpg.connect(database_url)
    try:
        bob_id = await conn.fetchval("SELECT id FROM users WHERE name = 'bob'")
    finally:
        await conn.close()
    before = await _settled_outcomes(stack.progress_url)
    before_state = await _state(database_url)

    forged = [
        _forged(uuid.uuid4(), bob_id),  # a file that does not exist
        _forged(file_id, bob_id),  # alice's file, claimed by bob
        _forged(file_id, uuid.uuid4()),  # alice's file, a user that does not exist
    ]
    producer = kafka.producer(test_settings)
    await producer.start()
    try:
        for event in forged:
            sent = await producer.send(
                kafka.topic(test_settings, topics.PROGRESS),
                value=events.encode(event),
                key=topics.message_key(event.file_id),
            )
            await sent
    finally:
        await producer.stop()

    async def counted() -> dict[str, float] | None:
        now = await _outcomes(stack.progress_url)
        return now if now.get("invalid", 0) - before.get("invalid", 0) >= len(forged) else None

    after = await until(counted, f"forged events counted as invalid (before: {before})", within=60, every=0.5)

    assert after.get("invalid", 0) - before.get("invalid", 0) == len(forged)
    assert after.get("applied", 0) == before.get("applied", 0), "a forged event was applied"
    assert await _state(database_url) == before_state, "a forged event changed a record"
    logs = "".join(p.read_text(errors="replace") for p in stack.logs.values() if p.exists())
    assert "forged_event" in logs, "skipped forged events must be logged"
