"""The relays notice that the broker lost file-job events (here: the topic deleted and
re-created, as on a real Kafka cluster) and republish exactly the lost `queued` ones."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from contracts import topics
from imuflow import db, kafka
from imuflow.lostevents import LostEventCheck
from imuflow.outbox import OutboxRelay
from imuflow.settings import Settings
from services.ingest import repository as ingest_repository
from tests.ops.jobs import make_user

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


async def upload_row(pool: asyncpg.Pool, user_id: uuid.UUID) -> uuid.UUID:
    """A file and its FileQueued outbox row, as ingest records an upload."""
    file_id = uuid.uuid4()
    await ingest_repository.record_upload(
        pool,
        ingest_repository.NewFile(
            id=file_id,
            user_id=user_id,
            filename="f.csv",
            size_bytes=10,
            sha256=hashlib.sha256(file_id.bytes).hexdigest(),
            storage_uri=f"file:///nonexistent/{file_id}",
            format=None,
            sensor=None,
            timezone="UTC",
        ),
    )
    return file_id


async def requeues(pool: asyncpg.Pool, file_id: uuid.UUID) -> int:
    """FileQueued events with reason `requeue` written for the file."""
    count: int = await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE key = $1 AND payload->>'reason' = 'requeue'", str(file_id)
    )
    return count


async def test_lost_topic_requeues_only_the_lost_queued_files(test_settings: Settings) -> None:
    settings = test_settings
    pool = await db.create_pool(settings.database_url)
    producer = kafka.producer(settings)
    await producer.start()
    await kafka.ensure_topics(settings)
    relay = OutboxRelay(settings, pool, producer)
    check = LostEventCheck(settings, pool, producer)
    try:
        conn = await db.connect(settings.database_url)
        try:
            frank = await make_user(conn, "frank")
        finally:
            await conn.close()
        before = [await upload_row(pool, frank) for _ in range(6)]
        assert await relay.publish_pending() == 6
        running = before[0]  # a parser claimed it: it keeps working without the message
        await pool.execute("UPDATE imu_data_files SET status = 'parsing' WHERE id = $1", running)
        assert await check.check() is False  # nothing lost yet

        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
        await admin.start()
        try:
            await admin.delete_topics([kafka.topic(settings, topics.FILES)])
            for _ in range(50):
                if kafka.topic(settings, topics.FILES) not in await admin.list_topics():
                    break
                await asyncio.sleep(0.1)
        finally:
            await admin.close()
        await kafka.ensure_topics(settings)
        # Relayed after the loss: on the new topic, so it must not be sent twice.
        after = await upload_row(pool, frank)
        for _ in range(50):
            try:
                if await relay.publish_pending() == 1:
                    break
            except Exception:  # the producer's metadata may still name the old topic
                await asyncio.sleep(0.1)
        assert await pool.fetchval("SELECT status FROM imu_data_files WHERE id = $1", after) == "queued"

        assert await check.check() is True
        for file_id in before[1:]:
            assert await requeues(pool, file_id) == 1, file_id
        assert await requeues(pool, running) == 0
        assert await requeues(pool, after) == 0
        assert await check.check() is False  # the new baseline: not requeued again
        assert await relay.publish_pending() == 5  # the requeued events go out
        assert await check.check() is False
    finally:
        await check.close()
        await producer.stop()
        await pool.close()


async def test_a_missing_topic_is_recreated_before_anything_is_requeued(test_settings: Settings) -> None:
    """A topic missing from the metadata may be a hiccup of a live cluster: the check creates
    it and decides on the next look, with real end offsets."""
    settings = test_settings
    pool = await db.create_pool(settings.database_url)
    producer = kafka.producer(settings)
    await producer.start()
    await kafka.ensure_topics(settings)
    check = LostEventCheck(settings, pool, producer)
    try:
        conn = await db.connect(settings.database_url)
        try:
            gina = await make_user(conn, "gina")
        finally:
            await conn.close()
        queued = await upload_row(pool, gina)
        assert await OutboxRelay(settings, pool, producer).publish_pending() == 1
        name = kafka.topic(settings, topics.FILES)
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
        await admin.start()
        try:
            await admin.delete_topics([name])
            for _ in range(50):
                if name not in await admin.list_topics():
                    break
                await asyncio.sleep(0.1)
            assert await check.check() is False  # missing: created again, not acted on yet
            assert name in await admin.list_topics()
        finally:
            await admin.close()
        assert await requeues(pool, queued) == 0
        assert await check.check() is True  # now its end offsets are below the marks
        assert await requeues(pool, queued) == 1
    finally:
        await check.close()
        await producer.stop()
        await pool.close()
