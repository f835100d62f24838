"""Transactional outbox: publish rows written with the state they announce.

Whoever changes state that other services must hear about (ingest on upload, the
progress service on retry or a stuck-job requeue, the SQL reset function) inserts an
`outbox` row in the same transaction. Every service runs this relay; rows are claimed
with SKIP LOCKED, sent, and marked published in one transaction, so a crash between
send and mark only sends twice (consumers are idempotent), never zero times.

A row the broker can never take (larger than `IMUFLOW_KAFKA_MAX_MESSAGE_BYTES`, invalid) is
a dead letter: set aside with its error, counted, and the batch goes on (a file whose own
job event it was ends failed with the reason). A transient failure (broker down, topic
missing) is never dead-lettered: the row waits its own backoff while later rows go on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from aiokafka.structs import RecordMetadata
from pydantic import BaseModel

from contracts import events, topics
from imuflow import db, dberrors, kafka, metrics, notifications, retrying
from imuflow.aio import unless_stopped
from imuflow.logs import fields
from imuflow.producer import Placement, Producer
from imuflow.settings import Settings

log = logging.getLogger(__name__)
QUERIES = db.load_queries(Path(__file__).parent / "sql" / "outbox.sql")
BATCH = 200
POLL_SECONDS = 2.0  # fallback when a NOTIFY is missed (e.g. while the listener reconnects)
PRUNE_EVERY_SECONDS = 600.0
# How often the relay makes sure the broker still has the topics before sending (Tansu
# acknowledges a message for a topic it lost and then never delivers it).
TOPIC_CHECK_SECONDS = 1.0
KEEP_PUBLISHED = timedelta(days=1)  # published rows are history, kept a day for debugging
# What the broker says about the message itself: sending it again can never succeed.
PERMANENT_ERRORS: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    CorruptRecordException,
    InvalidTopicError,
)
# An outbox row as the relay handles it (claimed, stubs built).
Row = dict[str, Any]
# Bytes a record carries beyond key and value, rounded up: its batch's header, its own
# lengths and FastStream's two headers (content-type, a 36-character correlation_id) come
# to 154 for a one-record batch (aiokafka's DefaultRecordBatchBuilder; 128 was the
# allowance before those headers), so an event this check lets through fits the broker's.
RECORD_OVERHEAD = 256


class PermanentError(Exception):
    """This row can never be published; `reason` is its dead-letter reason label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


async def enqueue(
    conn: asyncpg.Connection, base_topic: str, key: UUID, payload: BaseModel | dict[str, Any]
) -> None:
    """Add a message (an event, or its JSON) to the outbox inside the caller's transaction."""
    if isinstance(payload, BaseModel):
        payload = payload.model_dump(mode="json")
    await conn.execute(QUERIES["enqueue"], base_topic, str(key), payload)


def encode(settings: Settings, row: Row) -> tuple[str, bytes, bytes]:
    """(topic, key, value) of one outbox row; PermanentError if it can never be sent."""
    if row["topic"] not in topics.ALL:
        raise PermanentError("invalid", f"unknown topic {row['topic']!r}")
    try:
        UUID(str(row["key"]))  # every message is keyed by its file id
    except ValueError:
        raise PermanentError("invalid", f"key {str(row['key'])[:80]!r} is not a file id") from None
    try:
        value = json.dumps(row["payload"], separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise PermanentError("invalid", f"payload is not JSON: {exc}") from exc
    key = str(row["key"]).encode()
    size = len(key) + len(value) + RECORD_OVERHEAD
    if size > settings.kafka_max_message_bytes:
        raise PermanentError(
            "too_large",
            f"event of {size} bytes is over the broker's limit of "
            f"{settings.kafka_max_message_bytes} bytes (IMUFLOW_KAFKA_MAX_MESSAGE_BYTES)",
        )
    return topics.topic_name(settings.kafka_topic_prefix, row["topic"]), key, value


async def build_stubs(conn: asyncpg.Connection, rows: Sequence[Row]) -> list[Row]:
    """The rows with every stub (`{"build": "file.queued", ...}`, written by SQL that requeues)
    replaced by its event, built by FileQueued.of_file from the file's row and stored back.

    A stub whose file is gone (deleted since) announces nothing: it is marked published
    unsent and left out.
    """
    built: list[Row] = [dict(row) for row in rows]
    stubs = [row for row in built if isinstance(row["payload"], dict) and "build" in row["payload"]]
    if not stubs:
        return built
    files = {
        str(f["id"]): f
        for f in await conn.fetch(QUERIES["files_to_build"], [UUID(str(row["key"])) for row in stubs])
    }
    gone = [row["id"] for row in stubs if str(row["key"]) not in files]
    for row in stubs:
        if row["id"] not in gone:
            file = files[str(row["key"])]
            event = events.FileQueued.of_file(file, row["payload"]["reason"], queued_at=row["created_at"])
            row["payload"] = event.model_dump(mode="json")
    made = [row for row in stubs if row["id"] not in gone]
    if made:
        await conn.execute(
            QUERIES["store_built"], [row["id"] for row in made], [row["payload"] for row in made]
        )
    if gone:
        await conn.execute(QUERIES["mark_published"], gone)
    return [row for row in built if row["id"] not in gone]


@dataclass
class BatchOutcome:
    """What became of each row of one claimed batch."""

    published: list[Row] = field(default_factory=list)
    dead: list[tuple[Row, PermanentError]] = field(default_factory=list)
    deferred: list[tuple[Row, str]] = field(default_factory=list)
    marks: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition) -> offset floor
    # file-job row id -> (partition, offset); none for a send that placed nothing (FastStream's
    # in-memory test broker): the row's kafka_partition and kafka_offset stay NULL, no mark.
    placed: dict[int, tuple[int, int]] = field(default_factory=dict)
    transient: Exception | None = None  # the broker failed some rows for a reason not theirs


class OutboxRelay:
    """Publishes pending outbox rows to Kafka until stopped.

    `producer` is the services' FastStream producer (imuflow/producer.py), or anything that
    sends like it (the fault tests' stand-ins). `checks_topics` is off only where no broker
    can lose a topic (FastStream's in-memory test broker, which has no metadata to read).
    """

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        producer: Producer,
        *,
        starts_producer: bool = False,
        checks_topics: bool = True,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.producer = producer
        # The web services start without the broker (uploads wait in the outbox), so their
        # relay, the producer's main user there, starts it once the broker answers.
        self.starts_producer = starts_producer
        self.checks_topics = checks_topics
        self._topics_seen_at = 0.0
        self._next_prune = 0.0

    async def publish_pending(self) -> int:
        """Publish one batch of pending rows; return how many rows it settled.

        Raises KafkaError when the broker took none of them (the relay backs off).
        """
        dead: list[tuple[Row, PermanentError]] = []
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(QUERIES["claim_pending"], BATCH)
            if not rows:
                return 0
            rows = await build_stubs(conn, rows)
            await self._topics_exist()
            outcome = await self._send(rows)
            if outcome.transient is not None:
                self._topics_seen_at = 0.0  # the broker failed us: look at its topics again
            if outcome.transient is not None and not (outcome.published or outcome.dead):
                raise KafkaError(f"broker took none of {len(rows)} outbox rows: {outcome.transient!r}")
            await self._settle(conn, outcome)
            dead = outcome.dead
        for row, error in dead:
            metrics.DEAD_LETTERS.labels(row["topic"], error.reason).inc()
            log.error(
                "outbox row dead-lettered: %s",
                error,
                extra=fields(
                    action="dead_letter", outbox_id=row["id"], topic=row["topic"], file_id=row["key"]
                ),
            )
        return len(outcome.published) + len(outcome.dead) + len(outcome.deferred)

    async def _topics_exist(self) -> None:
        """Make sure the broker has every topic (at most once per TOPIC_CHECK_SECONDS).

        A broker restarted empty answers the producer before anyone re-created the topics,
        and Tansu then acknowledges messages it never delivers; re-creating them first
        keeps those from being lost.
        """
        if not self.checks_topics or time.monotonic() - self._topics_seen_at < TOPIC_CHECK_SECONDS:
            return
        cluster = await asyncio.wait_for(self.producer.client.fetch_all_metadata(), 5.0)
        wanted = {kafka.topic(self.settings, base) for base in topics.ALL}
        missing = wanted - set(cluster.topics())
        if missing:
            log.warning("outbox relay: topics missing, creating them first: %s", sorted(missing))
            await kafka.ensure_topics(self.settings)
        self._topics_seen_at = time.monotonic()

    async def _send(self, rows: Sequence[Row]) -> BatchOutcome:
        outcome = BatchOutcome()
        sent: list[tuple[Row, asyncio.Future[Placement]]] = []
        # A send that fails at once (no metadata for the topic within the request timeout:
        # topic missing, broker away) would fail the same way for every row of that topic;
        # they wait their backoff without being tried, and the other topics' rows go on.
        refused: dict[str, str] = {}
        for row in rows:
            if row["topic"] in refused:
                outcome.deferred.append((row, refused[row["topic"]]))
                continue
            try:
                topic, key, value = encode(self.settings, row)
                sent.append((row, await self.producer.send(topic, value=value, key=key)))
            except PermanentError as exc:
                outcome.dead.append((row, exc))
            except PERMANENT_ERRORS as exc:
                outcome.dead.append((row, PermanentError("rejected", f"{type(exc).__name__}: {exc}")))
            except KafkaError as exc:
                refused[row["topic"]] = f"{type(exc).__name__}: {exc}"
                outcome.deferred.append((row, refused[row["topic"]]))
                outcome.transient = exc
        results = await asyncio.gather(*(fut for _, fut in sent), return_exceptions=True)
        for (row, _), result in zip(sent, results, strict=True):
            if isinstance(result, RecordMetadata):
                outcome.published.append(row)
                if row["topic"] == topics.FILES:
                    tp = (result.topic, result.partition)
                    # The first offset of this round, +1: what the partition's end offset
                    # reaches at least. Not the last: Tansu answers a partition's end offset
                    # as its last record batch's base offset + 1.
                    next_offset = result.offset + 1
                    outcome.marks[tp] = min(outcome.marks.get(tp, next_offset), next_offset)
                    outcome.placed[row["id"]] = (result.partition, result.offset)
            elif result is None:  # delivered without a placement (the in-memory broker)
                outcome.published.append(row)
            elif isinstance(result, PERMANENT_ERRORS):
                outcome.dead.append((row, PermanentError("rejected", f"{type(result).__name__}: {result}")))
            elif isinstance(result, Exception):
                outcome.deferred.append((row, f"{type(result).__name__}: {result}"))
                outcome.transient = result
            else:  # a BaseException (cancellation) is not ours to swallow
                raise result
        return outcome

    async def _settle(self, conn: asyncpg.Connection, outcome: BatchOutcome) -> None:
        if outcome.published:
            await conn.execute(QUERIES["mark_published"], [row["id"] for row in outcome.published])
            files = [UUID(row["key"]) for row in outcome.published if row["topic"] == topics.FILES]
            if files:
                await conn.fetch(QUERIES["mark_files_queued"], files)
        if outcome.placed:
            ids = sorted(outcome.placed)
            await conn.execute(
                QUERIES["mark_placed"],
                ids,
                [outcome.placed[i][0] for i in ids],
                [outcome.placed[i][1] for i in ids],
            )
        if outcome.marks:
            keys = sorted(outcome.marks)
            await conn.execute(
                QUERIES["upsert_marks"],
                [t for t, _ in keys],
                [p for _, p in keys],
                [outcome.marks[k] for k in keys],
            )
        if outcome.deferred:
            ids = [row["id"] for row, _ in outcome.deferred]
            await conn.execute(QUERIES["defer"], ids, [error for _, error in outcome.deferred])
        if outcome.dead:
            ids = [row["id"] for row, _ in outcome.dead]
            await conn.fetch(QUERIES["dead_letter"], ids, [str(error) for _, error in outcome.dead])
            failed = await conn.fetch(QUERIES["fail_dead_files"], ids, topics.FILES)
            for _ in failed:
                metrics.PARSE_FAILURES.labels("dead_letter").inc()

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set; wake on NOTIFY, poll as a fallback, back off on errors."""
        if self.starts_producer:
            await kafka.retry_forever("kafka", self.producer.start, stop)
            try:
                await kafka.ensure_topics(self.settings)
            except (KafkaError, OSError) as exc:  # the topic keeper tries again
                log.warning("outbox relay: could not create the topics yet: %r", exc)
        self._next_prune = time.monotonic()
        # Any failure of a round is retried (a row the broker refuses is a dead letter, never
        # an error here); rows are claimed again from Postgres, so nothing is lost meanwhile.
        policy = retrying.until_stopped(
            stop, "outbox relay: publish", transient=retrying.of_type(KafkaError, *dberrors.DRIVER)
        )

        async def publish() -> None:
            try:
                # A round waits on the broker (a send's metadata, up to its request
                # timeout): given up at the stop, its transaction rolled back.
                await unless_stopped(stop, policy(self._round))
            except (retrying.Stopped, KafkaError, *dberrors.DRIVER):
                pass  # the policy gives up only once stopping: the rows stay pending

        await notifications.follow(
            self.settings.database_url,
            "imuflow_outbox",
            publish,
            stop,
            poll_seconds=POLL_SECONDS,
            what="outbox relay",
        )

    async def _round(self) -> None:
        """Publish until nothing is pending; prune published rows now and then."""
        while await self.publish_pending() == BATCH:
            pass
        if time.monotonic() >= self._next_prune:
            # Every batch of every job passes through here: without pruning the table grows
            # for ever.
            await self.prune()
            self._next_prune = time.monotonic() + PRUNE_EVERY_SECONDS

    async def prune(self, keep: timedelta = KEEP_PUBLISHED) -> int:
        """Delete rows published longer than `keep` ago; return how many."""
        result: str = await self.pool.execute(QUERIES["prune_published"], keep)
        return int(result.split()[-1])
