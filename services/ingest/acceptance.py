"""One stored upload becomes a file record: options, duplicates, ZIPs, the outbox.

Both ways in share it: `POST /api/files` (multipart, services/ingest/app.py) and a
finished resumable upload (services/ingest/tus.py), so a file is recorded the same way
whichever way its bytes came.
"""

from __future__ import annotations

import logging
import re
import zoneinfo
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
from fastapi import HTTPException

from contracts.formats import FORMATS
from contracts.records import FileRecord
from imuflow import metrics
from imuflow.logs import fields
from imuflow.settings import Settings
from imuflow.storage import Storage, StorageError
from imuflow.web import database_unavailable
from services.ingest import archive, repository
from services.ingest.multipart import UploadRejected
from services.ingest.storage import sanitize_filename

log = logging.getLogger("imuflow.ingest")
SENSOR_NAME = re.compile(r"^[A-Za-z0-9_ .-]{1,60}$")
TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Options:
    """What the client asked for besides the bytes."""

    format: str | None
    sensor: str | None
    timezone: str
    allow_duplicate: bool


def parse_options(form: dict[str, str]) -> Options:
    """Validate `format`, `sensor`, `timezone`, `allow_duplicate`; UploadRejected(400) with a reason."""
    fmt = (form.get("format") or "").strip().lower() or None
    if fmt is not None and fmt not in FORMATS:
        raise UploadRejected(400, f"unknown format {fmt!r}: use one of {', '.join(sorted(FORMATS))}")
    sensor = form.get("sensor") or None
    if sensor is not None and not SENSOR_NAME.match(sensor):
        raise UploadRejected(400, "sensor must be a short name such as 'accelerometer'")
    tz = form.get("timezone") or "UTC"
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise UploadRejected(400, f"unknown timezone {tz!r}: use an IANA name such as Europe/Berlin") from exc
    allow = form.get("allow_duplicate", "false").lower() in TRUE
    return Options(fmt, sensor, tz, allow)


@dataclass(frozen=True)
class StoredUpload:
    """Bytes already durable in storage under `uri`, not yet recorded."""

    file_id: UUID
    user_id: UUID
    filename: str | None
    size: int
    sha256: str
    uri: str
    first_bytes: bytes
    options: Options


async def accept_stored(
    pool: asyncpg.Pool,
    storage: Storage,
    cfg: Settings,
    stored: StoredUpload,
    discard: Callable[[], Awaitable[None]],
) -> tuple[int, dict[str, Any]]:
    """Record the upload (or find its duplicate); (HTTP status, file record).

    `discard` removes the stored bytes: called for a duplicate and on any failure, which is
    raised as HTTPException (4xx with the reason, or 503 when a dependency is down).
    """
    try:
        duplicate_of = await repository.find_duplicate(pool, stored.user_id, stored.sha256)
    except repository.StorageUnavailable as exc:
        await discard()
        raise database_unavailable(exc) from exc
    if duplicate_of is not None and not stored.options.allow_duplicate:
        await discard()
        existing = await repository.file_record(pool, duplicate_of, stored.user_id)
        metrics.UPLOADS.labels("duplicate").inc()
        return 200, dump(existing)
    new = repository.NewFile(
        id=stored.file_id,
        user_id=stored.user_id,
        filename=sanitize_filename(stored.filename),
        size_bytes=stored.size,
        sha256=stored.sha256,
        storage_uri=stored.uri,
        format=stored.options.format,
        sensor=stored.options.sensor,
        timezone=stored.options.timezone,
        duplicate_of=duplicate_of,
    )
    try:
        # A phone app's ZIP export becomes one record per sensor stream (services/ingest/archive.py).
        record = await archive.accept(pool, new, storage, cfg, stored.first_bytes)
        if record is None:
            record = await repository.record_upload(pool, new)
    except UploadRejected as exc:
        await discard()
        raise HTTPException(exc.status, exc.detail) from exc
    except repository.StorageUnavailable as exc:
        await discard()
        raise database_unavailable(exc) from exc
    except StorageError as exc:
        await discard()
        raise HTTPException(503, "the upload storage is unavailable; try again shortly") from exc
    except BaseException:
        await discard()
        raise
    metrics.UPLOADS.labels("accepted").inc()
    metrics.UPLOAD_BYTES.inc(stored.size)
    log.info(
        "upload stored",
        extra=fields(file_id=str(stored.file_id), size_bytes=stored.size, action="upload"),
    )
    return 202, dump(record)


def dump(record: dict[str, object] | None) -> dict[str, object]:
    """The record as the API shows it (404 when there is none)."""
    if record is None:
        raise HTTPException(404, "file not found")
    return FileRecord.model_validate(record).model_dump(mode="json")
