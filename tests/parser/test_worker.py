"""The parser worker's consumer logic (services/parser/worker.py), each scenario twice.

`memory` gives the worker an in-memory consumer (tests/parser/memory_consumer.py: no broker,
well under a second); `real` gives it the group consumer on the session's Tansu broker, and
a rebalance is a second member joining the group. The jobs are scripted (they run until the
test releases them, or until the worker abandons them), so what is tested is the worker's
own part: a busy partition paused while the others are fetched, a message whose handling
crashed fetched again, the jobs of partitions a rebalance took away abandoned and the others
kept, and an offset committed only once its job is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Protocol, cast

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from faststream.kafka import KafkaBroker

from contracts import topics
from imuflow import kafka
from imuflow.aio import wait_any
from imuflow.producer import Producer
from imuflow.settings import Settings
from services.parser import worker as worker_module
from services.parser.job import Outcome
from services.parser.repository import ParserRepository
from services.parser.worker import ConsumerFactory, ParserWorker
from tests.parser.memory_consumer import MemoryConsumer
from tests.servers import SettingsFactory
from tests.waiting import until

pytestmark = [pytest.mark.timeout(90)]
PARTITIONS = 4


class ScriptedWorker(ParserWorker):
    """The real worker with scripted jobs: each runs until released or abandoned.

    It never builds a FileJob, so it has no repository or producer."""

    def __init__(self, settings: Settings, consumer_factory: ConsumerFactory) -> None:
        no_repo, no_producer = cast(ParserRepository, None), cast(Producer, None)
        super().__init__(settings, no_repo, no_producer, consumer_factory)
        self.started: list[bytes] = []
        self.abandoned: list[bytes] = []
        self.crash_once: set[bytes] = set()
        self.release: defaultdict[bytes, asyncio.Event] = defaultdict(asyncio.Event)

    async def _handle(self, record: ConsumerRecord[bytes, bytes], abandon: asyncio.Event) -> Outcome:
        value = record.value
        assert value is not None
        self.started.append(value)
        if value in self.crash_once:
            self.crash_once.discard(value)
            raise RuntimeError("the handling crashed outside the job's own error handling")
        await wait_any(self.release[value], abandon, timeout=60)
        if abandon.is_set():
            self.abandoned.append(value)
            return Outcome.ABANDONED
        return Outcome.DONE


class Rig(Protocol):
    """A consumer group the worker is a member of, on one broker or the other."""

    settings: Settings

    def consumer_factory(self) -> ConsumerFactory: ...

    async def send(self, partition: int, value: bytes) -> int:
        """Append a record to a partition; return its offset."""

    async def committed(self, partition: int) -> int:
        """The group's committed offset of a partition (-1: none)."""

    async def take_partitions(self, worker: ParserWorker) -> set[int]:
        """Move some partitions to another member; return the partitions the worker keeps."""


class MemoryRig:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.consumer = MemoryConsumer(kafka.topic(settings, topics.FILES), PARTITIONS)

    def consumer_factory(self) -> ConsumerFactory:
        return lambda: cast(AIOKafkaConsumer, self.consumer)

    async def send(self, partition: int, value: bytes) -> int:
        return self.consumer.append(partition, value)

    async def committed(self, partition: int) -> int:
        return self.consumer.committed.get(self.consumer.partitions[partition], -1)

    async def take_partitions(self, worker: ParserWorker) -> set[int]:
        kept = {0, 2}  # what the round-robin assignor leaves the first of two members
        await self.consumer.rebalance({self.consumer.partitions[p] for p in kept})
        return kept


class RealRig:
    def __init__(self, settings: Settings, broker: KafkaBroker) -> None:
        self.settings, self.broker = settings, broker
        self.topic = kafka.topic(settings, topics.FILES)
        self.others: list[tuple[AIOKafkaConsumer, asyncio.Task[None]]] = []

    def consumer_factory(self) -> ConsumerFactory:
        return partial(kafka.consumer, self.settings, self.settings.parser_group_id)

    async def send(self, partition: int, value: bytes) -> int:
        sent = await self.broker.publish(value, self.topic, partition=partition)
        return int(sent.offset)

    async def committed(self, partition: int) -> int:
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            group_id=self.settings.parser_group_id,
            enable_auto_commit=False,
        )
        await reader.start()
        try:
            offset = await reader.committed(TopicPartition(self.topic, partition))
        finally:
            await reader.stop()
        return -1 if offset is None else int(offset)

    async def take_partitions(self, worker: ParserWorker) -> set[int]:
        other = kafka.consumer(self.settings, self.settings.parser_group_id, topics.FILES)
        await other.start()

        async def poll() -> None:  # a member must poll to join and stay
            while True:
                await other.getmany(timeout_ms=200)

        self.others.append((other, asyncio.create_task(poll())))

        async def shared() -> bool:
            assert worker.consumer is not None
            mine, theirs = worker.consumer.assignment(), other.assignment()
            return bool(mine) and bool(theirs) and not mine & theirs

        await until(shared, "the second member has its partitions", within=40)
        assert worker.consumer is not None
        return {tp.partition for tp in worker.consumer.assignment()}

    async def close(self) -> None:
        for other, task in self.others:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await other.stop()


@pytest.fixture(params=["memory", pytest.param("real", marks=pytest.mark.integration)])
def rig(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Rig:
    """The scenario's consumer group: in memory, or on the real broker."""
    monkeypatch.setattr(worker_module, "FAILED_WORKER_PAUSE", 0.1)
    chosen: Rig = request.getfixturevalue(f"{request.param}_rig")
    return chosen


@pytest.fixture
def memory_rig(monkeypatch: pytest.MonkeyPatch) -> MemoryRig:
    for key in [k for k in os.environ if k.startswith("IMUFLOW_")]:  # a developer's shell
        monkeypatch.delenv(key)
    return MemoryRig(Settings(kafka_topic_prefix="memory.", parser_concurrency=3, stop_grace=2.0))


@pytest.fixture
async def real_rig(settings_factory: SettingsFactory) -> AsyncIterator[RealRig]:
    settings = settings_factory(kafka_topic_partitions=PARTITIONS, parser_concurrency=3, stop_grace=2.0)
    await kafka.ensure_topics(settings)
    broker = kafka.broker(settings)
    await broker.connect()
    real = RealRig(settings, broker)
    try:
        yield real
    finally:
        await real.close()
        await broker.stop()


@contextlib.asynccontextmanager
async def running(rig: Rig) -> AsyncIterator[ScriptedWorker]:
    """A scripted worker consuming until the block ends (then stopped, its jobs abandoned)."""
    worker = ScriptedWorker(rig.settings, rig.consumer_factory())
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def started(worker: ScriptedWorker, *values: bytes) -> Callable[[], Awaitable[bool]]:
    async def condition() -> bool:
        return all(v in worker.started for v in values)

    return condition


async def test_a_busy_partition_waits_while_the_others_are_fetched(rig: Rig) -> None:
    async with running(rig) as worker:
        await rig.send(0, b"a")
        await rig.send(1, b"c")
        await until(started(worker, b"a", b"c"), "jobs a and c started")
        b = await rig.send(0, b"b")  # behind a, on its paused partition
        await rig.send(2, b"d")  # a free slot and a free partition
        await until(started(worker, b"d"), "job d started beside a and c")
        assert b"b" not in worker.started
        assert await rig.committed(0) == -1  # a is not done: nothing committed on its partition

        worker.release[b"a"].set()
        await until(started(worker, b"b"), "job b started once a was done")
        for value in (b"b", b"c", b"d"):
            worker.release[value].set()

        async def all_committed() -> bool:
            return await rig.committed(0) == b + 1 and await rig.committed(1) == 1

        await until(all_committed, "every finished job's offset committed", within=30)
    assert worker.started.count(b"a") == 1 and worker.abandoned == []


async def test_a_message_whose_handling_crashed_is_fetched_again(rig: Rig) -> None:
    async with running(rig) as worker:
        worker.crash_once.add(b"a")
        a = await rig.send(3, b"a")

        async def twice() -> bool:
            return worker.started.count(b"a") == 2

        await until(twice, "the crashed message fetched again")
        worker.release[b"a"].set()

        async def committed() -> bool:
            return await rig.committed(3) == a + 1

        await until(committed, "its offset committed once done", within=30)


async def test_a_rebalance_abandons_the_jobs_it_moved_and_keeps_the_others(rig: Rig) -> None:
    async with running(rig) as worker:
        await rig.send(0, b"first")
        await rig.send(3, b"last")  # two members split 0 and 3 under either assignor
        await until(started(worker, b"first", b"last"), "both jobs started")
        kept = await rig.take_partitions(worker)
        moved = {0: b"first", 3: b"last"}
        assert len({p for p in moved if p in kept}) == 1, kept

        async def abandoned() -> bool:
            return [v for p, v in moved.items() if p not in kept] == worker.abandoned

        await until(abandoned, "the moved partition's job abandoned")
        (stays,) = [v for p, v in moved.items() if p in kept]
        worker.release[stays].set()
        (partition,) = [p for p, v in moved.items() if v == stays]

        async def committed() -> bool:
            return await rig.committed(partition) == 1

        await until(committed, "the kept job committed", within=30)
    assert worker.started.count(stays) == 1  # its message was not handed out again


async def test_the_job_consumer_waits_longer_per_fetch_than_the_progress_consumers() -> None:
    # An idle parser polling the embedded broker every 10 ms cost ~7% of a core (and the
    # broker as much again); a job may start 100 ms later instead.
    settings = Settings(kafka_fetch_max_wait_ms=10, kafka_job_fetch_max_wait_ms=100)
    consumer = ParserWorker(settings, cast(ParserRepository, None), cast(Producer, None)).consumer_factory()
    assert consumer._fetch_max_wait_ms == 100
    assert kafka.consumer(settings, "any")._fetch_max_wait_ms == 10
