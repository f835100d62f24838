"""The outbox relay's scenario on FastStream's in-memory broker and on the real one.

The relay sends through the services' producer (FastStream publishers, imuflow/producer.py)
and a FastStream subscriber on the same broker receives. `memory` wraps that broker in
TestKafkaBroker: delivered at once, and it places nothing (its publish returns no
RecordMetadata), so the relay records the rows published with no partition or offset and
raises no `outbox_marks`. `real` runs the same scenario on the session's Tansu broker, where
the relay records where each file-job event went, as read back by the subscriber. Postgres
is real in both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

import asyncpg
import pytest
from aiokafka import ConsumerRecord
from faststream.kafka import TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage

from contracts import events, topics
from imuflow import kafka
from imuflow.outbox import OutboxRelay, enqueue
from imuflow.producer import FastStreamProducer
from imuflow.settings import Settings
from tests.ops.jobs import make_job, make_user
from tests.waiting import until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@dataclass
class Rig:
    """The relay's producer, what a subscriber on its broker received, and which broker."""

    producer: FastStreamProducer
    memory: bool
    received: list[KafkaMessage] = field(default_factory=list)

    def relay(self, settings: Settings, pool: asyncpg.Pool) -> OutboxRelay:
        # The in-memory broker has no metadata and loses no topic: nothing to check there.
        return OutboxRelay(settings, pool, self.producer, checks_topics=not self.memory)


def record(message: KafkaMessage) -> ConsumerRecord:
    """The aiokafka record under a FastStream message (one, the subscriber is not batched)."""
    return cast(ConsumerRecord, message.raw_message)


@pytest.fixture(params=["memory", "real"])
async def rig(request: pytest.FixtureRequest, test_settings: Settings) -> AsyncIterator[Rig]:
    producer = kafka.producer(test_settings)
    rig = Rig(producer, memory=request.param == "memory")

    async def receive(message: KafkaMessage) -> None:
        rig.received.append(message)

    producer.broker.subscriber(
        kafka.topic(test_settings, topics.FILES),
        kafka.topic(test_settings, topics.PROGRESS),
        auto_offset_reset="earliest",
    )(receive)
    if rig.memory:
        async with TestKafkaBroker(producer.broker):
            yield rig
        return
    await kafka.ensure_topics(test_settings)
    await producer.start()
    await producer.broker.start()  # its subscriber too
    try:
        yield rig
    finally:
        await producer.stop()


async def test_relay_publishes_through_faststream_and_records_where(
    rig: Rig, test_settings: Settings, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        job = await make_job(conn, user, status="uploaded")
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO outbox (topic, key, payload) "
                "VALUES ($1, $2, imuflow_file_queued_stub('upload'))",
                topics.FILES,
                str(job),
            )
            await enqueue(conn, topics.PROGRESS, job, {"hello": "world"})
    assert await rig.relay(test_settings, pool).publish_pending() == 2

    async def both() -> bool:
        return len(rig.received) == 2

    await until(both, "the subscriber received both events")
    by_topic = {record(m).topic: m for m in rig.received}
    file_message = by_topic[kafka.topic(test_settings, topics.FILES)]
    event = events.FILE_EVENT.validate_json(file_message.body)
    assert (event.file_id, event.user_id, event.reason) == (job, user, "upload")
    assert record(file_message).key == str(job).encode()
    assert file_message.content_type == "application/json"
    assert by_topic[kafka.topic(test_settings, topics.PROGRESS)].body == b'{"hello":"world"}'

    rows = await pool.fetch(
        "SELECT topic, published_at, kafka_partition, kafka_offset FROM outbox ORDER BY id"
    )
    assert all(row["published_at"] is not None for row in rows)
    assert await pool.fetchval("SELECT status FROM imu_data_files WHERE id = $1", job) == "queued"
    placed = (rows[0]["kafka_partition"], rows[0]["kafka_offset"])
    marks = await pool.fetch("SELECT partition, next_offset FROM outbox_marks")
    if rig.memory:
        assert placed == (None, None) and marks == []
    else:
        sent = record(file_message)
        assert placed == (sent.partition, sent.offset)
        assert [(m["partition"], m["next_offset"]) for m in marks] == [(sent.partition, sent.offset + 1)]
    assert rows[1]["kafka_partition"] is None  # only file-job events are placed
    assert await rig.relay(test_settings, pool).publish_pending() == 0
