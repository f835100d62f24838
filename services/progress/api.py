"""The files API of the progress service: list, read, progress, batch log, commands."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from functools import partial
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from sse_starlette import EventSourceResponse

from contracts.records import BatchLog, ErrorBody, FileList, FileProgress, FileRecord
from imuflow.auth import User
from imuflow.settings import Settings
from imuflow.web import AppSettings, CurrentUser, database_unavailable, pool_of, user_by
from services.progress.multiplexer import Multiplexer
from services.progress.repository import ProgressRepository, Unavailable
from services.progress.sse import stream_response


# async: a plain `def` dependency would run in a worker thread, a hop per request.
async def repo_of(request: Request) -> ProgressRepository:
    """The app's repository (created in lifespan)."""
    repo: ProgressRepository = request.app.state.repo
    return repo


async def mux_of(request: Request) -> Multiplexer:
    """The app's event multiplexer (created in lifespan)."""
    mux: Multiplexer = request.app.state.mux
    return mux


Repo = Annotated[ProgressRepository, Depends(repo_of)]
Mux = Annotated[Multiplexer, Depends(mux_of)]


async def stream_user(request: Request, mux: Multiplexer) -> User:
    """The caller of an event stream, through the multiplexer's credential cache.

    A reconnect storm then costs a query per token, not per client; the cache lasts until
    the next session check, which ends a revoked token's streams (credentials.py).
    """
    return await user_by(request, partial(mux.credentials.user, pool_of(request)))


NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}, 401: {"model": ErrorBody}}
TOO_MANY: dict[int | str, dict[str, Any]] = {
    429: {"model": ErrorBody, "description": "over a per-user limit; see Retry-After"}
}

router = APIRouter(prefix="/api", tags=["files"], responses={503: {"model": ErrorBody}})


async def owned_file(file_id: UUID, user: CurrentUser, repo: Repo) -> FileRecord:
    """The caller's file; another user's file is 404, never 403 (no existence leak)."""
    try:
        row = await repo.get_file(file_id, user.id)
    except Unavailable as exc:
        raise database_unavailable(exc) from exc
    if row is None:
        raise HTTPException(404, "file not found")
    return FileRecord.model_validate(row)


OwnedFile = Annotated[FileRecord, Depends(owned_file)]


def encode_cursor(record: FileRecord) -> str:
    """The opaque cursor after `record`: its (created_at, id), versioned, base64url."""
    raw = f"1|{record.created_at.isoformat()}|{record.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """(created_at, id) of a cursor made by `encode_cursor`; 400 for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, at, file_id = raw.split("|")
        moment = datetime.fromisoformat(at)
        if version != "1" or moment.tzinfo is None:
            raise ValueError(version)
        return moment, UUID(file_id)
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise HTTPException(400, "invalid cursor: pass the `next` of the previous page unchanged") from exc


@router.get("/files", response_model=FileList, responses={**NOT_FOUND, 400: {"model": ErrorBody}})
async def list_files(
    user: CurrentUser,
    repo: Repo,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=200, description="`next` of the previous page")] = None,
    before: datetime | None = None,
) -> FileList:
    """The caller's files, newest first, a page at a time: follow `next` as `cursor`."""
    after = decode_cursor(cursor) if cursor else None
    try:
        rows = await repo.list_files(user.id, limit + 1, before, after)
    except Unavailable as exc:
        raise database_unavailable(exc) from exc
    items = [FileRecord.model_validate(r) for r in rows[:limit]]
    more = len(rows) > limit
    return FileList(items=items, next=encode_cursor(items[-1]) if more else None)


@router.get("/files/{file_id}", response_model=FileRecord, responses=NOT_FOUND)
async def get_file(record: OwnedFile) -> FileRecord:
    """One file record."""
    return record


@router.get("/files/{file_id}/progress", response_model=FileProgress, responses=NOT_FOUND)
async def get_progress(record: OwnedFile, repo: Repo) -> FileProgress:
    """The row of `get_file_processing_progress(file_uuid)`."""
    row = await repo.progress_row(record.id)
    if row is None:
        raise HTTPException(404, "file not found")
    return FileProgress.model_validate(row)


@router.get("/files/{file_id}/batches", response_model=BatchLog, responses=NOT_FOUND)
async def get_batches(record: OwnedFile, repo: Repo) -> BatchLog:
    """The file's batch log (`streaming_processing_logs`), oldest first."""
    return BatchLog.model_validate({"items": await repo.batch_log(record.id)})


@router.post(
    "/files/{file_id}/cancel", response_model=FileRecord, responses={**NOT_FOUND, 409: {"model": ErrorBody}}
)
async def cancel(record: OwnedFile, user: CurrentUser, repo: Repo) -> FileRecord:
    """Cancel a job; the parser stops at its next batch boundary."""
    if not await repo.cancel(record.id, user.id):
        raise HTTPException(409, f"the job is {record.status}; only unfinished jobs can be cancelled")
    return await owned_file(record.id, user, repo)


@router.post(
    "/files/{file_id}/retry", response_model=FileRecord, responses={**NOT_FOUND, 409: {"model": ErrorBody}}
)
async def retry(record: OwnedFile, user: CurrentUser, repo: Repo) -> FileRecord:
    """Resume a failed or cancelled job from its last checkpoint."""
    if not await repo.retry(record.id, user.id):
        raise HTTPException(409, f"the job is {record.status}; only failed or cancelled jobs can be retried")
    return await owned_file(record.id, user, repo)


@router.get(
    "/files/{file_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **NOT_FOUND, **TOO_MANY},
)
async def file_events(
    request: Request, record: OwnedFile, user: CurrentUser, repo: Repo, mux: Mux, cfg: AppSettings
) -> Response:
    """Live events of one file (current state first; Last-Event-ID replays)."""
    return await stream_response(
        request,
        mux,
        repo,
        owner=user.id,
        user_id=user.id,
        file_id=record.id,
        ping_seconds=cfg.sse_ping_seconds,
    )


@router.get(
    "/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}, 401: {"model": ErrorBody}, **TOO_MANY},
)
async def all_events(request: Request) -> Response:
    """Live events of all the caller's files."""
    # What the dependencies of the other routes would give, taken by hand: FastAPI solves
    # each dependency per request (~50 µs for these four), which a restarted replica's
    # reconnect storm pays once per client. The OpenAPI document is the same.
    state = request.app.state
    mux: Multiplexer = state.mux
    user = await stream_user(request, mux)
    settings: Settings = state.settings
    return await stream_response(
        request,
        mux,
        state.repo,
        owner=user.id,
        user_id=user.id,
        file_id=None,
        ping_seconds=settings.sse_ping_seconds,
    )
