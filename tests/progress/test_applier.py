"""The progress consumer's scenarios, each on FastStream's in-memory broker and on the real one.

`memory` runs the handler through TestKafkaBroker (milliseconds, no broker); `real` runs the
same scenario through the subscriber on the session's Tansu broker, and checks that the
group's offsets are committed only once the events are applied. Postgres is real in both.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Protocol

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from faststream.kafka import KafkaBroker, TestKafkaBroker
from prometheus_client import REGISTRY

from contracts import events, topics
from imuflow import kafka
from imuflow.settings import Settings
from services.progress.applier import ProgressApplier
from tests.ops.jobs import make_job, make_user
from tests.waiting import until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


class Feed(Protocol):
    async def send(self, *values: bytes) -> None:
        """Deliver these records to the applier and return once it handled them all."""


class MemoryFeed:
    def __init__(self, broker: KafkaBroker, topic: str) -> None:
        self.broker, self.topic = broker, topic

    async def send(self, *values: bytes) -> None:
        # One poll of a batch subscriber; the handler has run when this returns.
        await self.broker.publish_batch(*values, topic=self.topic)


class RealFeed:
    def __init__(self, settings: Settings, broker: KafkaBroker) -> None:
        self.settings, self.broker = settings, broker
        self.topic = kafka.topic(settings, topics.PROGRESS)

    async def send(self, *values: bytes) -> None:
        for value in values:
            sent = await self.broker.publish(value, self.topic, key=b"k", partition=0)
            end: int = sent.offset + 1

        async def all_committed() -> bool:
            return await self.committed() >= end

        # The group's offset reaches the end only once the handler's transaction committed.
        await until(all_committed, "the applier committed every record")

    async def committed(self) -> int:
        """The progress group's committed offset of partition 0 (-1: none)."""
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            group_id=self.settings.progress_group_id,
            enable_auto_commit=False,
        )
        await reader.start()
        try:
            offset = await reader.committed(TopicPartition(self.topic, 0))
        finally:
            await reader.stop()
        return -1 if offset is None else int(offset)


@pytest.fixture(params=["memory", "real"])
async def feed(
    request: pytest.FixtureRequest, test_settings: Settings, pool: asyncpg.Pool
) -> AsyncIterator[Feed]:
    applier = ProgressApplier(test_settings, pool)
    if request.param == "memory":
        async with TestKafkaBroker(applier.broker) as broker:
            yield MemoryFeed(broker, kafka.topic(test_settings, topics.PROGRESS))
        return
    await kafka.ensure_topics(test_settings)
    sender = kafka.broker(test_settings)
    await sender.connect()
    stop = asyncio.Event()
    task = asyncio.create_task(applier.run(stop))
    try:
        yield RealFeed(test_settings, sender)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await sender.stop()


def progress(file_id: uuid.UUID, user_id: uuid.UUID, samples: int, batch: int = 1) -> events.BatchProgress:
    now = datetime.now(UTC)
    return events.BatchProgress(
        file_id=file_id,
        user_id=user_id,
        attempt=1,
        batch_number=batch,
        samples_in_batch=samples,
        total_samples_processed=samples,
        estimated_total_samples=10_000,
        bytes_processed=100 * batch,
        bytes_total=1000,
        batch_processing_time_ms=5.0,
        started_at=now,
        completed_at=now,
    )


async def displayed(pool: asyncpg.Pool, file_id: uuid.UUID) -> tuple[int, int]:
    row = await pool.fetchrow(
        "SELECT samples_processed, batch_number FROM imu_data_files WHERE id = $1", file_id
    )
    assert row is not None
    return row["samples_processed"], row["batch_number"]


async def test_progress_moves_forward_only(feed: Feed, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        job = await make_job(conn, user)
    await feed.send(events.encode(progress(job, user, 6000, batch=2)))
    assert await displayed(pool, job) == (6000, 2)
    # A duplicate and a straggler (an earlier batch, late) change nothing.
    await feed.send(
        events.encode(progress(job, user, 6000, batch=2)), events.encode(progress(job, user, 5500))
    )
    assert await displayed(pool, job) == (6000, 2)
    logged = await pool.fetchval("SELECT count(*) FROM streaming_processing_logs WHERE file_id = $1", job)
    assert logged == 2  # batches 1 and 2, once each
    if isinstance(feed, RealFeed):
        assert await feed.committed() == 3  # committed after the work, all of it


async def test_bad_records_are_skipped_and_the_rest_of_the_batch_applied(
    feed: Feed, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        job = await make_job(conn, user)
        theirs = await make_job(conn, await make_user(conn, "bob"))
    invalid_before = REGISTRY.get_sample_value("imuflow_progress_events_total", {"outcome": "invalid"}) or 0
    await feed.send(
        b"not json",
        events.encode(progress(theirs, user, 9000)),  # forged: another user's file
        events.encode(progress(job, user, 7000)),
    )
    assert await displayed(pool, job) == (7000, 1)
    assert (await displayed(pool, theirs))[0] == 0  # unmoved
    invalid = REGISTRY.get_sample_value("imuflow_progress_events_total", {"outcome": "invalid"}) or 0
    assert invalid - invalid_before == 2


async def test_an_event_the_database_rejects_does_not_hold_up_the_others(
    feed: Feed, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        job = await make_job(conn, user)
        other = await make_job(conn, user, filename="other.csv")
    poison = progress(job, user, 8000).model_copy(update={"batch_number": 2**40})  # beyond int4
    await feed.send(events.encode(poison), events.encode(progress(other, user, 4000)))
    assert await displayed(pool, other) == (4000, 1)
    assert (await displayed(pool, job))[0] == 0
