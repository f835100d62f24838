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

Each stream holds one of its user's `IMUFLOW_MAX_STREAMS_PER_USER` slots until it ends,
and ends by itself within SESSION_CHECK_SECONDS of its token or session ending.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any
from uuid import UUID

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request

from contracts.records import FileRecord
from imuflow import metrics
from imuflow.auth import hash_token
from imuflow.web import token_of
from services.progress.limits import ReleasingEventSource, UserSlots
from services.progress.multiplexer import FileEvent, Multiplexer, Subscription, file_event
from services.progress.repository import ProgressRepository

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


def stream_response(
    request: Request,
    mux: Multiplexer,
    repo: ProgressRepository,
    *,
    owner: UUID,
    user_id: UUID | None,
    file_id: UUID | None,
    ping_seconds: float,
) -> EventSourceResponse:
    """An SSE response for one user's files (or one file; user None = every user).

    `owner` is the caller, whose stream slot it takes (429 when they hold too many).
    """
    slots = stream_slots(request)
    slots.take(owner)
    token = token_of(request)
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
        _events(request, sub, mux, repo, user_id, file_id, last_event_id(request)),
        release,
        ping=ping_seconds,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _events(
    request: Request,
    sub: Subscription,
    mux: Multiplexer,
    repo: ProgressRepository,
    user_id: UUID | None,
    file_id: UUID | None,
    resume_after: int | None,
) -> AsyncGenerator[ServerSentEvent, None]:
    sent = 0
    # Read with no await since the subscription began: what comes later is in its queue.
    recent = mux.recent.replay(resume_after, sub.wants) if resume_after is not None else None
    if recent is not None:
        sent = resume_after or 0
        for event in recent:
            sent = event.id
            yield _sse(event)
    elif resume_after is not None and await repo.resumable(resume_after):
        sent = resume_after
        async for event in _replay(repo, resume_after, user_id, file_id):
            sent = event.id
            yield _sse(event)
    else:
        rows = await repo.snapshot(user_id, file_id, SNAPSHOT_LIMIT)
        for row, event_id in zip(rows, _snapshot_ids(rows), strict=True):
            record = FileRecord.model_validate(row)
            sent = max(sent, event_id)
            yield ServerSentEvent(
                data=record.model_dump_json(),
                event=EVENT_TYPES.get(record.status, "progress"),
                id=str(event_id),
            )
    while not sub.overflowed and not sub.ended:
        events = await sub.get(timeout=5.0)
        # sse-starlette cancels this generator when the client goes; the explicit
        # check is a backstop for quiet streams only (it costs a cancel scope per call).
        if not events and await request.is_disconnected():
            break
        for event in events:
            if event.id <= sent:
                continue
            sent = event.id
            if event.event_type == "progress":
                _observe_latency(event)
            yield _sse(event)
    # A client that fell too far behind is let go; it reconnects and is replayed. A stream
    # whose session ended is closed; the browser's reconnect then gets its 401.


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
) -> AsyncIterator[FileEvent]:
    while True:
        rows = await repo.replay(after, user_id, file_id, REPLAY_PAGE)
        for row in rows:
            after = row["id"]
            if not row["superseded"]:
                yield file_event(row)
        if len(rows) < REPLAY_PAGE:
            return


def _sse(event: FileEvent) -> ServerSentEvent:
    return ServerSentEvent(data=event.payload, event=event.event_type, id=str(event.id))


def _observe_latency(event: FileEvent) -> None:
    if event.last_checkpoint_at is not None:  # the parser's batch-completed time
        metrics.EVENT_TO_SSE.observe(max(time.time() - event.last_checkpoint_at.timestamp(), 0.0))
