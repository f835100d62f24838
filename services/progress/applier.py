"""Applies progress events to Postgres: idempotent, monotonic, one transaction per poll.

Events arrive at least once and, across attempts, possibly late. An event moves the
displayed progress only forward (more samples, same run, job still parsing), so a
duplicate or a straggler is a no-op. The batch log (`streaming_processing_logs`) is the
parser's: each row commits in its batch's transaction, so events the broker loses leave
no hole. The row an event would insert here is keyed by (file, run, batch) and inserted
only where none exists (a producer that writes no log), so the two never conflict and a
repeated batch inserts nothing. Malformed or forged events (unknown file, wrong user)
are logged, counted and skipped; they never stop the consumer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.kafka.subscriber.usecase import BatchSubscriber
from faststream.message import StreamMessage
from pydantic import ValidationError

from contracts import events, topics
from imuflow import db, dberrors, kafka, metrics, retrying
from imuflow.logs import fields
from imuflow.settings import Settings
from services.progress import eta

log = logging.getLogger("imuflow.progress")
QUERIES = db.load_queries(Path(__file__).parent / "sql" / "queries.sql")
DRIVER_ERRORS = dberrors.DRIVER


def decode(records: Sequence[ConsumerRecord]) -> list[events.ProgressEvent]:
    """Validate every record against the contract; skip (and count) the bad ones."""
    decoded: list[events.ProgressEvent] = []
    for record in records:
        try:
            decoded.append(events.PROGRESS_EVENT.validate_json(record.value or b""))
        except ValidationError as exc:
            metrics.PROGRESS_EVENTS.labels("invalid").inc()
            log.warning(
                "skipping malformed progress event",
                extra=fields(action="invalid_event", offset=record.offset, error=str(exc.errors()[:1])),
            )
    return decoded


def _decoder(message: StreamMessage[Any]) -> list[events.ProgressEvent]:
    """FastStream's decoder for the batch: the valid events (a bad one never fails the rest)."""
    records = message.raw_message
    return decode(records if isinstance(records, (tuple, list)) else (records,))


async def bound_transaction(conn: asyncpg.Connection, timeout_ms: str) -> None:
    """Bound the caller's transaction: a statement running, or the transaction idling,
    longer than `timeout_ms` is ended by Postgres, releasing its row locks."""
    await conn.execute(QUERIES["hold_timeout"], timeout_ms)


async def apply(conn: asyncpg.Connection, batch: list[events.ProgressEvent]) -> set[UUID]:
    """Apply events inside the caller's transaction; return the files whose display changed."""
    ids = sorted({e.file_id for e in batch})
    rows = {r["id"]: dict(r) for r in await conn.fetch(QUERIES["lock_files"], ids)}
    changed: set[UUID] = set()
    logs: list[tuple[Any, ...]] = []
    for event in batch:
        row = rows.get(event.file_id)
        if row is None or row["user_id"] != event.user_id or event.run != row["run"]:
            outcome = "invalid" if row is None or row["user_id"] != event.user_id else "stale"
            metrics.PROGRESS_EVENTS.labels(outcome).inc()
            if outcome == "invalid":
                log.warning(
                    "skipping event for an unknown file or another user's file",
                    extra=fields(action="forged_event", file_id=str(event.file_id)),
                )
            continue
        metrics.PROGRESS_EVENTS.labels("applied").inc()
        if isinstance(event, events.ParseStarted):
            row["eta_state"] = {}
            row["eta_dirty"] = True
        elif isinstance(event, events.BatchProgress):
            logs.append(_log_row(event))
            if _advance(row, event):
                changed.add(event.file_id)
    if logs:
        await conn.executemany(QUERIES["insert_batch_log"], logs)
    for file_id, row in rows.items():
        if file_id in changed:
            await conn.execute(
                QUERIES["apply_progress"],
                file_id,
                row["samples_processed"],
                row["sample_count"],
                row["bytes_processed"],
                row["percent"],
                row["batch_number"],
                row["samples_per_second"],
                row["eta_seconds"],
                row["eta_low_seconds"],
                row["eta_high_seconds"],
                row["eta_state"],
                row["last_checkpoint_at"],
            )
        elif row.get("eta_dirty"):
            await conn.execute(QUERIES["reset_eta"], file_id, row["eta_state"])
    for file_id in sorted(changed):
        await conn.fetchval(QUERIES["record_event"], file_id)
    return changed


def _advance(row: dict[str, Any], event: events.BatchProgress) -> bool:
    """Move the in-memory row forward by `event`; False if it is a duplicate or late."""
    if row["status"] != "parsing" or event.total_samples_processed <= row["samples_processed"]:
        return False
    estimate = eta.update(
        dict(row.get("eta_state") or {}),
        completed_at=event.completed_at.timestamp(),
        batch_seconds=event.batch_processing_time_ms / 1000,
        samples_in_batch=event.samples_in_batch,
        total_samples=event.total_samples_processed,
        bytes_processed=event.bytes_processed,
        bytes_total=event.bytes_total,
    )
    percent = 100.0 * event.bytes_processed / event.bytes_total if event.bytes_total else 0.0
    row.update(
        samples_processed=event.total_samples_processed,
        sample_count=event.estimated_total_samples,
        bytes_processed=event.bytes_processed,
        # Never backwards, and 100 only once the parser says completed.
        percent=min(max(row["percent"], percent), 99.99),
        batch_number=max(row["batch_number"], event.batch_number),
        samples_per_second=estimate.samples_per_second,
        eta_seconds=estimate.eta_seconds,
        eta_low_seconds=estimate.eta_low_seconds,
        eta_high_seconds=estimate.eta_high_seconds,
        eta_state=estimate.state,
        last_checkpoint_at=event.completed_at,
    )
    return True


def _log_row(event: events.BatchProgress) -> tuple[Any, ...]:
    return (
        event.file_id,
        event.user_id,
        event.run,
        event.batch_number,
        event.samples_in_batch,
        event.total_samples_processed,
        event.batch_processing_time_ms,
        event.started_at,
        event.completed_at,
        event.attempt,
    )


class ProgressApplier:
    """The progress service's consumer of `progress.v1`, on FastStream.

    Ack policy MANUAL, because FastStream's default (ACK_FIRST: auto-commit) would commit
    offsets before the events are applied, and a crash then loses them. The handler commits
    the batch's offsets itself, only after its Postgres transaction committed; a batch it
    could not apply (stopping during an outage) is rewound (nack) and delivered again.
    """

    def __init__(self, settings: Settings, pool: asyncpg.Pool, stop: asyncio.Event | None = None) -> None:
        self.settings = settings
        self.pool = pool
        self.stop = stop or asyncio.Event()
        # The longest an apply transaction may hold its files' row locks. A progress
        # service frozen inside one (SIGSTOP, VM pause) would otherwise block every
        # parser checkpointing those files until it woke up; Postgres ends it instead.
        self.hold_timeout_ms = str(max(int(settings.progress_hold_timeout * 1000), 1000))
        self.broker = kafka.broker(settings, consumer_only=True)
        self.subscriber = subscribe(self.broker, settings, self.handle)

    async def handle(self, batch: list[events.ProgressEvent], message: KafkaMessage) -> None:
        """Apply one polled batch, then commit its offsets (the work is durable by then)."""
        try:
            if batch:
                await self._apply_until_done(batch)
        except retrying.Stopped:
            await message.nack()  # not applied: rewound, delivered again (here or elsewhere)
            return
        try:  # bounded (see kafka.commit); on failure the events repeat, which is harmless
            await asyncio.wait_for(message.ack(), kafka.COMMIT_TIMEOUT_SECONDS)
        except (KafkaError, TimeoutError) as exc:
            log.warning("offset commit failed (the events will be delivered again): %r", exc)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume, apply and commit until `stop` is set."""
        self.stop = stop
        await kafka.retry_forever("kafka", self.broker.start, stop)
        try:
            await stop.wait()
        finally:
            await self.broker.stop()

    async def _apply_until_done(self, decoded: list[events.ProgressEvent]) -> None:
        """One transaction for the batch, retried while Postgres is away (until stopped)."""
        policy = retrying.until_stopped(self.stop, "applying progress", transient=dberrors.is_transient)
        t0 = time.perf_counter()
        try:
            await policy(self._apply, decoded)
        except DRIVER_ERRORS as exc:
            if self.stop.is_set() and dberrors.is_transient(exc):
                raise retrying.Stopped from exc
            # A poison event in the poll (found by fault tests: a batch number beyond int4
            # retried forever and wedged the consumer). Find it.
            await self._apply_one_by_one(decoded)
            return
        metrics.CHECKPOINT_WRITE.observe(time.perf_counter() - t0)

    async def _apply(self, decoded: list[events.ProgressEvent]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await bound_transaction(conn, self.hold_timeout_ms)
            await apply(conn, decoded)

    async def _apply_one_by_one(self, decoded: list[events.ProgressEvent]) -> None:
        """Apply each event in its own transaction; skip (log, count) those the database rejects."""
        policy = retrying.until_stopped(self.stop, "applying progress", transient=dberrors.is_transient)
        for event in decoded:
            try:
                await policy(self._apply, [event])
            except DRIVER_ERRORS as exc:
                if self.stop.is_set() and dberrors.is_transient(exc):
                    raise retrying.Stopped from exc
                metrics.PROGRESS_EVENTS.labels("invalid").inc()
                log.warning(
                    "skipping progress event the database rejects: %s",
                    exc,
                    extra=fields(action="invalid_event", file_id=str(event.file_id)),
                )

    async def report_lag(self, stop: asyncio.Event) -> None:
        """Keep `imuflow_consumer_lag{group=progress}` current."""
        await kafka.report_lag(self.settings.progress_group_id, lambda: self.subscriber.consumer, stop)


def subscribe(
    broker: KafkaBroker,
    settings: Settings,
    handler: Callable[[list[events.ProgressEvent], KafkaMessage], Awaitable[None]],
) -> BatchSubscriber:
    """Register the progress consumer on `broker` (also how the AsyncAPI document sees it)."""
    subscriber = broker.subscriber(
        kafka.topic(settings, topics.PROGRESS),
        batch=True,
        group_id=settings.progress_group_id,
        ack_policy=AckPolicy.MANUAL,
        max_records=1000,
        batch_timeout_ms=500,
        auto_offset_reset="earliest",
        decoder=_decoder,
        title=f"{topics.PROGRESS}:progress",
        description="The progress service applies each polled batch in one transaction, then commits.",
        # The group timings of kafka.consumer_options, spelled out for the typed overloads.
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
        rebalance_timeout_ms=settings.kafka_rebalance_timeout_ms,
    )
    subscriber(handler)
    return subscriber
