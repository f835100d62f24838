"""Poison outbox rows (SPEC §7 "Dead letters"): an event the broker can never take is set
aside with its error, never blocking later rows of other users; it is listed, counted and
replayable, and a file whose own job event it is ends failed with the reason."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any, cast

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError, NotLeaderForPartitionError
from prometheus_client.parser import text_string_to_metric_families

from contracts import topics
from imuflow import db, deadletters, kafka, metrics
from imuflow.outbox import OutboxRelay, enqueue
from services.ingest import repository as ingest_repository
from tests.e2e.helpers import bearer, make_token, upload
from tests.faults.helpers import FAST_JOB_ENV, synth_csv, wait_for, wait_terminal
from tests.ops.jobs import make_user
from tests.ops.receiver import WebhookReceiver
from tests.servers import SettingsFactory
from tests.stack import ServiceStack, StartStack

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(180)]
HUGE = 1_500_000  # characters of file name: an event no broker with a 1 MiB limit takes


async def record_poison_upload(pool: asyncpg.Pool, user_id: uuid.UUID, filename_chars: int) -> uuid.UUID:
    """A file row and its FileQueued outbox row, written by ingest's own repository in one
    transaction, with a name long enough to make the event too large to publish."""
    file_id = uuid.uuid4()
    new = ingest_repository.NewFile(
        id=file_id,
        user_id=user_id,
        filename="x" * filename_chars + ".csv",
        size_bytes=10,
        sha256=hashlib.sha256(file_id.bytes).hexdigest(),
        storage_uri=f"file:///nonexistent/{file_id}",
        format=None,
        sensor=None,
        timezone="UTC",
    )
    await ingest_repository.record_upload(pool, new)
    return file_id


async def dead_letter_count(urls: list[str]) -> float:
    """`imuflow_dead_letters_total{topic="files.v1", reason="too_large"}` summed over services."""
    total = 0.0
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        for url in urls:
            text = (await client.get(f"{url}/metrics")).text
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == "imuflow_dead_letters_total" and sample.labels == {
                        "topic": topics.FILES,
                        "reason": "too_large",
                    }:
                        total += sample.value
    return total


async def test_poison_row_is_set_aside_listed_counted_and_replayable(
    tmp_path: Path, service_stack: StartStack, settings_factory: SettingsFactory, database_url: str
) -> None:
    async with WebhookReceiver() as receiver:
        # STUCK_AFTER 20: the watchdog (which also sends the failure alerts) runs every 2 s.
        settings = settings_factory(alert_webhook_url=receiver.url, stuck_after=20.0)
        stack = await service_stack(settings, env=FAST_JOB_ENV)
        await poison_scenario(tmp_path, stack, database_url, receiver)


async def poison_scenario(
    tmp_path: Path, stack: ServiceStack, database_url: str, receiver: WebhookReceiver
) -> None:
    """A poison row ahead of another user's upload, then listing, metrics, alert, replay."""
    metric_urls = [stack.ingest_url, stack.progress_url, stack.parser_metrics_url]
    assert await dead_letter_count(metric_urls) == 0  # exported from process start
    pool = await db.create_pool(database_url)
    try:
        conn = await db.connect(database_url)
        try:
            mallory = await make_user(conn, "mallory")
        finally:
            await conn.close()
        poison = await record_poison_upload(pool, mallory, HUGE)
        # Another user's upload right behind it: published and parsed, not stuck behind it.
        alice = await make_token(database_url, "alice")
        response = await upload(stack.ingest_url, alice, synth_csv(tmp_path / "a.csv", 30_000))
        assert response.status_code == 202, response.text
        healthy = response.json()["id"]
        final = await wait_terminal(database_url, healthy, timeout=30)
        assert final.status == "completed" and final.samples == 30_000, final

        # The poison's own file ends failed, with the reason.
        failed = await wait_terminal(database_url, str(poison), timeout=10)
        assert failed.status == "failed", failed
        assert failed.error_message is not None
        assert "could not be published" in failed.error_message, failed
        assert "over the broker's limit" in failed.error_message, failed
        # Alerted like every failed job (the webhook's `job_failed`), with the reason.
        for _ in range(100):
            bodies = await receiver.when(lambda b: any(x["file_id"] == str(poison) for x in b))
            if bodies:
                break
            await asyncio.sleep(0.2)
        assert bodies, receiver.bodies
        alert = next(b for b in bodies if b["file_id"] == str(poison))
        assert alert["kind"] == "job_failed" and "could not be published" in json.dumps(alert), alert

        # Listed for operators (admin only), counted in the metric.
        admin = await make_token(database_url, "ops", admin=True)
        async with httpx.AsyncClient(base_url=stack.progress_url, timeout=10, trust_env=False) as client:
            assert (await client.get("/api/admin/dead-letters", headers=bearer(alice))).status_code == 403
            listing = (await client.get("/api/admin/dead-letters", headers=bearer(admin))).json()
            assert listing["total"] == 1, listing
            (row,) = listing["items"]
            assert row["key"] == str(poison) and row["topic"] == topics.FILES, row
            assert row["type"] == "file.queued" and row["payload_bytes"] > HUGE, row
            assert row["failed_file"] is True and row["file_status"] == "failed", row
            assert "over the broker's limit" in row["error"], row
            assert await dead_letter_count(metric_urls) == 1

            # Replayed: pending again and the file back to `uploaded`; still too large, so
            # a relay sets it aside again and the file fails again, with the reason.
            missing = await client.post("/api/admin/dead-letters/999999/replay", headers=bearer(admin))
            assert missing.status_code == 404, missing.text
            replay = await client.post(f"/api/admin/dead-letters/{row['id']}/replay", headers=bearer(admin))
            assert replay.status_code == 200, replay.text
            assert replay.json() == {"id": row["id"], "requeued_file": str(poison)}
            await wait_for(
                database_url,
                "SELECT replays = 1 AND dead_at IS NOT NULL FROM outbox WHERE id = $1",
                row["id"],
                timeout=10,
                what="the replayed row dead-lettered again",
            )
        again = await wait_terminal(database_url, str(poison), timeout=10)
        assert again.status == "failed" and "could not be published" in (again.error_message or ""), again
        assert await dead_letter_count(metric_urls) == 2
    finally:
        await pool.close()


async def test_replay_after_the_limit_is_raised_queues_the_file(settings_factory: SettingsFactory) -> None:
    """The cause fixed (a larger limit the broker accepts): the replayed event is published
    and the file it had failed is queued again. Relays run in-process here."""
    strict = settings_factory(kafka_max_message_bytes=8_192)
    relaxed = strict.model_copy(update={"kafka_max_message_bytes": 1_000_000})
    pool = await db.create_pool(strict.database_url)
    producer = kafka.producer(strict)
    await producer.start()
    await kafka.ensure_topics(strict)
    consumer = AIOKafkaConsumer(
        kafka.topic(strict, topics.FILES),
        bootstrap_servers=strict.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    try:
        conn = await db.connect(strict.database_url)
        try:
            bob = await make_user(conn, "bob")
        finally:
            await conn.close()
        poison = await record_poison_upload(pool, bob, 20_000)  # over 8 KiB, well under 1 MiB
        later = await record_poison_upload(pool, bob, 10)  # an ordinary event behind it
        before = metrics.DEAD_LETTERS.labels(topics.FILES, "too_large")._value.get()

        assert await OutboxRelay(strict, pool, producer).publish_pending() == 2
        assert metrics.DEAD_LETTERS.labels(topics.FILES, "too_large")._value.get() == before + 1
        assert (await status(pool, poison))["status"] == "failed"
        assert (await status(pool, later))["status"] == "queued"  # not blocked behind it
        message = await asyncio.wait_for(consumer.getone(), 20)
        assert message.key == str(later).encode()

        (row,) = await deadletters.list_dead(pool)
        assert await deadletters.count_dead(pool) == 1

        # Rows no event of the product would be (written by hand at a psql prompt): invalid.
        await pool.execute(
            "INSERT INTO outbox (topic, key, payload) VALUES ('nope.v1', $1, '{}'), ('files.v1', 'x', '{}')",
            str(later),
        )
        invalid = metrics.DEAD_LETTERS.labels(topics.FILES, "invalid")._value.get()
        assert await OutboxRelay(strict, pool, producer).publish_pending() == 2
        assert metrics.DEAD_LETTERS.labels(topics.FILES, "invalid")._value.get() == invalid + 1
        errors = await pool.fetch("SELECT last_error FROM outbox WHERE dead_at IS NOT NULL ORDER BY id")
        assert [e["last_error"] for e in errors][1:] == [
            "unknown topic 'nope.v1'",
            "key 'x' is not a file id",
        ]
        await pool.execute("DELETE FROM outbox WHERE id > $1 AND dead_at IS NOT NULL", row["id"])
        assert await deadletters.replay(pool, row["id"]) == {"id": row["id"], "requeued_file": poison}
        assert await deadletters.replay(pool, row["id"]) is None  # pending now, not a dead letter
        assert (await status(pool, poison))["status"] == "uploaded"

        assert await OutboxRelay(relaxed, pool, producer).publish_pending() == 1
        record = await status(pool, poison)
        assert record["status"] == "queued" and record["error_message"] is None, record
        message = await asyncio.wait_for(consumer.getone(), 20)
        assert message.key == str(poison).encode()
        assert json.loads(message.value)["filename"].startswith("xxx")
        assert await deadletters.count_dead(pool) == 0
    finally:
        await consumer.stop()
        await producer.stop()
        await pool.close()


class AwayBroker:
    """A producer whose broker is away: every send fails as aiokafka's does then."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.client = producer.client  # the relay's topic check still finds the topics

    async def send(self, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        raise KafkaTimeoutError("no metadata within the request timeout (broker away)")


class FlakyPartition:
    """The real producer, except that one key's sends fail with a retriable broker error."""

    def __init__(self, producer: AIOKafkaProducer, key: bytes) -> None:
        self.producer, self.key, self.client = producer, key, producer.client

    async def send(self, topic: str, *, value: bytes, key: bytes) -> asyncio.Future[Any]:
        if key != self.key:
            sent: asyncio.Future[Any] = await self.producer.send(topic, value=value, key=key)
            return sent
        failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        failed.set_exception(NotLeaderForPartitionError())
        return failed


class MissingTopic:
    """The real producer, except that sends to one topic fail at once (no metadata for it)."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer, self.topic, self.client = producer, topic, producer.client

    async def send(self, topic: str, *, value: bytes, key: bytes) -> asyncio.Future[Any]:
        if topic == self.topic:
            raise KafkaTimeoutError(f"no metadata for {topic} within the request timeout")
        sent: asyncio.Future[Any] = await self.producer.send(topic, value=value, key=key)
        return sent


async def test_transient_failures_are_retried_never_dead_lettered(settings_factory: SettingsFactory) -> None:
    """A broker that is away is not the message's fault: nothing is dead-lettered, the
    relay backs off; a row that fails alone waits its own backoff while the rows behind it
    are published."""
    settings = settings_factory()
    pool = await db.create_pool(settings.database_url)
    producer = kafka.producer(settings)
    await producer.start()
    await kafka.ensure_topics(settings)
    try:
        conn = await db.connect(settings.database_url)
        try:
            carol = await make_user(conn, "carol")
        finally:
            await conn.close()
        unlucky = await record_poison_upload(pool, carol, 10)
        behind = await record_poison_upload(pool, carol, 11)

        away = OutboxRelay(settings, pool, cast(AIOKafkaProducer, AwayBroker(producer)))
        with pytest.raises(KafkaError, match="broker took none"):
            await away.publish_pending()
        rows = await pool.fetch("SELECT failures, dead_at, published_at FROM outbox ORDER BY id")
        assert [(r["failures"], r["dead_at"], r["published_at"]) for r in rows] == [(0, None, None)] * 2

        flaky_producer = FlakyPartition(producer, str(unlucky).encode())
        flaky = OutboxRelay(settings, pool, cast(AIOKafkaProducer, flaky_producer))
        assert await flaky.publish_pending() == 2
        assert (await status(pool, behind))["status"] == "queued"  # not blocked behind it
        row = await pool.fetchrow(
            "SELECT failures, dead_at, published_at, retry_at > now() AS waits, last_error FROM outbox "
            "WHERE key = $1",
            str(unlucky),
        )
        assert row is not None and row["failures"] == 1 and row["waits"], dict(row)
        assert row["dead_at"] is None and row["published_at"] is None, dict(row)
        assert "NotLeaderForPartition" in row["last_error"], dict(row)
        assert await OutboxRelay(settings, pool, producer).publish_pending() == 0  # backing off

        await pool.execute("UPDATE outbox SET retry_at = now() WHERE key = $1", str(unlucky))
        assert await OutboxRelay(settings, pool, producer).publish_pending() == 1
        assert (await status(pool, unlucky))["status"] == "queued"

        # A topic the broker has no metadata for: its rows (tried once) wait their backoff,
        # a file event behind them is published.
        async with pool.acquire() as conn, conn.transaction():
            for n in range(3):
                await enqueue(conn, topics.PROGRESS, unlucky, {"n": n})
        last = await record_poison_upload(pool, carol, 12)
        missing = MissingTopic(producer, kafka.topic(settings, topics.PROGRESS))
        assert await OutboxRelay(settings, pool, cast(AIOKafkaProducer, missing)).publish_pending() == 4
        assert (await status(pool, last))["status"] == "queued"
        waiting = await pool.fetch(
            "SELECT failures, retry_at > now() AS waits FROM outbox WHERE topic = $1", topics.PROGRESS
        )
        assert [(r["failures"], r["waits"]) for r in waiting] == [(1, True)] * 3
        assert await deadletters.count_dead(pool) == 0
    finally:
        await producer.stop()
        await pool.close()


async def status(pool: asyncpg.Pool, file_id: uuid.UUID) -> dict[str, Any]:
    """Status and error of one file."""
    row = await pool.fetchrow("SELECT status, error_message FROM imu_data_files WHERE id = $1", file_id)
    assert row is not None
    return dict(row)
