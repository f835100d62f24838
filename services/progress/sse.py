"""Server-Sent Event streams of file records: current state first, then live, replayable.

Event ids are `file_events` ids. A new connection gets the current record of each file it
covers, each with the id of that file's newest event, oldest change first: ids are
distinct and a client that drops mid-snapshot resumes from the last one it got, since the
replay after it holds exactly the files it has not seen yet (and their changes since). A
reconnect with a Last-Event-ID that is a position of the log (not beyond its newest id, not
before what was pruned) is replayed, coalesced: every state change, and of progress only
each file's latest; from memory when the id lies in the multiplexer's window of recent
events (services/progress/recent.py: no query, so a reconnect storm costs none), else
from Postgres. Any other Last-Event-ID (pruned past, garbage, from
another stack that is ahead) gets the full current state again. The live
queue is subscribed to before either, and events at or below the last id sent are
dropped, so nothing falls in the gap and nothing repeats.

A stream request that came through the Pushpin SSE edge (a valid Grip-Sig) gets the same
start, as one response that hands the connection to the edge (`edge_hold`, grip.py); the
edge then gets every later event from the multiplexer's publisher, not from here.

Each stream holds one of its user's `IMUFLOW_MAX_STREAMS_PER_USER` slots until it ends,
and ends by itself within SESSION_CHECK_SECONDS of its token or session ending.

What a stream costs is paid per client, so it is kept small: every event is encoded once
for all its clients (`FileEvent.sse`), what is ready at once (a replay, a snapshot, the
events a wake-up finds queued) goes out as one chunk, and the keep-alive comment is sent
by the stream itself, every IMUFLOW_SSE_PING_SECONDS, rather than by a ping task of
sse-starlette's per stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sse_starlette import ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response

from contracts.records import FileRecord
from imuflow import metrics
from imuflow.auth import hash_token
from imuflow.settings import Settings
from imuflow.web import database_unavailable, token_of
from services.progress import grip
from services.progress.limits import ReleasingEventSource, UserSlots
from services.progress.multiplexer import FileEvent, Multiplexer, Subscription, file_event
from services.progress.repository import ProgressRepository, Unavailable

SNAPSHOT_LIMIT = 500
REPLAY_PAGE = 1_000
EVENT_TYPES = {"completed": "completed", "failed": "failed", "cancelled": "cancelled"}
STREAM_RETRY_AFTER = 5  # seconds: the 429 of a user over IMUFLOW_MAX_STREAMS_PER_USER


def last_event_id(request: Request) -> int | None:
    """The client's Last-Event-ID header (or `last_event_id` query for tools)."""
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if raw and raw.isdigit() and len(raw) < 19:
        return int(raw)
    return None


def stream_slots(request: Request) -> UserSlots:
    """The app's per-user stream slots (created in lifespan)."""
    slots: UserSlots = request.app.state.streams
    return slots


async def stream_response(
    request: Request,
    mux: Multiplexer,
    repo: ProgressRepository,
    *,
    owner: UUID,
    user_id: UUID | None,
    file_id: UUID | None,
    ping_seconds: float,
) -> Response:
    """An SSE response for one user's files (or one file; user None = every user).

    `owner` is the caller, whose stream slot it takes (429 when they hold too many). A
    request through the SSE edge is handed to it instead (`edge_hold`).
    """
    token = token_of(request)
    settings: Settings = request.app.state.settings
    if token and grip.signed_by_edge(request, settings.sse_edge_key):
        grant = grip.Grant(user_id, file_id, owner, hash_token(token))
        return await edge_hold(request, grant, last_event_id(request))
    slots = stream_slots(request)
    slots.take(owner)
    sub = mux.subscribe(user_id, file_id, hash_token(token) if token else None)
    metrics.SSE_CLIENTS.inc()
    released = False

    async def release() -> None:
        nonlocal released
        if not released:
            released = True
            mux.unsubscribe(sub)
            metrics.SSE_CLIENTS.dec()
            slots.give_back(owner)

    return ReleasingEventSource(
        _events(request, sub, mux, repo, user_id, file_id, last_event_id(request), ping_seconds),
        release,
        ping=0,  # the stream sends its own keep-alive comments (_events)
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def edge_hold(request: Request, grant: grip.Grant, resume_after: int | None) -> Response:
    """The stream's start as the body, handed to the SSE edge to hold on the grant's channels.

    The edge holds the connection, so it takes none of the owner's stream slots; Pushpin's
    `client_maxconn` bounds them instead.
    """
    state = request.app.state
    mux: Multiplexer = state.mux
    settings: Settings = state.settings
    wants = Subscription(grant.user_id, grant.file_id).wants
    start = opening(mux, state.repo, wants, grant.user_id, grant.file_id, resume_after)
    chunks: list[bytes] = []
    sent = 0
    try:
        async for chunk, covered in start:
            chunks.append(chunk)
            sent = covered
    except Unavailable as exc:
        raise database_unavailable(exc) from exc
    headers = grip.hold_headers(grant, settings.sse_edge_key, sent, settings.sse_ping_seconds)
    return Response(b"".join(chunks), headers=headers, media_type="text/event-stream")


async def _events(
    request: Request,
    sub: Subscription,
    mux: Multiplexer,
    repo: ProgressRepository,
    user_id: UUID | None,
    file_id: UUID | None,
    resume_after: int | None,
    ping_seconds: float,
) -> AsyncGenerator[bytes, None]:
    sent = 0
    async for chunk, covered in opening(mux, repo, sub.wants, user_id, file_id, resume_after):
        sent = covered
        if chunk:
            yield chunk
    loop = asyncio.get_running_loop()
    ping_at = loop.time() + ping_seconds
    while not sub.overflowed and not sub.ended:
        events = await sub.get(timeout=max(ping_at - loop.time(), 0.0))
        fresh = [event for event in events if event.id > sent]
        if fresh:
            sent = fresh[-1].id
            for event in fresh:
                if event.event_type == "progress":
                    _observe_latency(event)
            yield b"".join(event.sse for event in fresh)
        if loop.time() >= ping_at:
            # sse-starlette cancels this generator when the client goes; the explicit
            # check is a backstop for quiet streams only (it costs a cancel scope per call).
            if not events and await request.is_disconnected():
                break
            ping_at = loop.time() + ping_seconds
            yield _ping()
    # A client that fell too far behind is let go; it reconnects and is replayed. A stream
    # whose session ended is closed; the browser's reconnect then gets its 401.


async def opening(
    mux: Multiplexer,
    repo: ProgressRepository,
    wants: Callable[[FileEvent], bool],
    user_id: UUID | None,
    file_id: UUID | None,
    resume_after: int | None,
) -> AsyncIterator[tuple[bytes, int]]:
    """A stream's start, chunk by chunk, each with the last event id it covers.

    The replay after `resume_after` when it is a position of the log, else the current
    state; the last chunk may be empty (it still says the id the start covers).
    """
    sent = 0
    # Read with no await since the subscription began: what comes later is in its queue.
    recent = mux.recent.replay(resume_after, wants) if resume_after is not None else None
    if recent is not None:
        sent = recent[-1].id if recent else resume_after or 0
        if recent:
            yield b"".join(event.sse for event in recent), sent
    elif resume_after is not None and await repo.resumable(resume_after):
        sent = resume_after
        async for page in _replay(repo, resume_after, user_id, file_id):
            sent = page[-1].id
            yield b"".join(event.sse for event in page), sent
    else:
        rows = await repo.snapshot(user_id, file_id, SNAPSHOT_LIMIT)
        snapshot = []
        for row, event_id in zip(rows, _snapshot_ids(rows), strict=True):
            record = FileRecord.model_validate(row)
            sent = max(sent, event_id)
            kind = EVENT_TYPES.get(record.status, "progress")
            sse = ServerSentEvent(data=record.model_dump_json(), event=kind, id=str(event_id))
            snapshot.append(sse.encode())
        if snapshot:
            yield b"".join(snapshot), sent
    yield b"", sent


def _ping() -> bytes:
    """A keep-alive comment, as sse-starlette's own ping writes it."""
    return ServerSentEvent(comment=f"ping - {datetime.now(UTC)}").encode()


def _snapshot_ids(rows: list[dict[str, Any]]) -> list[int]:
    """The SSE id of each snapshot row: its file's newest event id.

    Files with no event at all (rows made by hand; every service records one) come first
    and share the id just below the first logged file's (or the log's newest id), so a
    resume from it replays every logged file of the snapshot.
    """
    logged = [int(r["event_id"]) for r in rows if r["event_id"] is not None]
    unlogged = logged[0] - 1 if logged else int(rows[0]["newest_id"]) if rows else 0
    return [unlogged if r["event_id"] is None else int(r["event_id"]) for r in rows]


async def _replay(
    repo: ProgressRepository, after: int, user_id: UUID | None, file_id: UUID | None
) -> AsyncIterator[list[FileEvent]]:
    """The Postgres replay after `after`, a page of unsuperseded events at a time (none empty)."""
    while True:
        rows = await repo.replay(after, user_id, file_id, REPLAY_PAGE)
        if rows:
            after = rows[-1]["id"]
        page = [file_event(row) for row in rows if not row["superseded"]]
        if page:
            yield page
        if len(rows) < REPLAY_PAGE:
            return


def _observe_latency(event: FileEvent) -> None:
    if event.last_checkpoint_at is not None:  # the parser's batch-completed time
        metrics.EVENT_TO_SSE.observe(max(time.time() - event.last_checkpoint_at.timestamp(), 0.0))
