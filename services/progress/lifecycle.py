"""Delete a file (and everything derived from it) or re-parse it from scratch."""

from __future__ import annotations

import logging
import re
import zoneinfo
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar
from uuid import UUID

import asyncpg
from fastapi import APIRouter, Body, HTTPException, Request, Response

from contracts import events, topics
from contracts.formats import FORMATS
from contracts.records import ErrorBody, FileRecord, ReparseRequest
from imuflow import db, outbox, retrying, storage
from imuflow.logs import fields
from imuflow.storage import Storage
from imuflow.web import CurrentUser, database_unavailable
from services.progress.api import NOT_FOUND, OwnedFile, Repo, owned_file
from services.progress.repository import DRIVER_ERRORS

log = logging.getLogger("imuflow.progress")
QUERIES = db.load_queries(Path(__file__).parent / "sql" / "data.sql")
SENSOR_NAME = re.compile(r"^[A-Za-z0-9_ .-]{1,60}$")
T = TypeVar("T")

router = APIRouter(prefix="/api", tags=["files"], responses={503: {"model": ErrorBody}})


@router.delete("/files/{file_id}", status_code=204, response_class=Response, responses=NOT_FOUND)
async def delete_file(record: OwnedFile, user: CurrentUser, repo: Repo, request: Request) -> Response:
    """Delete the file: cancel its job, then its samples, batch log, events and stored upload."""
    uris = await _retrying(lambda: delete_family(repo.pool, record.id, user.id))
    if uris is None:
        raise HTTPException(404, "file not found")
    await remove_stored(request.app.state.storage, uris)
    log.info("file deleted", extra=fields(file_id=str(record.id), files=len(uris), action="delete"))
    return Response(status_code=204)


@router.post(
    "/files/{file_id}/reparse",
    response_model=FileRecord,
    responses={**NOT_FOUND, 400: {"model": ErrorBody}},
)
async def reparse(
    record: OwnedFile,
    user: CurrentUser,
    repo: Repo,
    options: Annotated[ReparseRequest | None, Body()] = None,
) -> FileRecord:
    """Parse the file again from scratch as a new run, optionally with another format, sensor or zone."""
    checked = _checked(options or ReparseRequest())
    if not await _retrying(lambda: reparse_family(repo.pool, record.id, user.id, checked)):
        raise HTTPException(404, "file not found")
    log.info("re-parse queued", extra=fields(file_id=str(record.id), action="reparse"))
    return await owned_file(record.id, user, repo)


async def _retrying(work: Callable[[], Awaitable[T]]) -> T:
    """Run a transaction, again after a deadlock (another writer locked in another order)."""
    policy = retrying.bounded(
        "file transaction",
        transient=retrying.of_type(asyncpg.DeadlockDetectedError),
        attempts=3,
        initial=0.05,
        maximum=0.5,
    )

    async def attempt() -> T:  # tenacity would call a plain callable without awaiting it
        return await work()

    try:
        return await policy(attempt)
    except asyncpg.DeadlockDetectedError:
        raise HTTPException(503, "the file is busy; try again shortly") from None
    except DRIVER_ERRORS as exc:
        raise database_unavailable(exc) from exc


def _checked(options: ReparseRequest) -> ReparseRequest:
    fmt = options.format.lower() if options.format else options.format
    if fmt and fmt != "auto" and fmt not in FORMATS:
        known = ", ".join(["auto", *sorted(FORMATS)])
        raise HTTPException(400, f"unknown format {options.format!r}: use one of {known}")
    if options.sensor and not SENSOR_NAME.match(options.sensor):
        raise HTTPException(400, "sensor must be a short name such as 'accelerometer'")
    if options.timezone:
        try:
            zoneinfo.ZoneInfo(options.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise HTTPException(
                400, f"unknown timezone {options.timezone!r}: use an IANA name such as Europe/Berlin"
            ) from exc
    # 'auto' asks for detection again (stored as NULL: the parser detects).
    return ReparseRequest(
        format="" if fmt == "auto" else fmt, sensor=options.sensor, timezone=options.timezone
    )


async def reparse_family(pool: asyncpg.Pool, file_id: UUID, user_id: UUID, options: ReparseRequest) -> bool:
    """Start the file (a ZIP: each of its streams) over as a new run, in one transaction.

    The run bump fences a parser still on the old run; samples of a batch it is committing
    become visible once its row lock is released, before the samples are deleted here.
    """
    async with pool.acquire() as conn, conn.transaction():
        family = await conn.fetch(QUERIES["family"], file_id, user_id)
        if not family:
            return False
        children = [r["id"] for r in family if r["id"] != file_id]
        if children and options.sensor:
            raise HTTPException(400, "a ZIP's streams cannot share one sensor; re-parse the one file instead")
        targets = children or [file_id]
        rows = await conn.fetch(
            QUERIES["reparse_file"], targets, options.format, options.sensor, options.timezone
        )
        await conn.execute(QUERIES["delete_samples"], targets)
        for row in rows:
            await outbox.enqueue(
                conn,
                topics.FILES,
                row["id"],
                events.FileQueued.of_file(row, "reparse"),
            )
            await conn.fetchval(QUERIES["record_event"], row["id"])
    return True


async def delete_family(pool: asyncpg.Pool, file_id: UUID, user_id: UUID) -> list[str] | None:
    """Cancel, then delete the file and its children; their storage URIs (None if absent).

    The cancel commits first so a parser mid-batch stops at its fenced checkpoint. The
    delete locks the rows before deleting samples: a parser batch still in flight holds
    its row lock until it commits, so its samples are visible (and deleted) by then, and
    any later checkpoint finds no row and rolls its batch back.
    """
    async with pool.acquire() as conn:
        async with conn.transaction():
            family = await conn.fetch(QUERIES["family"], file_id, user_id)
            children = [r["id"] for r in family if r["id"] != file_id]
            if children:
                await conn.fetch(QUERIES["cancel_unfinished"], children)
            await conn.fetch(QUERIES["cancel_unfinished"], [file_id])
        async with conn.transaction():
            family = await conn.fetch(QUERIES["lock_family"], file_id, user_id)
            if not family:
                return None
            ids = [r["id"] for r in family]
            await conn.execute(QUERIES["delete_samples"], ids)
            await conn.execute(QUERIES["delete_batch_log"], ids)
            await conn.execute(QUERIES["delete_pending_outbox"], [str(i) for i in ids])
            await conn.execute(QUERIES["delete_files"], ids)
            await conn.execute(QUERIES["delete_events"], ids)
    return [r["storage_uri"] for r in family]


async def remove_stored(store: Storage, uris: list[str], attempts: int = 4) -> None:
    """Remove the stored uploads (every object of the family), retrying a store that fails."""
    policy = retrying.bounded(
        "removing stored uploads",
        transient=retrying.of_type(storage.StorageError),
        attempts=attempts,
        initial=0.2,
        maximum=2.0,
    )
    try:
        await policy(storage.delete_any, store, uris)
    except storage.StorageError as exc:
        log.error("stored uploads left behind", extra=fields(uris=uris, action="delete"))
        raise HTTPException(503, "the file is deleted but its upload could not be removed") from exc
