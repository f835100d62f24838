"""Server-Sent Event streams of file records: current state first, then live, replayable.

Event ids are `file_events` ids. A new connection gets the current state of each file it
covers, all with the newest event id at that moment; a reconnect with Last-Event-ID is
replayed from Postgres (sse-starlette keeps no history). The live queue is subscribed to
before either, and events at or below the last id sent are dropped, so nothing falls in
the gap and nothing repeats.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import datetime
from uuid import UUID

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request

from contracts.records import FileRecord
from imuflow import metrics
from services.progress.multiplexer import FileEvent, Multiplexer, file_event
from services.progress.repository import ProgressRepository

SNAPSHOT_LIMIT = 500
REPLAY_PAGE = 1_000
EVENT_TYPES = {"completed": "completed", "failed": "failed", "cancelled": "cancelled"}


def last_event_id(request: Request) -> int | None:
    """The client's Last-Event-ID header (or `last_event_id` query for tools)."""
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if raw and raw.isdigit() and len(raw) < 19:
        return int(raw)
    return None


def stream_response(
    request: Request,
    mux: Multiplexer,
    repo: ProgressRepository,
    *,
    user_id: UUID | None,
    file_id: UUID | None,
    ping_seconds: float,
) -> EventSourceResponse:
    """An SSE response for one user's files (or one file; user None = every user)."""
    return EventSourceResponse(
        _events(request, mux, repo, user_id, file_id, last_event_id(request)),
        ping=ping_seconds,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _events(
    request: Request,
    mux: Multiplexer,
    repo: ProgressRepository,
    user_id: UUID | None,
    file_id: UUID | None,
    resume_after: int | None,
) -> AsyncIterator[ServerSentEvent]:
    sub = mux.subscribe(user_id, file_id)
    metrics.SSE_CLIENTS.inc()
    try:
        sent = 0
        if resume_after is not None and resume_after >= await repo.oldest_event_id() - 1:
            async for event in _replay(repo, resume_after, user_id, file_id):
                sent = event.id
                yield _sse(event)
        else:
            sent = await repo.max_event_id()
            for row in await repo.snapshot(user_id, file_id, SNAPSHOT_LIMIT):
                record = FileRecord.model_validate(row)
                yield ServerSentEvent(
                    data=record.model_dump_json(),
                    event=EVENT_TYPES.get(record.status, "progress"),
                    id=str(sent),
                )
        while not sub.overflowed:
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
        # A client that fell too far behind is let go; it reconnects and is replayed.
    finally:
        mux.unsubscribe(sub)
        metrics.SSE_CLIENTS.dec()


async def _replay(
    repo: ProgressRepository, after: int, user_id: UUID | None, file_id: UUID | None
) -> AsyncIterator[FileEvent]:
    while True:
        rows = await repo.replay(after, user_id, file_id, REPLAY_PAGE)
        for row in rows:
            event = file_event(row)
            after = event.id
            yield event
        if len(rows) < REPLAY_PAGE:
            return


def _sse(event: FileEvent) -> ServerSentEvent:
    return ServerSentEvent(data=event.payload, event=event.event_type, id=str(event.id))


def _observe_latency(event: FileEvent) -> None:
    # The record's last_checkpoint_at is the parser's batch-completed time.
    marker = '"last_checkpoint_at":"'
    start = event.payload.find(marker)
    if start < 0:
        return
    start += len(marker)
    end = event.payload.find('"', start)
    try:
        checkpoint = datetime.fromisoformat(event.payload[start:end].replace("Z", "+00:00"))
    except ValueError:
        return
    metrics.EVENT_TO_SSE.observe(max(time.time() - checkpoint.timestamp(), 0.0))
