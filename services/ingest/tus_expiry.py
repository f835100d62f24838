"""The expiry sweeper of resumable uploads: unfinished ones past IMUFLOW_UPLOAD_EXPIRY are
removed from storage and forgotten; finished ones are forgotten (their file records stay)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from uuid import UUID

import asyncpg

from imuflow import metrics
from imuflow.logs import fields
from imuflow.settings import Settings
from imuflow.storage import PartialState, Storage, StorageError
from services.ingest import repository, tus_early, tus_repository

log = logging.getLogger("imuflow.ingest")


def interval(settings: Settings) -> float:
    """How often to look: often enough that an upload outlives its expiry by a quarter at most."""
    return min(30.0, max(0.2, settings.upload_expiry / 4))


async def sweep_once(pool: asyncpg.Pool, storage: Storage) -> int:
    """Remove what expired; how many unfinished uploads were removed."""
    removed = 0
    for candidate in await tus_repository.expired(pool):
        try:
            removed += await _expire(pool, storage, candidate.id)
        except tus_repository.UploadBusy:
            continue  # a PATCH is writing it: its state is not final yet; the next round
    metrics.TUS_IN_PROGRESS.set(await tus_repository.in_progress(pool))
    return removed


async def _expire(pool: asyncpg.Pool, storage: Storage, upload_id: UUID) -> int:
    """Remove one expired upload; 1 if it was unfinished (its bytes cleaned from storage).

    Under the upload's lock and read again: a PATCH still writing when the upload expired
    may have started its multipart upload since, which must be aborted too (a suite run on
    a loaded machine leaked one), or may have moved the expiry."""
    async with tus_repository.writing(pool, upload_id):
        upload = await tus_repository.still_expired(pool, upload_id)
        if upload is None:
            return 0
        if not upload.completed:
            await tus_early.fail(pool, upload, "it expired (no byte for IMUFLOW_UPLOAD_EXPIRY)")
            state = PartialState(upload.offset, upload.s3_upload_id, upload.s3_parts, upload.tail_bytes)
            await storage.abort_partial(str(upload.id), state)
            metrics.TUS_EXPIRED.inc()
            where = fields(upload_id=str(upload.id), offset=upload.offset, action="expire")
            log.info("upload expired", extra=where)
        await tus_repository.delete(pool, upload.id)
        return 0 if upload.completed else 1


async def run(settings: Settings, pool: asyncpg.Pool, storage: Storage, stop: asyncio.Event) -> None:
    """Sweep until `stop`; a failing database or store is logged and tried again next time."""
    while not stop.is_set():
        try:
            await sweep_once(pool, storage)
        except (repository.StorageUnavailable, StorageError, OSError) as exc:
            log.warning("expiry sweep failed", extra=fields(error=str(exc), action="expire"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval(settings))
