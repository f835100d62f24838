"""The broker of `imuflow up --object-store` (Tansu with its log in S3) is SIGKILLed while a
file is being parsed and another waits in `queued`: restarted on the same port, it still
holds every message and every consumer group's committed offsets, so both jobs complete
exact with no requeue at all (no lost-event republish, no watchdog: STUCK_AFTER is an hour)
and no attempt spent, and every batch's progress event is applied."""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from contracts import topics
from imuflow import kafka
from imuflow.settings import Settings
from imuflow.stack.broker import SupervisedBroker, supervise_broker
from tests.e2e.helpers import make_token, upload
from tests.faults.helpers import (
    Stored,
    busy_and_queued,
    fetchval,
    kill,
    stored,
    synth_csv,
    wait_for,
    wait_restarted,
    wait_terminal,
)
from tests.objectstore import S3Server
from tests.servers import SettingsFactory
from tests.stack import StartStack
from tests.waiting import until

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(120)]
WARM_SAMPLES = 2_000  # completed before the kill: its offsets are committed
# 1,000 batches of 1,000: still parsing when the broker dies and when it is back. 100 batches
# were too few once the readers got faster (~190 batches/s here): the job could end in the
# second between its 5th checkpoint and the kill (the second upload and its queued status
# come in between) or during the broker's restart.
BUSY_SAMPLES = 1_000_000
QUEUED_SAMPLES = 5_000


@pytest.fixture
async def durable_broker(tmp_path: Path, s3_server: S3Server) -> AsyncIterator[SupervisedBroker]:
    """Tansu under its supervisor with its log in a bucket of its own, as `up --object-store` runs it."""
    storage = await s3_server.broker_storage("broker")
    broker = await supervise_broker(None, log_path=tmp_path / "broker.log", storage=storage)
    try:
        yield broker
    finally:
        await broker.stop()


async def committed(settings: Settings, group: str, base: str) -> dict[TopicPartition, int]:
    """The group's committed offsets on topic `base`, as the broker answers them now (those set).

    A consumer that never subscribes asks the group coordinator without joining the group.
    """
    name = kafka.topic(settings, base)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        offsets = {}
        for partition in range(settings.kafka_topic_partitions):
            tp = TopicPartition(name, partition)
            offset = await consumer.committed(tp)
            if offset is not None and offset >= 0:
                offsets[tp] = offset
    finally:
        await consumer.stop()
    return offsets


async def test_durable_broker_killed_mid_parse_loses_nothing(
    tmp_path: Path,
    durable_broker: SupervisedBroker,  # set up first, so it stops after the services
    settings_factory: SettingsFactory,
    service_stack: StartStack,
    database_url: str,
    s3_server: S3Server,
    s3_prefix: str,
) -> None:
    broker = durable_broker
    settings = settings_factory(
        kafka_bootstrap_servers=broker.bootstrap_servers,
        stuck_after=3600.0,  # the watchdog cannot be what saves a job here
        **s3_server.settings(s3_prefix),
    )
    env = {
        "IMUFLOW_BATCH_SIZE": "1000",
        "IMUFLOW_ADAPTIVE_BATCHING": "false",
        "IMUFLOW_PARSER_CONCURRENCY": "1",
    }
    stack = await service_stack(settings, env=env)
    token = await make_token(database_url, "alice")

    # One job through first: both consumer groups have committed offsets before the kill.
    response = await upload(stack.ingest_url, token, synth_csv(tmp_path / "warm.csv", WARM_SAMPLES))
    assert response.status_code == 202, response.text
    warm = response.json()["id"]
    assert (await wait_terminal(database_url, warm, timeout=40)).status == "completed"
    await wait_for(
        database_url,
        "SELECT count(*) = $2 FROM streaming_processing_logs WHERE file_id = $1::uuid",
        warm,
        (await stored(database_url, warm)).resume_batch_number,
        timeout=20,
        what="the warm-up's batch log",
    )
    groups = ((settings.parser_group_id, topics.FILES), (settings.progress_group_id, topics.PROGRESS))

    async def every_group_committed() -> list[dict[TopicPartition, int]] | None:
        offsets = [await committed(settings, *g) for g in groups]
        return offsets if all(offsets) else None

    before = await until(every_group_committed, "committed offsets of both groups", within=20, every=0.5)

    busy, queued = await busy_and_queued(
        stack.ingest_url, database_url, token, tmp_path, (BUSY_SAMPLES, QUEUED_SAMPLES), checkpoint_within=40
    )

    old_pid = broker.pid
    assert old_pid is not None
    at_kill = await stored(database_url, busy)
    assert at_kill.status == "parsing" and at_kill.resume_samples < BUSY_SAMPLES // 2, at_kill
    kill(old_pid, signal.SIGKILL)
    killed = time.monotonic()
    await wait_restarted(broker.supervisor, "broker", old_pid, timeout=30)
    await broker.supervisor.wait_healthy(within=30, interval=0.1)
    print(f"broker back {time.monotonic() - killed:.2f} s after its SIGKILL")
    back, back_at = await stored(database_url, busy), time.monotonic()
    # Restarted mid-parse: the busy job was still running when the broker came back.
    assert back.status == "parsing" and back.resume_samples < BUSY_SAMPLES, back

    # What the old broker had committed is still there (a memory broker would answer none).
    after = [await committed(settings, *g) for g in groups]
    for group, old, new in zip(groups, before, after, strict=True):
        for tp, offset in old.items():
            assert new.get(tp, -1) >= offset, (group, tp, old, new)

    # The busy job must move on after the restart, at whatever rate the machine allows
    # (a loaded CI machine parses it several times slower): the wait for its end is bounded
    # by that measured rate, so a job that stopped fails here and a slow one is waited for.
    moved = await until(
        partial(_moved_past, database_url, busy, back.resume_samples),
        "the busy job to move on after the broker's restart",
        within=30,
        every=0.5,
    )
    rate = (moved.resume_samples - back.resume_samples) / (time.monotonic() - back_at)
    remaining = (BUSY_SAMPLES - moved.resume_samples + QUEUED_SAMPLES) / max(rate, 1.0)
    print(f"after the restart: {rate:,.0f} samples/s, about {remaining:.0f} s left")
    for file_id, samples in ((busy, BUSY_SAMPLES), (queued, QUEUED_SAMPLES)):
        final = await wait_terminal(database_url, file_id, timeout=3 * remaining + 30)
        print(f"{samples} samples completed {time.monotonic() - killed:.2f} s after the kill")
        assert final.status == "completed", final
        assert (final.samples, final.distinct) == (samples, samples), final
        assert final.attempts == 1, final  # never requeued or redelivered to a new attempt
        await wait_for(
            database_url,
            "SELECT count(*) = $2 AND count(DISTINCT batch_number) = $2 "
            "FROM streaming_processing_logs WHERE file_id = $1::uuid",
            file_id,
            final.resume_batch_number,
            timeout=20,
            what=f"the complete batch log of {file_id}",
        )
    # Nothing needed saving: no lost-event republish and no watchdog requeue, of any file.
    requeues = "SELECT count(*) FROM outbox WHERE payload->>'reason' = 'requeue'"
    assert await fetchval(database_url, requeues) == 0
    assert broker.supervisor.services["broker"].starts >= 2


async def _moved_past(database_url: str, file_id: str, samples: int) -> Stored | None:
    """The file's state once its checkpoint is past `samples` (None before)."""
    now = await stored(database_url, file_id)
    return now if now.resume_samples > samples or now.status != "parsing" else None
