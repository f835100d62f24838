"""One delivery of one file job: claim, resume, parse in batches, commit, report."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, BinaryIO
from uuid import UUID

from pydantic import BaseModel

from contracts import events, topics
from imuflow import kafka, metrics, sentry
from imuflow.filewarnings import merge as _merge
from imuflow.logs import context, fields
from imuflow.producer import Producer
from imuflow.settings import Settings
from services.parser import pgcopy, preview_blocks, upload_follower
from services.parser.batching import BatchSizer
from services.parser.cursor import Cursor
from services.parser.formats import registry
from services.parser.formats.base import FileInfo, FormatError, Reader, ReadOptions, ResumePoint, SampleBatch
from services.parser.growing import UploadEnd, UploadPaused, UploadStopped
from services.parser.repository import Claim, Fenced, ParserRepository, TransientError
from services.parser.threads import JobThread
from services.parser.upload_follower import NotWhileReceiving

log = logging.getLogger("imuflow.parser")
ABANDON_WAIT = 5.0  # seconds a cancelled parse gets to unwind (its transaction rolls back)


class Outcome(enum.Enum):
    """What the worker does with the Kafka message after this delivery."""

    DONE = "done"  # finished, failed for good, cancelled or not ours: commit the offset
    RETRY = "retry"  # transient trouble: try again after a backoff (counts an attempt)
    ABANDONED = "abandoned"  # stopping or partition revoked: leave it uncommitted
    YIELDED = "yielded"  # fair share: requeued behind other users' work; commit the offset


def fence_interval(stuck_after: float) -> float:
    """Seconds between a running job's checks that it is still its own (1-15 s)."""
    return min(max(stuck_after / 10.0, 1.0), 15.0)


class FileJob:
    """Parses one file for one delivery of its event."""

    def __init__(
        self,
        settings: Settings,
        repo: ParserRepository,
        producer: Producer,
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
                if self.settings.fair_share_slice > 0 and await self.repo.defer_if_behind(
                    self.event.file_id, self.event.run
                ):
                    log.info("deferred behind other users' work", extra=fields(action="defer"))
                    return Outcome.YIELDED
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
            return await self._fail(claim, "attempts", message, final=True)
        metrics.FILES_IN_FLIGHT.inc()
        thread = JobThread(f"reader:{claim.file_id}")
        try:
            return await self._guarded(claim, self._parse(claim, thread))
        except FormatError as exc:
            return await self._fail(claim, "format", str(exc))
        except Fenced:
            return await self._on_fenced(claim)
        except UploadStopped as exc:
            return await self._on_upload_stopped(claim, str(exc))
        except NotWhileReceiving:
            if await upload_follower.release(self.repo, claim, "binary"):
                return Outcome.DONE
            return Outcome.RETRY  # it ended meanwhile: the next claim reads it whole
        except UploadPaused as exc:
            log.info("no upload bytes: %s", exc, extra=fields(action="paused"))
            if await upload_follower.release(self.repo, claim, "paused"):
                return Outcome.DONE
            return Outcome.RETRY  # it ended (or failed) meanwhile: the next claim sees which
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
            thread.close()
            metrics.FILES_IN_FLIGHT.dec()

    async def _guarded(self, claim: Claim, work: Coroutine[Any, Any, Outcome]) -> Outcome:
        """Run the parse while checking, on a timer, that the job is still this claim's.

        A reader that never returns reaches no batch boundary, where fencing is noticed:
        its partition stayed paused and the watchdog's requeue (keyed to that partition)
        was never consumed. Once the job was taken away (requeued, cancelled, deleted,
        claimed again) the parse is cancelled, whatever its thread is doing, and the slot
        and partition are free.
        """
        parse = asyncio.ensure_future(work)
        watch = asyncio.ensure_future(self._watch(claim))
        for task in (parse, watch):
            task.add_done_callback(_retrieve)
        try:
            await asyncio.wait({parse, watch}, return_when=asyncio.FIRST_COMPLETED)
            if parse.done():
                return parse.result()
            log.warning("job taken away while working; stopping it", extra=fields(action="fenced"))
            parse.cancel()
            await asyncio.wait({parse}, timeout=ABANDON_WAIT)  # its thread is not waited for
            raise Fenced("taken away while working")
        finally:
            parse.cancel()
            watch.cancel()

    async def _watch(self, claim: Claim) -> None:
        """Return once the job is no longer this claim's (checked every few seconds)."""
        interval = fence_interval(self.settings.stuck_after)
        while True:
            await asyncio.sleep(interval)
            try:
                state = await self.repo.status_of(claim.file_id)
            except TransientError:
                continue  # Postgres away: the batch writes notice on their own
            if state is None or state["status"] != "parsing" or state["lease"] != claim.lease:
                return

    async def _parse(self, claim: Claim, thread: JobThread) -> Outcome:
        end = UploadEnd()
        f = await upload_follower.open_upload(self.settings, thread, claim, end)
        follow = None
        if isinstance(f, upload_follower.GROWING):
            follow = asyncio.ensure_future(upload_follower.follow(self.repo, claim, end))
            follow.add_done_callback(_retrieve)
        try:
            reader, info = await thread.submit(self._open_reader, f, claim, end)
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
            return await self._batches(claim, reader, info, warnings, thread)
        finally:
            end.stop("the job stopped")  # a read waiting for bytes in the thread ends
            if follow is not None:
                follow.cancel()
            # After whatever the thread still does (a read-ahead); not waited for.
            thread.submit(f.close).add_done_callback(_retrieve)

    async def _on_upload_stopped(self, claim: Claim, why: str) -> Outcome:
        """The growing upload ended short: ingest failed (or removed) the record, or it is ours to fail."""
        state = await self.repo.status_of(claim.file_id)
        if state is not None and state["status"] == "parsing" and state["lease"] == claim.lease:
            return await self._fail(claim, "upload", why)
        return await self._on_fenced(claim)

    def _open_reader(self, f: BinaryIO, claim: Claim, end: UploadEnd) -> tuple[Reader, FileInfo]:
        growing = isinstance(f, upload_follower.GROWING) and end.size is None
        if growing and upload_follower.binary_upload(f, claim):
            raise NotWhileReceiving  # binary readers size the file first: they need its end
        format_id = claim.format or registry.detect_file(f, claim.filename)
        if growing and format_id in registry.BINARY_READERS and end.size is None:
            raise NotWhileReceiving
        reader = registry.make_reader(format_id)
        resume = None
        if claim.resume_batch_number > 0:
            resume = ResumePoint(claim.resume_offset, claim.resume_samples, claim.resume_state)
        limits = registry.read_limits(self.settings)
        options = ReadOptions(
            filename=claim.filename, sensor=claim.sensor, timezone=claim.timezone, limits=limits
        )
        return reader, reader.open(f, options, resume)

    async def _batches(
        self, claim: Claim, reader: Reader, info: FileInfo, warnings: list[str], thread: JobThread
    ) -> Outcome:
        sizer = BatchSizer(self.settings.batch_size, adaptive=self.settings.adaptive_batching)
        share = _FairShare(self.settings.fair_share_slice)
        batches: Iterator[SampleBatch] = reader.batches(sizer)
        cursor = Cursor(
            claim.resume_batch_number, claim.resume_samples, claim.rows_skipped, warnings, claim.resume_offset
        )
        # Pipelining: a thread reads and encodes batch N+1 while batch N is copied into
        # Postgres (another process, so the two use both cores). Checkpoints stay exact:
        # batch N's transaction (samples + checkpoint N) commits before N+1 is stored.
        pending = self._read_ahead(batches, claim, thread)
        try:
            while True:
                if self.abandon.is_set():
                    raise _Abandoned
                item = await pending
                if item is None:
                    break
                pending = self._read_ahead(batches, claim, thread)
                batch = item.batch
                moved = cursor.after(batch)
                with context(batch_number=moved.batch_number):
                    # The batch's progress event is built inside its transaction (so its time
                    # includes the COPY) and committed with it through the outbox.
                    c0 = time.perf_counter()
                    await self.repo.store_batch(
                        claim,
                        batch,
                        moved,
                        progress=partial(self._progress_payload, claim, info, batch, moved, item.started),
                        payload=item.payload,
                        preview=item.preview,
                    )
                    now = time.perf_counter()
                    metrics.CHECKPOINT_WRITE.observe(now - c0)
                    seconds, cursor = now - moved.since, replace(moved, since=now)
                    sizer.observe(len(batch), seconds)
                    metrics.BATCH_DURATION.observe(seconds)
                    metrics.SAMPLES_PARSED.inc(len(batch))
                    if share.due() and await self._yield(claim, cursor.batch_number):
                        return Outcome.YIELDED
        finally:
            # The job's thread closes the file after the read-ahead: nothing to wait for.
            pending.add_done_callback(_retrieve)
        if cursor.samples_done == 0:
            raise FormatError("the file holds no readable IMU samples")
        if not await self.repo.complete(claim, cursor.samples_done):
            raise Fenced("complete matched no row")
        log.info(
            "parse completed",
            extra=fields(action="completed", samples=cursor.samples_done, batches=cursor.batch_number),
        )
        await self._publish(
            events.ParseCompleted(
                **claim.event_ids,
                batch_number=cursor.batch_number,
                total_samples=cursor.samples_done,
                rows_skipped=cursor.rows_skipped,
                warnings=cursor.warnings,
                completed_at=datetime.now(UTC),
            )
        )
        return Outcome.DONE

    async def _yield(self, claim: Claim, batch_number: int) -> bool:
        """Fair share: give the parser to another user's waiting work at this boundary.

        The checkpoint of `batch_number` is committed; the job goes back to queued with its
        event republished behind the waiting work. The resuming claim counts no attempt.
        """
        if not await self.repo.others_waiting(claim):
            return False
        if not await self.repo.yield_job(claim, batch_number):
            raise Fenced("yield matched no row")
        log.info(
            "yielding to other users' work at a batch boundary",
            extra=fields(action="yield", batch_number=batch_number),
        )
        return True

    def _read_ahead(
        self, batches: Iterator[SampleBatch], claim: Claim, thread: JobThread
    ) -> asyncio.Future[_Prepared | None]:
        """Start reading and encoding the next batch in the job's thread."""
        return thread.submit(_prepare_next, batches, claim.file_id)

    def _progress_payload(
        self, claim: Claim, info: FileInfo, batch: SampleBatch, cursor: Cursor, started: datetime
    ) -> dict[str, Any]:
        """The batch's progress event (as JSON) for the position after it."""
        bytes_total = max(info.bytes_total, 1)
        bytes_done = min(cursor.offset, bytes_total)
        if info.sample_count is not None:
            estimate = info.sample_count
        else:
            estimate = round(cursor.samples_done * bytes_total / max(bytes_done, 1))
        event = events.BatchProgress(
            **claim.event_ids,
            batch_number=cursor.batch_number,
            samples_in_batch=len(batch),
            total_samples_processed=cursor.samples_done,
            estimated_total_samples=max(estimate, cursor.samples_done),
            bytes_processed=bytes_done,
            bytes_total=bytes_total,
            rows_skipped=cursor.rows_skipped,
            warnings=cursor.warnings,
            batch_processing_time_ms=(time.perf_counter() - cursor.since) * 1000,
            started_at=started,
            completed_at=datetime.now(UTC),
        )
        return event.model_dump(mode="json")

    async def _on_fenced(self, claim: Claim) -> Outcome:
        state = await self.repo.status_of(claim.file_id)
        if state is not None and state["status"] == "cancelled" and state["lease"] == claim.lease:
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

    async def _fail(self, claim: Claim, reason: str, message: str, *, final: bool = False) -> Outcome:
        """Mark the job failed; RETRY (the offset stays uncommitted) if that cannot be written.

        Committing the offset of a job left `parsing` would leave it to the watchdog.
        """
        log.warning("parse failed: %s", message, extra=fields(action="failed", reason=reason))
        dead_letter = self.event.model_dump(mode="json") if final else None
        try:
            changed = await self.repo.fail(claim.file_id, claim.lease, claim.run, message, dead_letter)
        except TransientError as exc:
            log.warning("could not record the failure; will retry: %s", exc, extra=fields(action="retry"))
            await self.repo.note_transient_error(claim, f"could not record a failure: {exc}")
            return Outcome.RETRY
        if not changed:
            return Outcome.DONE
        metrics.PARSE_FAILURES.labels(reason).inc()
        sentry.capture_job_failure(reason, message, str(claim.file_id))  # not for "format"
        failed = events.ParseFailed(
            **claim.event_ids,
            reason=reason,
            error_message=message,
            retryable=reason != "format",
            failed_at=datetime.now(UTC),
        )
        await self._publish(failed)
        return Outcome.DONE

    async def _publish(self, event: BaseModel, base: str = topics.PROGRESS) -> None:
        """Send without waiting for the broker; the Postgres state is already committed."""
        file_id = event.file_id  # type: ignore[attr-defined]
        try:
            future = await self.producer.send(
                kafka.topic(self.settings, base), value=events.encode(event), key=topics.message_key(file_id)
            )
        except Exception as exc:  # a lost progress event is superseded by the next one
            log.warning("could not publish %s: %s", type(event).__name__, exc)
            return
        future.add_done_callback(_log_send_failure)


@dataclass(frozen=True)
class _Prepared:
    """A batch made ready to store in the job's thread, off the event loop."""

    batch: SampleBatch
    payload: list[memoryview]  # its COPY BINARY rows
    preview: preview_blocks.Encoded  # its preview pyramid rows
    started: datetime  # when reading it began


def _prepare_next(batches: Iterator[SampleBatch], file_id: UUID) -> _Prepared | None:
    """The next batch with its COPY payload and preview rows (None at the end)."""
    started = datetime.now(UTC)
    batch = next(batches, None)
    if batch is None:
        return None
    return _Prepared(
        batch, pgcopy.encode_parts(file_id, batch), preview_blocks.encode(file_id, batch), started
    )


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Retrieve a read-ahead's error nobody awaits any more (an error after ours)."""
    if not future.cancelled():
        future.exception()


class _FairShare:
    """When a running job asks whether to yield: after its slice, at most once a second."""

    CHECK_EVERY = 1.0

    def __init__(self, slice_seconds: float) -> None:
        self.slice = slice_seconds
        self.next_check = time.monotonic() + slice_seconds

    def due(self) -> bool:
        if self.slice <= 0 or time.monotonic() < self.next_check:
            return False
        self.next_check = time.monotonic() + self.CHECK_EVERY
        return True


def _log_send_failure(future: asyncio.Future[object]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("progress event not delivered: %s", future.exception())


class _Abandoned(Exception):
    """The worker is stopping or lost the partition: stop at this batch boundary."""
