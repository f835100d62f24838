"""An upload recorded at its first bytes, so that parsing overlaps the upload.

Without it the parser starts after the last byte: a 230 MB CSV sent at 25 MB/s was
completed 1.51x after its upload began. With it, once the `file` part of a large
`POST /api/files` body starts (and its first bytes are not a ZIP, which is split into
its streams only at the end), the record and its FileQueued are committed at once, with
`size_bytes` the declared estimate, `sha256` '' and `upload_receiving` true; the parser
reads the growing `<id>.part` (services/parser/growing.py) and completes the job only
after `finish` cleared `upload_receiving` with the real size and sha256.

The end of the upload decides the record's fate in one transaction (early_repository):
kept (202), removed as the duplicate of an earlier upload with its speculative samples
(200 with the earlier record, as for any duplicate), or failed with the reason and
without samples (the client went away, 413, storage failure). A record whose ingest
was killed stops being touched and is failed by the sweep of any ingest. Resumable (tus)
uploads share this path through services/ingest/tus_early.py (`overlap_enabled`,
`parsed_growing`, `start_record`, `beat`); the sweep leaves them alone (paused, not dead).
On S3 a multipart object cannot be read before it is completed: each full part of a
`POST /api/files` body is also stored as a segment the parser reads
(imuflow/storage/segments.py); a resumable upload on S3 is parsed after its last byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from uuid import UUID

import asyncpg

from imuflow import metrics
from imuflow.aio import wait_any
from imuflow.logs import fields
from imuflow.settings import Settings
from imuflow.storage import Storage, StorageError, is_s3
from imuflow.storage.local import LocalStorage, path_of
from services.ingest import early_repository
from services.ingest.acceptance import Options, parse_options
from services.ingest.multipart import UploadRejected
from services.ingest.repository import NewFile, StorageUnavailable
from services.ingest.storage import UploadSink, sanitize_filename

log = logging.getLogger("imuflow.ingest")
HEARTBEAT = 2.0  # seconds between a receiving ingest's touches of its record
STALE_AFTER = 15.0  # a receiving record untouched this long (7 missed beats) lost its ingest
SWEEP_EVERY = 5.0
ZIP_MAGIC = b"PK\x03\x04"


class EarlyRecord:
    """The record of one `POST /api/files` upload, made before its last byte (or never)."""

    def __init__(
        self, pool: asyncpg.Pool, storage: Storage, cfg: Settings, user_id: UUID, declared: int | None
    ) -> None:
        self.pool = pool
        self.user_id = user_id
        self.declared = declared
        self.enabled = overlap_enabled(storage, cfg, declared, segments=True)
        self.decided = not self.enabled
        self.file_id: UUID | None = None  # set once the record exists
        self.options: Options | None = None
        self.estimate = 0
        self._sink: UploadSink | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    @property
    def started(self) -> bool:
        return self.file_id is not None

    async def observe(
        self, sink: UploadSink, received: int, filename: str | None, form: dict[str, str]
    ) -> bool:
        """After each chunk of the file part: record the upload once it has its first bytes.

        False once decided (recorded or not): no more calls are needed.
        """
        if self.decided:
            return False
        if len(sink.first_bytes) < len(ZIP_MAGIC):
            return True
        self.decided = True
        if not parsed_growing(sink.first_bytes):
            return False
        try:
            options = parse_options(form)
        except UploadRejected:
            return False  # the end answers 400 with the reason
        if not sink.readable_while_writing():
            return False
        assert self.declared is not None
        # Every byte of the body not before the file part is at most the file's.
        self.estimate = max(self.declared - (received - sink.size), sink.size)
        new = NewFile(
            id=sink.file_id,
            user_id=self.user_id,
            filename=sanitize_filename(filename),
            size_bytes=self.estimate,
            sha256="",
            storage_uri=sink.uri,
            format=options.format,
            sensor=options.sensor,
            timezone=options.timezone,
        )
        if not await start_record(self.pool, new, sink.size):
            return False  # the end records it (or answers 503)
        self.file_id, self.options, self._sink = sink.file_id, options, sink
        self._heartbeat = asyncio.create_task(self._beat(), name=f"upload-heartbeat:{sink.file_id}")
        return False

    async def _beat(self) -> None:
        assert self.file_id is not None and self._sink is not None
        last = self._sink.size
        while True:
            await asyncio.sleep(HEARTBEAT)
            size = self._sink.size
            await beat(self.pool, self.file_id, size, new_bytes=size > last)
            last = size

    async def _stop_beating(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None

    async def finish(self, sink: UploadSink, options: Options) -> tuple[int, dict[str, Any]] | None:
        """The bytes are stored: (status, record), or None when the end must record it anew.

        None when options came after the file part and differ from those the record was
        made with: that record and what was parsed of it are removed.
        """
        assert self.file_id is not None
        await self._stop_beating()
        if options != self.options:
            await early_repository.remove(self.pool, self.file_id)
            log.info("options came after the file; recording it again", extra=fields(action="upload"))
            return None
        done = await early_repository.finish(
            self.pool, self.file_id, sink.size, sink.sha256, options.allow_duplicate
        )
        if done.record is None:
            raise UploadRejected(400, "the file was deleted while it was being uploaded")
        if done.duplicate:
            await sink.discard()
            metrics.UPLOADS.labels("duplicate").inc()
            log.info(
                "duplicate of a partly parsed upload removed",
                extra=fields(file_id=str(self.file_id), duplicate_of=str(done.record["id"]), action="upload"),
            )
            return 200, done.record
        metrics.UPLOADS.labels("accepted").inc()
        metrics.UPLOAD_BYTES.inc(sink.size)
        log.info(
            "upload stored", extra=fields(file_id=str(self.file_id), size_bytes=sink.size, action="upload")
        )
        return 202, done.record

    async def fail(self, sink: UploadSink, why: str) -> None:
        """The upload stopped: the record says so and holds no samples (cancel-safe)."""
        if self.file_id is None:
            return
        file_id = self.file_id
        reason = f"the upload stopped after {sink.size:,} of about {self.estimate:,} bytes: {why}"
        await self._stop_beating()
        try:
            await asyncio.shield(early_repository.fail(self.pool, file_id, reason))
        except StorageUnavailable as exc:  # left receiving: the sweep fails it
            log.warning("could not fail the stopped upload: %s", exc, extra=fields(action="upload"))


def overlap_enabled(storage: Storage, cfg: Settings, declared: int | None, *, segments: bool = False) -> bool:
    """Whether an upload of `declared` bytes is recorded at its first bytes and parsed growing.

    On S3 only where the writer stores the upload as readable segments (`segments`: a POST
    body's writer); a resumable upload's parts there cannot be read before the end."""
    return (
        (isinstance(storage, LocalStorage) or (segments and is_s3(storage)))
        and cfg.overlap_min_bytes > 0
        and declared is not None
        and declared >= cfg.overlap_min_bytes
    )


def parsed_growing(first_bytes: bytes) -> bool:
    """Whether a file starting with these (at least 4) bytes may be parsed while it streams:
    not a ZIP, which is split into its streams at the end."""
    return not first_bytes.startswith(ZIP_MAGIC)


async def start_record(pool: asyncpg.Pool, new: NewFile, received: int) -> bool:
    """Commit the receiving record and its FileQueued; False (logged) if Postgres is away."""
    try:
        await early_repository.start(pool, new, received)
    except StorageUnavailable as exc:
        log.warning("could not record the upload early: %s", exc, extra=fields(action="upload"))
        return False
    log.info(
        "upload recorded at its first bytes",
        extra=fields(file_id=str(new.id), size_bytes=new.size_bytes, action="upload"),
    )
    return True


async def beat(pool: asyncpg.Pool, file_id: UUID, received: int, *, new_bytes: bool) -> None:
    """The receiving ingest is alive; bytes that arrived queue again a job given back for want of them."""
    try:
        if await early_repository.touch(pool, file_id, received, new_bytes=new_bytes):
            log.info(
                "upload continues; its job queued again", extra=fields(file_id=str(file_id), action="upload")
            )
    except StorageUnavailable as exc:
        log.warning("upload heartbeat failed: %s", exc, extra=fields(action="upload"))


async def sweep(pool: asyncpg.Pool, storage: Storage, stop: asyncio.Event) -> None:
    """Until `stop`: fail receiving records whose ingest died, and remove their partial bytes."""
    while not stop.is_set():
        try:
            for row in await early_repository.stale(pool, STALE_AFTER):
                reason = (
                    f"the upload stopped after {row['upload_bytes_received'] or 0:,} of about "
                    f"{row['size_bytes']:,} bytes: the ingest receiving it stopped"
                )
                if await early_repository.fail(pool, row["id"], reason):
                    await _remove_partial(storage, row["storage_uri"])
                    log.warning(
                        "abandoned upload failed", extra=fields(file_id=str(row["id"]), action="sweep")
                    )
        except (StorageUnavailable, StorageError, OSError) as exc:
            log.warning("could not sweep abandoned uploads: %s", exc, extra=fields(action="sweep"))
        await wait_any(stop, timeout=SWEEP_EVERY)


async def _remove_partial(storage: Storage, uri: str) -> None:
    """The `<id>.part` (local) or the segments (S3) a killed ingest left; on S3 its
    multipart upload is aborted by the next ingest's start-up sweep (`Storage.sweep`)."""
    if is_s3(storage) and storage.owns(uri):
        await storage.delete_segments(uri)
    elif isinstance(storage, LocalStorage) and storage.owns(uri):
        path = path_of(uri)
        path.with_name(f"{path.name}.part").unlink(missing_ok=True)
