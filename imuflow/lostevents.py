"""Notice that the broker lost file-job events, and republish the lost ones.

Tansu keeps everything in memory, so a restarted embedded broker has forgotten every
message; a Kafka cluster can lose a topic (deleted and re-created, a wiped cluster). A file
in `queued` whose event was already relayed then waits for nobody. The relays record in
Postgres a floor of each file-job partition's end offset (`outbox_marks`: what the end
offset must have reached after their last send) and where each file-job event went. An
end offset below its floor means messages are gone. Every service runs this check (`run`);
the first to see a loss (one at a time: an advisory lock) republishes, through the outbox,
the `FileQueued` event of every `queued` file whose event the broker no longer holds
(since the loss it holds the last `end offset` events published to a partition, so an
upload relayed after the restart is not sent twice; Tansu, whose end offset counts record
batches, may hold more: such an event is sent twice, never lost) and takes what the broker
holds now as the new baseline. `parsing` jobs are left alone: their parsers keep working
without the message, and a duplicate delivery would cost an attempt.

Marks are read before the end offsets are fetched, so a message published in between can
only raise an end offset, never fake a loss.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from contracts import topics
from imuflow import db, dberrors, kafka
from imuflow.aio import unless_stopped, wait_any
from imuflow.logs import fields
from imuflow.producer import Producer
from imuflow.settings import Settings

log = logging.getLogger(__name__)
QUERIES = db.load_queries(Path(__file__).parent / "sql" / "outbox.sql")
CHECK_SECONDS = 5.0
KAFKA_TIMEOUT = 5.0
MISSING_CONFIRM_SECONDS = 2.0
# Reading queued events back: those published at least this long ago, a few per round, each
# read within READ_TIMEOUT; one read back fine is not read again for VERIFIED_FOR.
VERIFY_AFTER_SECONDS = 8.0
VERIFY_LIMIT = 5
READ_TIMEOUT = 3.0
VERIFIED_FOR = 60.0


class LostEventCheck:
    """Compares the broker's end offsets of the file-job topic with the relays' marks."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, producer: Producer) -> None:
        self.settings = settings
        self.pool = pool
        self.producer = producer
        self.topic = kafka.topic(settings, topics.FILES)
        self._next = 0.0
        self._consumer: AIOKafkaConsumer | None = None
        self._missing_since: float | None = None  # when marked partitions were first missing
        self._verified: dict[str, float] = {}  # file id -> when its event was read back fine

    async def run(self, stop: asyncio.Event) -> None:
        """Check every CHECK_SECONDS until `stop` is set (requeued events wake the relays)."""
        try:
            while not stop.is_set():
                self._next = time.monotonic() + CHECK_SECONDS
                try:
                    # Broker calls of up to KAFKA_TIMEOUT each: given up at the stop.
                    await unless_stopped(stop, self._look())
                except (KafkaError, *dberrors.DRIVER) as exc:
                    log.debug("lost-event check skipped (broker or database away): %r", exc)
                except Exception:  # best effort: a failed look must not stop the service
                    log.warning("lost-event check failed", exc_info=True)
                await wait_any(stop, timeout=max(0.0, self._next - time.monotonic()))
        finally:
            await self.close()

    async def _look(self) -> None:
        await self.check()
        await self.verify_queued()

    async def check(self) -> bool:
        """Requeue the `queued` files if the broker holds fewer file events than it took."""
        rows = await self.pool.fetch(QUERIES["marks"], self.topic)
        marks = {int(r["partition"]): int(r["next_offset"]) for r in rows}
        if not marks:
            return False
        ends = await self._end_offsets()
        behind = {p: m for p, m in marks.items() if ends.get(p, 0) < m}
        if not behind:
            self._missing_since = None
            return False
        if any(p not in ends for p in behind):
            # A missing topic or partition may be a metadata hiccup of a live cluster: create
            # what is missing, and let the next check (with real end offsets) decide.
            await self._recreate_topics()
            if not await self._confirm_missing():
                return False
        summary = ", ".join(f"partition {p}: {ends.get(p, 0)} < {m}" for p, m in sorted(behind.items()))
        why = f"requeued: the broker lost this job's event (end offsets below what it took: {summary})"
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(QUERIES["lock_marks"])
            rows = await conn.fetch(QUERIES["marks"], self.topic)
            now = {int(r["partition"]): int(r["next_offset"]) for r in rows}
            if not any(now.get(p) == m for p, m in behind.items()):
                return False  # another relay saw it first and reset the marks
            partitions = sorted(ends)
            offsets = [ends[p] for p in partitions]
            requeued = await conn.fetch(QUERIES["requeue_queued"], topics.FILES, why, partitions, offsets)
            await conn.execute(QUERIES["clear_marks"], self.topic)
            await conn.execute(QUERIES["reset_marks"], self.topic, partitions, offsets)
        self._missing_since = None
        log.warning(
            "the broker lost file events; requeued the queued files",
            extra=fields(action="lost_events", topic=self.topic, requeued=len(requeued), behind=summary),
        )
        return bool(requeued)

    async def verify_queued(self) -> int:
        """Read back the events of files queued a while; requeue those the broker cannot
        serve. Tansu acknowledges a message sent to a topic it lost (a producer with old
        metadata, just after a restart) and then never delivers it, while its end offset
        counts it: only reading it back tells."""
        now = time.monotonic()
        self._verified = {k: t for k, t in self._verified.items() if now - t < VERIFIED_FOR}
        async with self.pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval(QUERIES["try_verify_lock"]):
                return 0  # another service reads them back this round
            rows = await conn.fetch(
                QUERIES["queued_to_verify"],
                topics.FILES,
                VERIFY_AFTER_SECONDS,
                VERIFY_LIMIT + len(self._verified),
            )
            todo = [r for r in rows if r["key"] not in self._verified][:VERIFY_LIMIT]
            lost: list[str] = []
            for row in todo:
                if row["kafka_partition"] is not None and await self._readable(
                    row["kafka_partition"], row["kafka_offset"], row["key"]
                ):
                    self._verified[row["key"]] = time.monotonic()
                else:
                    lost.append(row["key"])
            if not lost:
                return 0
            why = "requeued: the broker acknowledged this job's event but cannot deliver it"
            requeued = await conn.fetch(QUERIES["requeue_files"], topics.FILES, why, lost)
        log.warning(
            "queued events the broker cannot deliver; requeued their files",
            extra=fields(action="lost_events", topic=self.topic, requeued=len(requeued), files=lost),
        )
        return len(requeued)

    async def _readable(self, partition: int, offset: int, key: str) -> bool:
        """True when the broker serves the message at (partition, offset) with this key."""
        consumer = await self._offsets_client()
        tp = TopicPartition(self.topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        try:
            batch = await consumer.getmany(tp, timeout_ms=int(READ_TIMEOUT * 1000), max_records=1)
        except KafkaError:
            return False
        return any(r.offset == offset and r.key == key.encode() for r in batch.get(tp, []))

    async def _confirm_missing(self) -> bool:
        """True once partitions with marks were missing for MISSING_CONFIRM_SECONDS."""
        now = time.monotonic()
        if self._missing_since is None:
            self._missing_since = now
            self._next = now + MISSING_CONFIRM_SECONDS  # look again soon
            return False
        return now - self._missing_since >= MISSING_CONFIRM_SECONDS

    async def _end_offsets(self) -> dict[int, int]:
        """End offset of each partition of the topic; {} when the topic is gone."""
        cluster = await asyncio.wait_for(self.producer.client.fetch_all_metadata(), KAFKA_TIMEOUT)
        partitions = cluster.partitions_for_topic(self.topic)
        if not partitions:
            return {}
        consumer = await self._offsets_client()
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        offsets = await asyncio.wait_for(consumer.end_offsets(tps), KAFKA_TIMEOUT)
        return {tp.partition: int(offset) for tp, offset in offsets.items()}

    async def _offsets_client(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.settings.kafka_bootstrap_servers, enable_auto_commit=False
            )
            try:
                await asyncio.wait_for(consumer.start(), KAFKA_TIMEOUT)
            except BaseException:
                await consumer.stop()
                raise
            self._consumer = consumer
        return self._consumer

    async def _recreate_topics(self) -> None:
        # The requeued events cannot be sent before the topic exists again; the topic keeper
        # would get there within its period, this gets there now.
        try:
            await asyncio.wait_for(kafka.ensure_topics(self.settings), KAFKA_TIMEOUT * 2)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("could not re-create the topics: %r", exc)

    async def close(self) -> None:
        """Stop the offsets client."""
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
