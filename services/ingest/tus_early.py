"""A resumable (tus) upload recorded at its first bytes, so that parsing overlaps it.

The same record as a large `POST /api/files` body (services/ingest/early.py,
early_repository.py): at the first PATCH's first 4 bytes (not a ZIP) of an upload whose
`Upload-Length` is at least `IMUFLOW_OVERLAP_MIN_BYTES`, on local storage, the record
(id = the upload's id, `size_bytes` = `Upload-Length`, exact) and its FileQueued are
committed; the parser reads the growing `<id>.tus`. Unlike a POST body, a tus upload that
stops is paused, not dead: the early sweep leaves it alone (any ingest may continue it),
and the parser gives the job back after `IMUFLOW_UPLOAD_PAUSE_YIELD` s without a byte;
the next PATCH's bytes queue it again (`beat`). It ends when the last PATCH completes it
(`early_repository.finish`: kept, or removed as a duplicate), or when it is terminated
(DELETE) or expires: then the record fails with the reason and without samples.
"""

from __future__ import annotations

import logging
import time
import uuid
from uuid import UUID

import asyncpg

from imuflow import metrics
from imuflow.logs import fields
from imuflow.settings import Settings
from imuflow.storage import Storage
from services.ingest import early, early_repository, tus_repository
from services.ingest.acceptance import parse_options
from services.ingest.multipart import UploadRejected
from services.ingest.repository import NewFile, StorageUnavailable
from services.ingest.storage import sanitize_filename
from services.ingest.tus_repository import TusUpload

log = logging.getLogger("imuflow.ingest")
HEAD = len(early.ZIP_MAGIC)


class TusEarly:
    """The early record of one tus upload, as seen by one PATCH."""

    def __init__(self, pool: asyncpg.Pool, storage: Storage, cfg: Settings, upload: TusUpload) -> None:
        self.pool = pool
        self.storage = storage
        self.upload = upload
        self.enabled = early.overlap_enabled(storage, cfg, upload.length)
        self.recorded = False  # the record exists and is receiving
        self.candidate = False  # no record yet, and this PATCH brings the first bytes
        self._head = b""
        self._beaten = 0.0  # when this PATCH last touched the record (0: not yet)

    async def begin(self) -> None:
        """Before the body: does the upload already have its receiving record?"""
        if not self.enabled:
            return
        try:
            state = await early_repository.receiving(self.pool, self.upload.id)
        except StorageUnavailable:
            self.enabled = False  # the last PATCH records it as any upload
            return
        self.recorded = state is True
        self.candidate = state is None and self.upload.offset == 0

    async def observe(self, chunk: bytes, received: int) -> None:
        """After each stored chunk: record the upload at its first bytes, or say bytes came."""
        if self.recorded:
            now = time.monotonic()
            if now - self._beaten >= early.HEARTBEAT:  # at once, then every HEARTBEAT s
                self._beaten = now
                await early.beat(self.pool, self.upload.id, received, new_bytes=True)
            return
        if not self.candidate:
            return
        self._head += chunk[: HEAD - len(self._head)]
        if len(self._head) < HEAD:
            return
        self.candidate = False
        if not early.parsed_growing(self._head):
            return
        options = parse_options(self.upload.metadata)  # validated at creation
        new = NewFile(
            id=self.upload.id,
            user_id=self.upload.user_id,
            filename=sanitize_filename(self.upload.metadata.get("filename")),
            size_bytes=self.upload.length,
            sha256="",
            storage_uri=self.storage.uri(str(self.upload.id)),
            format=options.format,
            sensor=options.sensor,
            timezone=options.timezone,
        )
        self.recorded = await early.start_record(self.pool, new, received)
        self._beaten = time.monotonic()


async def finish(pool: asyncpg.Pool, storage: Storage, upload: TusUpload, uri: str, sha256: str) -> TusUpload:
    """The last byte of an upload parsed while it streamed: keep its record, or (a duplicate)
    remove it with what was parsed of it and complete the upload as the earlier record, as
    a finished upload's duplicate is (HEAD names it in Imuflow-File-Id)."""
    allow = parse_options(upload.metadata).allow_duplicate
    done = await early_repository.finish(pool, upload.id, upload.length, sha256, allow)
    if done.record is None:  # deleted by its user (or failed) while it was being uploaded
        await storage.delete([uri])
        await tus_repository.delete(pool, upload.id)
        raise UploadRejected(410, "the file was deleted while it was being uploaded")
    file_id = uuid.UUID(str(done.record["id"]))
    await tus_repository.mark_completed(pool, upload.id, file_id)
    upload.completed, upload.file_id = True, file_id
    if done.duplicate:
        await storage.delete([uri])
        metrics.UPLOADS.labels("duplicate").inc()
        log.info(
            "duplicate of a partly parsed upload removed",
            extra=fields(upload_id=str(upload.id), duplicate_of=str(file_id), action="finish"),
        )
        return upload
    metrics.UPLOADS.labels("accepted").inc()
    metrics.UPLOAD_BYTES.inc(upload.length)
    log.info("upload finished", extra=fields(upload_id=str(upload.id), file_id=str(file_id), action="finish"))
    return upload


async def fail(pool: asyncpg.Pool, upload: TusUpload, why: str) -> bool:
    """The upload ends without its last byte: its receiving record (if any) fails, no samples."""
    reason = f"the upload stopped after {upload.offset:,} of {upload.length:,} bytes: {why}"
    return await early_repository.fail(pool, upload.id, reason)


async def is_receiving(pool: asyncpg.Pool, upload_id: UUID) -> bool:
    """Whether the upload has a record still receiving (finished by `early_repository.finish`)."""
    return await early_repository.receiving(pool, upload_id) is True
