"""The outbox relay against a real Postgres and broker."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from contracts import events, topics
from imuflow import db, kafka
from imuflow.outbox import OutboxRelay, enqueue
from imuflow.settings import Settings
from tests.ops.jobs import make_job, make_user

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_relay_publishes_then_prunes_old_rows(test_settings: Settings) -> None:
    pool = await db.create_pool(test_settings.database_url)
    producer = kafka.producer(test_settings)
    await producer.start()
    await kafka.ensure_topics(test_settings)
    consumer = AIOKafkaConsumer(
        kafka.topic(test_settings, topics.PROGRESS),
        bootstrap_servers=test_settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    try:
        key = uuid.uuid4()
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, topics.PROGRESS, key, {"hello": "world"})
        relay = OutboxRelay(test_settings, pool, producer)
        assert await relay.publish_pending() == 1
        assert await relay.publish_pending() == 0  # published once, marked
        message = await asyncio.wait_for(consumer.getone(), 20)
        assert message.key == str(key).encode()
        assert json.loads(message.value) == {"hello": "world"}

        assert await relay.prune() == 0  # just published: kept for a day
        await pool.execute("UPDATE outbox SET published_at = now() - interval '2 days'")
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, topics.PROGRESS, key, {"pending": True})
        assert await relay.prune(timedelta(days=1)) == 1
        assert await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 1
    finally:
        await consumer.stop()
        await producer.stop()
        await pool.close()


async def test_relay_builds_the_event_of_a_stub_written_by_sql(
    test_settings: Settings, pool: asyncpg.Pool
) -> None:
    """SQL that requeues writes only a stub; the relay sends the contract event built from the
    file's row (FileQueued.of_file) and keeps what it sent; a stub whose file is gone sends
    nothing."""
    producer = kafka.producer(test_settings)
    await producer.start()
    await kafka.ensure_topics(test_settings)
    consumer = AIOKafkaConsumer(
        kafka.topic(test_settings, topics.FILES),
        bootstrap_servers=test_settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    try:
        async with pool.acquire() as conn:
            user = await make_user(conn)
            job = await make_job(conn, user, status="queued")
            await conn.execute(
                "INSERT INTO outbox (topic, key, payload) "
                "SELECT $1, k, imuflow_file_queued_stub('requeue') FROM unnest(ARRAY[$2, $3]) AS k",
                topics.FILES,
                str(uuid.uuid4()),  # a file deleted since
                str(job),
            )
        assert await OutboxRelay(test_settings, pool, producer).publish_pending() == 1
        message = await asyncio.wait_for(consumer.getone(), 20)
        event = events.FILE_EVENT.validate_json(message.value)
        assert (event.file_id, event.user_id, event.reason, event.storage_uri) == (
            job,
            user,
            "requeue",
            f"file:///nowhere/{job}",
        )
        stored = await pool.fetch("SELECT payload, published_at FROM outbox ORDER BY id")
        assert all(row["published_at"] is not None for row in stored)
        assert stored[1]["payload"] == event.model_dump(mode="json")
    finally:
        await consumer.stop()
        await producer.stop()
