"""Duplicate, out-of-order, malformed and forged progress events: stored progress stays exact."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from contracts import events, topics
from imuflow import kafka
from imuflow.settings import Settings
from tests.e2e.helpers import make_token
from tests.faults.helpers import wait_for
from tests.stack import StartStack

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(120)]
BATCH = 1_000
TOTAL = 10 * BATCH


def progress(file_id: uuid.UUID, user_id: uuid.UUID, batch: int, **changes: Any) -> bytes:
    """A valid BatchProgress event for batch `batch` of a 10-batch file (fields overridable)."""
    now = datetime.now(UTC)
    event = events.BatchProgress(
        file_id=file_id,
        user_id=user_id,
        attempt=1,
        batch_number=batch,
        samples_in_batch=BATCH,
        total_samples_processed=batch * BATCH,
        estimated_total_samples=TOTAL,
        bytes_processed=batch * 100,
        bytes_total=1_000,
        batch_processing_time_ms=5.0,
        started_at=now,
        completed_at=now,
    )
    data = json.loads(events.encode(event))
    data.update(changes)
    return json.dumps(data).encode()


async def _parsing_file(conn: asyncpg.Connection, user_id: uuid.UUID) -> uuid.UUID:
    """A file row as a parser's claim leaves it (no parser runs in this test)."""
    file_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO imu_data_files (id, user_id, filename, size_bytes, sha256, storage_uri, status,"
        " attempts, claimed_at, processing_started_at) "
        "VALUES ($1, $2, 'x.csv', 1000, 'abc', 'file:///nowhere', 'parsing', 1, now(), now())",
        file_id,
        user_id,
    )
    return file_id


async def test_bad_progress_events_are_skipped_and_state_stays_exact(
    test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    stack = await service_stack(test_settings, services=("progress",))
    await make_token(database_url, "alice")
    await make_token(database_url, "mallory")
    conn = await asyncpg.connect(database_url)
    try:
        alice = await conn.fetchval("SELECT id FROM users WHERE name = 'alice'")
        mallory = await conn.fetchval("SELECT id FROM users WHERE name = 'mallory'")
        file_id = await _parsing_file(conn, alice)
    finally:
        await conn.close()

    topic = kafka.topic(test_settings, topics.PROGRESS)
    key = topics.message_key(file_id)
    sequence = [
        progress(file_id, alice, 1),
        progress(file_id, alice, 3),
        progress(file_id, alice, 2),  # out of order: late
        progress(file_id, alice, 3),  # duplicate
        progress(file_id, alice, 1),  # duplicate, late
        b"not json at all",
        b'{"type": "parse.progress", "file_id": "nope"}',  # fails the contract
        progress(file_id, alice, 4, total_samples_processed=-5),  # fails the contract
        progress(file_id, mallory, 9),  # forged: another user's file
        progress(uuid.uuid4(), alice, 9),  # unknown file
        progress(file_id, alice, 9, run=2),  # a run that does not exist (stale)
        # Valid per contract but out of range for the columns: must not wedge the consumer.
        progress(file_id, alice, 2**40, total_samples_processed=5 * BATCH, samples_in_batch=2**40),
        progress(file_id, alice, 4),
        progress(file_id, alice, 4),  # duplicate
    ]
    producer = AIOKafkaProducer(bootstrap_servers=test_settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for value in sequence:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()

    await wait_for(
        database_url,
        "SELECT samples_processed = $2 FROM imu_data_files WHERE id = $1",
        file_id,
        4 * BATCH,
        timeout=60,
        what="batch 4 applied",
    )
    # Give the consumer time to (not) apply anything after batch 4 (nothing else is queued).
    await asyncio.sleep(1.0)
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT * FROM imu_data_files WHERE id = $1", file_id)
        logged = await conn.fetch(
            "SELECT batch_number, total_samples_processed FROM streaming_processing_logs "
            "WHERE file_id = $1 ORDER BY batch_number",
            file_id,
        )
        shown = await conn.fetch(
            "SELECT (data->>'samples_processed')::bigint AS n, (data->>'percent')::float AS p "
            "FROM file_events WHERE file_id = $1 ORDER BY id",
            file_id,
        )
        others = await conn.fetchval(
            "SELECT count(*) FROM streaming_processing_logs WHERE file_id <> $1", file_id
        )
    finally:
        await conn.close()
    assert row["samples_processed"] == 4 * BATCH
    assert row["batch_number"] == 4
    assert row["run"] == 1 and row["status"] == "parsing"
    assert [(r["batch_number"], r["total_samples_processed"]) for r in logged] == [
        (b, b * BATCH) for b in (1, 2, 3, 4)
    ]
    assert others == 0
    # What browsers were shown only ever moved forward, one event per real advance.
    assert [r["n"] for r in shown] == [1 * BATCH, 3 * BATCH, 4 * BATCH]
    percents = [r["p"] for r in shown]
    assert percents == sorted(percents)
    text = stack.logs["progress"].read_text()
    assert "skipping malformed progress event" in text
    assert "another user's file" in text
