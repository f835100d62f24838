"""The expiry sweeper of resumable uploads: unfinished ones past IMUFLOW_UPLOAD_EXPIRY are
removed from storage and forgotten; finished ones are forgotten (their file records stay)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from imuflow import metrics
from imuflow.logs import fields
from imuflow.settings import Settings
from imuflow.storage import PartialState, Storage, StorageError
from services.ingest import repository, tus_repository

log = logging.getLogger("imuflow.ingest")


def interval(settings: Settings) -> float:
    """How often to look: often enough that an upload outlives its expiry by a quarter at most."""
    return min(30.0, max(0.2, settings.upload_expiry / 4))


async def sweep_once(pool: asyncpg.Pool, storage: Storage) -> int:
    """Remove what expired; how many unfinished uploads were removed."""
    removed = 0
    for upload in await tus_repository.expired(pool):
        if not upload.completed:
            state = PartialState(upload.offset, upload.s3_upload_id, upload.s3_parts, upload.tail_bytes)
            await storage.abort_partial(str(upload.id), state)
            removed += 1
            metrics.TUS_EXPIRED.inc()
            log.info(
                "upload expired",
                extra=fields(upload_id=str(upload.id), offset=upload.offset, action="expire"),
            )
        await tus_repository.delete(pool, upload.id)
    metrics.TUS_IN_PROGRESS.set(await tus_repository.in_progress(pool))
    return removed


async def run(settings: Settings, pool: asyncpg.Pool, storage: Storage, stop: asyncio.Event) -> None:
    """Sweep until `stop`; a failing database or store is logged and tried again next time."""
    while not stop.is_set():
        try:
            await sweep_once(pool, storage)
        except (repository.StorageUnavailable, StorageError, OSError) as exc:
            log.warning("expiry sweep failed", extra=fields(error=str(exc), action="expire"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval(settings))
