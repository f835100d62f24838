"""The parser's consumer loop: a Kafka group member that works on files in the background.

Parsing a file can take minutes, far longer than a consumer may go without polling.
So a partition with a job in progress is paused, the loop keeps polling (heartbeats and
group membership stay healthy), and the job's offset is committed only once the job is
done (at-least-once delivery). A crashed worker's uncommitted message is delivered to
another member, which resumes from the Postgres checkpoint; a fencing token (the
claim's lease) keeps a slow former owner from writing.

A paused partition holds up every later message of it, so a slot must always come free:
a job checks on a timer that it is still its own (a hung reader is left behind in its
thread once the watchdog requeued the job), and a job that has run its fair-share slice
yields at a batch boundary when another user's work waits (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from aiokafka import (
    AIOKafkaConsumer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from contracts import events, topics
from imuflow import kafka, retrying
from imuflow.aio import wait_any
from imuflow.logs import context, fields
from imuflow.producer import Producer
from imuflow.settings import Settings
from services.parser.job import FileJob, Outcome
from services.parser.repository import ParserRepository

log = logging.getLogger("imuflow.parser")
FAILED_WORKER_PAUSE = 5.0  # seconds before a message whose handling crashed is fetched again
# Fair share defers a job (back of its partition) while another user's work waits. When
# that work is out of this worker's reach (another parser's busy partition, a lost event)
# every message fetched here is deferred: past this many in a row, pause between them.
DEFER_RUN = 16
DEFER_PAUSE = 1.0


@dataclass
class _Slot:
    """The messages of one partition being worked on, in order."""

    records: list[ConsumerRecord]
    abandon: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


# Makes the (not started) group consumer the worker subscribes, polls, pauses and commits
# through: the real one in production, an in-memory fake in tests/parser/test_worker.py.
ConsumerFactory = Callable[[], AIOKafkaConsumer]


class ParserWorker:
    """Consumes file events and runs up to `parser_concurrency` jobs at once."""

    def __init__(
        self,
        settings: Settings,
        repo: ParserRepository,
        producer: Producer,
        consumer_factory: ConsumerFactory | None = None,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.producer = producer
        group = settings.parser_group_id
        self.consumer_factory = consumer_factory or partial(
            kafka.consumer, settings, group, fetch_max_wait_ms=settings.kafka_job_fetch_max_wait_ms
        )
        self.consumer: AIOKafkaConsumer | None = None
        self._slots: dict[TopicPartition, _Slot] = {}
        self._freed = asyncio.Event()
        self._yields_in_row = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, then abandon in-flight jobs within a grace period."""
        consumer = self.consumer_factory()
        self.consumer = consumer
        consumer.subscribe([kafka.topic(self.settings, topics.FILES)], listener=_Listener(self))
        await kafka.retry_forever("kafka", consumer.start, stop)
        try:
            while not stop.is_set():
                self._pause_busy(consumer)
                free = self.settings.parser_concurrency - len(self._slots)
                if free <= 0:
                    await wait_any(stop, self._freed, timeout=0.5)
                    self._freed.clear()
                    # Polling with everything paused keeps the member alive in the group.
                    await consumer.getmany(timeout_ms=0)
                    continue
                batch = await consumer.getmany(timeout_ms=500, max_records=free)
                for tp, records in batch.items():
                    self._start(tp, records)
        finally:
            await self._abandon_all(self.settings.stop_grace)
            await consumer.stop()

    def _pause_busy(self, consumer: AIOKafkaConsumer) -> None:
        assigned = consumer.assignment()
        busy = [tp for tp in self._slots if tp in assigned]
        if len(self._slots) >= self.settings.parser_concurrency:
            consumer.pause(*assigned)
        else:
            consumer.pause(*busy)
            consumer.resume(*[tp for tp in assigned if tp not in self._slots])

    def _start(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        assert self.consumer is not None
        if tp in self._slots:
            # A rebalance handed back a partition whose job still runs here, so its
            # uncommitted message came again. Rewind: these records are fetched again
            # once the job is done (the job's own message then finds it finished).
            self.consumer.seek(tp, records[0].offset)
            self.consumer.pause(tp)
            return
        slot = _Slot(records)
        self._slots[tp] = slot
        self.consumer.pause(tp)
        slot.task = asyncio.create_task(self._work(tp, slot), name=f"parser:{tp.topic}:{tp.partition}")

    async def _work(self, tp: TopicPartition, slot: _Slot) -> None:
        record = None
        try:
            for record in slot.records:
                outcome = await self._handle(record, slot.abandon)
                if outcome is Outcome.ABANDONED:
                    return
                await self._commit(tp, record.offset + 1)
                if outcome is Outcome.YIELDED:
                    self._yields_in_row += 1
                    if self._yields_in_row > DEFER_RUN and await wait_any(slot.abandon, timeout=DEFER_PAUSE):
                        return
                else:
                    self._yields_in_row = 0
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "partition worker failed; its message is fetched again", extra=fields(partition=tp.partition)
            )
            if record is not None:
                await self._fetch_again(tp, record.offset, slot.abandon)
        finally:
            self._slots.pop(tp, None)
            self._freed.set()

    async def _fetch_again(self, tp: TopicPartition, offset: int, abandon: asyncio.Event) -> None:
        """After a failure nothing handled, rewind so the job is not skipped until a rebalance.

        The consumer has fetched past the message: resuming the partition alone would skip it.
        A pause first, so a failure that persists does not spin (each claim counts an attempt,
        so a job that keeps failing ends failed).
        """
        if await wait_any(abandon, timeout=FAILED_WORKER_PAUSE) or self.consumer is None:
            return
        try:
            self.consumer.seek(tp, offset)
        except KafkaError as exc:  # IllegalStateError: revoked meanwhile, its new owner has it
            log.warning("cannot rewind partition %s: %s", tp.partition, exc)

    async def _handle(self, record: ConsumerRecord, abandon: asyncio.Event) -> Outcome:
        try:
            event = events.FILE_EVENT.validate_json(record.value)
        except ValidationError as exc:
            log.warning(
                "skipping malformed file event: %s", exc.errors()[:1], extra=fields(offset=record.offset)
            )
            return Outcome.DONE
        # Backoff with jitter, 1 s doubling to 30 s; each new claim counts an attempt, so
        # MAX_ATTEMPTS bounds it in Postgres. An abandoned job makes no new attempt.
        policy = retrying.while_result(
            lambda outcome: outcome is Outcome.RETRY, abandon, "parse", initial=1.0, maximum=30.0
        )

        async def attempt() -> Outcome:  # a new FileJob per attempt (a new claim)
            return await FileJob(self.settings, self.repo, self.producer, event, abandon).run()

        try:
            outcome: Outcome = await policy(attempt)
        except retrying.Stopped:
            return Outcome.ABANDONED
        return outcome

    async def _commit(self, tp: TopicPartition, offset: int) -> None:
        assert self.consumer is not None
        # On failure the partition moved on (or the broker lost it): its next owner
        # re-delivers and the job's state in Postgres decides. Bounded, never wedged.
        with context(partition=tp.partition):
            await kafka.commit(self.consumer, {tp: offset})

    async def abandon(self, partitions: set[TopicPartition], grace: float) -> None:
        """Stop the jobs of `partitions` at their next batch boundary (bounded wait)."""
        tasks = []
        for tp in partitions:
            slot = self._slots.get(tp)
            if slot is not None and slot.task is not None:
                slot.abandon.set()
                tasks.append(slot.task)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def busy(self) -> list[TopicPartition]:
        """Partitions with a job running here."""
        return list(self._slots)

    async def _abandon_all(self, grace: float) -> None:
        await self.abandon(set(self._slots), grace)

    async def report_lag(self, stop: asyncio.Event) -> None:
        """Keep `imuflow_consumer_lag{group=parser}` current."""
        await kafka.report_lag(self.settings.parser_group_id, lambda: self.consumer, stop)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: ParserWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Eager rebalancing revokes every partition and then hands most of them straight
        # back. Abandoning here would cost every running job a delivery (an attempt) each
        # time a parser joins or leaves, so the decision waits for the new assignment.
        # Fencing keeps this safe: if a partition moves, its new owner's claim makes this
        # worker's next checkpoint match no row.
        log.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned: %s", sorted(tp.partition for tp in assigned))
        kept = [tp for tp in self.worker.busy() if tp in assigned]
        if kept and self.worker.consumer is not None:
            self.worker.consumer.pause(*kept)  # before any fetch hands their messages back
        lost = {tp for tp in self.worker.busy() if tp not in assigned}
        await self.worker.abandon(lost, self.worker.settings.stop_grace)
