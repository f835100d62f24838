"""One delivery of one file job: claim, resume, parse in batches, commit, report."""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlparse
from uuid import UUID

from aiokafka import AIOKafkaProducer
from pydantic import BaseModel

from contracts import events, topics
from imuflow import kafka, metrics, storage
from imuflow.filewarnings import merge as _merge
from imuflow.logs import context, fields
from imuflow.settings import Settings
from services.parser import pgcopy
from services.parser.batching import BatchSizer
from services.parser.formats import registry
from services.parser.formats.base import FileInfo, FormatError, Reader, ReadOptions, ResumePoint, SampleBatch
from services.parser.repository import Claim, Fenced, ParserRepository, TransientError

log = logging.getLogger("imuflow.parser")


class Outcome(enum.Enum):
    """What the worker does with the Kafka message after this delivery."""

    DONE = "done"  # finished, failed for good, cancelled or not ours: commit the offset
    RETRY = "retry"  # transient trouble: try again after a backoff (counts an attempt)
    ABANDONED = "abandoned"  # stopping or partition revoked: leave it uncommitted


def storage_path(uri: str) -> Path:
    """The local path of a `file://` storage URI."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise FormatError(f"unsupported storage location {parsed.scheme!r}")
    return Path(unquote(parsed.path))


class FileJob:
    """Parses one file for one delivery of its event."""

    def __init__(
        self,
        settings: Settings,
        repo: ParserRepository,
        producer: AIOKafkaProducer,
        event: events.FileQueued,
        abandon: asyncio.Event,
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.producer = producer
        self.event = event
        self.abandon = abandon

    async def run(self) -> Outcome:
        """Process the delivery and say what to do with its message."""
        with context(file_id=str(self.event.file_id)):
            try:
                claim = await self.repo.claim(self.event.file_id, self.event.run)
            except TransientError as exc:
                log.warning("cannot claim job: %s", exc, extra=fields(action="claim"))
                return Outcome.RETRY
            if claim is None:
                log.info("job no longer to parse; skipping", extra=fields(action="skip"))
                return Outcome.DONE
            with context(attempt=claim.attempt):
                return await self._run_claimed(claim)

    async def _run_claimed(self, claim: Claim) -> Outcome:
        if claim.attempt - claim.attempts_base > self.settings.max_attempts:
            tried = claim.attempt - claim.attempts_base - 1
            message = f"gave up after {tried} attempts"
            if claim.last_error:
                message += f"; last error: {claim.last_error}"
            await self._fail(claim, "attempts", message, final=True)
            return Outcome.DONE
        metrics.FILES_IN_FLIGHT.inc()
        try:
            await self._parse(claim)
            return Outcome.DONE
        except FormatError as exc:
            await self._fail(claim, "format", str(exc))
            return Outcome.DONE
        except Fenced:
            return await self._on_fenced(claim)
        except _Abandoned:
            log.info("abandoning at a batch boundary", extra=fields(action="abandon"))
            return Outcome.ABANDONED
        except TransientError as exc:
            log.warning("transient error; will retry: %s", exc, extra=fields(action="retry"))
            await self.repo.note_transient_error(claim, str(exc))
            return Outcome.RETRY
        except Exception as exc:  # a reader bug must not kill the worker: retry, then fail
            log.exception("unexpected error while parsing", extra=fields(action="error"))
            await self.repo.note_transient_error(claim, f"internal error: {exc!r}")
            return Outcome.RETRY
        finally:
            metrics.FILES_IN_FLIGHT.dec()

    async def _parse(self, claim: Claim) -> None:
        try:  # a seekable reader: a local file, or ranged GETs with read-ahead on S3
            f = await storage.open_any(storage.for_process(self.settings), claim.storage_uri)
        except storage.ObjectMissing as exc:
            raise FormatError("the stored upload is missing; upload the file again") from exc
        except storage.StorageError as exc:
            raise TransientError(f"upload storage: {exc}") from exc
        try:
            reader, info = await asyncio.to_thread(self._open_reader, f, claim)
            warnings = _merge(claim.warnings, list(info.warnings))
            await self.repo.set_format(claim, info.format_id, dict(info.units), warnings)
            await self._publish(
                events.ParseStarted(
                    **claim.event_ids,
                    format=info.format_id,
                    bytes_total=info.bytes_total,
                    resumed_from_samples=claim.resume_samples,
                    resumed_from_batch=claim.resume_batch_number,
                    estimated_total_samples=info.sample_count,
                    started_at=datetime.now(UTC),
                )
            )
            await self._batches(claim, reader, info, warnings)
        finally:
            await asyncio.to_thread(f.close)

    def _open_reader(self, f: BinaryIO, claim: Claim) -> tuple[Reader, FileInfo]:
        format_id = claim.format or registry.detect_file(f, claim.filename)
        reader = registry.make_reader(format_id)
        resume = None
        if claim.resume_batch_number > 0:
            resume = ResumePoint(claim.resume_offset, claim.resume_samples, claim.resume_state)
        limits = registry.read_limits(self.settings)
        options = ReadOptions(
            filename=claim.filename, sensor=claim.sensor, timezone=claim.timezone, limits=limits
        )
        return reader, reader.open(f, options, resume)

    async def _batches(self, claim: Claim, reader: Reader, info: FileInfo, warnings: list[str]) -> None:
        sizer = BatchSizer(self.settings.batch_size, adaptive=self.settings.adaptive_batching)
        batches: Iterator[SampleBatch] = reader.batches(sizer)
        batch_number = claim.resume_batch_number
        samples_done = claim.resume_samples
        rows_skipped = claim.rows_skipped
        # Pipelining: a thread reads and encodes batch N+1 while batch N is copied into
        # Postgres (another process, so the two use both cores). Checkpoints stay exact:
        # batch N's transaction (samples + checkpoint N) commits before N+1 is stored.
        pending = self._read_ahead(batches, claim)
        t0 = time.perf_counter()  # a batch's time runs from the previous commit to its own
        try:
            while True:
                if self.abandon.is_set():
                    raise _Abandoned
                item = await pending
                if item is None:
                    break
                batch, payload, started = item
                pending = self._read_ahead(batches, claim)
                samples_done += len(batch)
                rows_skipped += batch.rows_skipped
                warnings = _merge(warnings, batch.warnings)
                with context(batch_number=batch_number + 1):
                    # The batch's progress event is built inside its transaction (so its time
                    # includes the COPY) and committed with it through the outbox.
                    progress = functools.partial(
                        self._progress_payload,
                        claim, info, batch, batch_number + 1, samples_done, rows_skipped, warnings,
                        started, t0,
                    )  # fmt: skip
                    c0 = time.perf_counter()
                    await self.repo.store_batch(
                        claim,
                        batch,
                        batch_number,
                        samples_done,
                        rows_skipped,
                        warnings,
                        checkpoint=self.settings.progress_tracking,
                        progress=progress if self.settings.progress_tracking else None,
                        payload=payload,
                    )
                    metrics.CHECKPOINT_WRITE.observe(time.perf_counter() - c0)
                    batch_number += 1
                    now = time.perf_counter()
                    seconds, t0 = now - t0, now
                    sizer.observe(len(batch), seconds)
                    metrics.BATCH_DURATION.observe(seconds)
                    metrics.SAMPLES_PARSED.inc(len(batch))
        finally:
            # The reader thread cannot be interrupted: let it finish before the file closes.
            if not pending.done():
                await asyncio.wait([pending])
            if not pending.cancelled():
                pending.exception()  # retrieved: an error after ours is not worth a log
        if samples_done == 0:
            raise FormatError("the file holds no readable IMU samples")
        if not await self.repo.complete(claim, samples_done):
            raise Fenced("complete matched no row")
        log.info(
            "parse completed", extra=fields(action="completed", samples=samples_done, batches=batch_number)
        )
        await self._publish(
            events.ParseCompleted(
                **claim.event_ids,
                batch_number=batch_number,
                total_samples=samples_done,
                rows_skipped=rows_skipped,
                warnings=warnings,
                completed_at=datetime.now(UTC),
            )
        )

    def _read_ahead(self, batches: Iterator[SampleBatch], claim: Claim) -> asyncio.Future[_Encoded | None]:
        """Start reading and encoding the next batch in a thread."""
        return asyncio.ensure_future(asyncio.to_thread(_next_encoded, batches, claim.file_id))

    def _progress_payload(
        self,
        claim: Claim,
        info: FileInfo,
        batch: SampleBatch,
        batch_number: int,
        samples_done: int,
        rows_skipped: int,
        warnings: list[str],
        started: datetime,
        t0: float,
    ) -> dict[str, Any]:
        bytes_total = max(info.bytes_total, 1)
        bytes_done = min(batch.end_offset, bytes_total)
        if info.sample_count is not None:
            estimate = info.sample_count
        else:
            estimate = round(samples_done * bytes_total / max(bytes_done, 1))
        event = events.BatchProgress(
            **claim.event_ids,
            batch_number=batch_number,
            samples_in_batch=len(batch),
            total_samples_processed=samples_done,
            estimated_total_samples=max(estimate, samples_done),
            bytes_processed=bytes_done,
            bytes_total=bytes_total,
            rows_skipped=rows_skipped,
            warnings=warnings,
            batch_processing_time_ms=(time.perf_counter() - t0) * 1000,
            started_at=started,
            completed_at=datetime.now(UTC),
        )
        return event.model_dump(mode="json")

    async def _on_fenced(self, claim: Claim) -> Outcome:
        state = await self.repo.status_of(claim.file_id)
        if state is not None and state["status"] == "cancelled" and state["attempts"] == claim.attempt:
            log.info("cancelled; stopped at a batch boundary", extra=fields(action="cancelled"))
            await self._publish(
                events.ParseCancelled(
                    **claim.event_ids,
                    batch_number=0,
                    cancelled_at=datetime.now(UTC),
                )
            )
        else:
            log.info("job taken over or deleted; stopping", extra=fields(action="fenced"))
        return Outcome.DONE

    async def _fail(self, claim: Claim, reason: str, message: str, *, final: bool = False) -> None:
        log.warning("parse failed: %s", message, extra=fields(action="failed", reason=reason))
        dead_letter = self.event.model_dump(mode="json") if final else None
        try:
            changed = await self.repo.fail(claim.file_id, claim.attempt, claim.run, message, dead_letter)
        except TransientError as exc:
            log.warning("could not record the failure: %s", exc)
            return
        if not changed:
            return
        metrics.PARSE_FAILURES.labels(reason).inc()
        failed = events.ParseFailed(
            **claim.event_ids,
            reason=reason,
            error_message=message,
            retryable=reason != "format",
            failed_at=datetime.now(UTC),
        )
        await self._publish(failed)

    async def _publish(self, event: BaseModel, base: str = topics.PROGRESS) -> None:
        """Send without waiting for the broker; the Postgres state is already committed."""
        if not self.settings.progress_tracking and base == topics.PROGRESS:
            return
        file_id = event.file_id  # type: ignore[attr-defined]
        try:
            future = await self.producer.send(
                kafka.topic(self.settings, base), events.encode(event), key=topics.message_key(file_id)
            )
        except Exception as exc:  # a lost progress event is superseded by the next one
            log.warning("could not publish %s: %s", type(event).__name__, exc)
            return
        future.add_done_callback(_log_send_failure)


_Encoded = tuple[SampleBatch, list[memoryview], datetime]


def _next_encoded(batches: Iterator[SampleBatch], file_id: UUID) -> _Encoded | None:
    """The next batch, its COPY payload and when reading it began (None at the end)."""
    started = datetime.now(UTC)
    batch = next(batches, None)
    if batch is None:
        return None
    return batch, pgcopy.encode_parts(file_id, batch), started


def _log_send_failure(future: asyncio.Future[object]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("progress event not delivered: %s", future.exception())


class _Abandoned(Exception):
    """The worker is stopping or lost the partition: stop at this batch boundary."""
