"""One upstream subscription per process, fanned out to every SSE client.

The upstream is Postgres: every state change is a `file_events` row and a NOTIFY, so
each progress replica hears every change whichever replica applied it. Each client has
a bounded, coalescing queue: a newer progress event of a file replaces that file's
pending progress event (moved to the back, so ids stay in order), state changes
(completed, failed, cancelled) are never dropped, and a client that still falls too far
behind is disconnected; its EventSource reconnects with Last-Event-ID and is replayed.

Each subscription remembers the digest of the token (API token or session cookie) its
stream was opened with; every SESSION_CHECK_SECONDS one query checks all of them at once,
and the streams of a token that was signed out, revoked or has expired are ended.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from uuid import UUID

import asyncpg
from sse_starlette import ServerSentEvent

from contracts.records import FileRecord
from imuflow import db, dberrors, notifications
from imuflow.aio import wait_any
from services.progress.credentials import CredentialCache
from services.progress.edgepublish import EdgePublisher
from services.progress.recent import RECENT_EVENTS, RecentEvents

log = logging.getLogger("imuflow.progress")
QUERIES = db.load_queries(Path(__file__).parent / "sql" / "queries.sql")
MAX_PENDING = 2_000
FETCH_LIMIT = 1_000
POLL_SECONDS = 2.0  # fallback when a NOTIFY is missed (listener reconnecting)
SESSION_CHECK_SECONDS = 10.0  # a stream outlives its session by at most this (+ one query)


@dataclass(frozen=True)
class FileEvent:
    """One row of `file_events`."""

    id: int
    file_id: UUID
    user_id: UUID
    event_type: str
    # The event as it goes on the wire (id, type, the file record as `data`), encoded once
    # for every client that gets it, live or replayed.
    sse: bytes
    # The parser's batch-completed time, for the event-to-SSE latency metric.
    last_checkpoint_at: datetime | None = None


def file_event(row: asyncpg.Record) -> FileEvent:
    """A `file_events` row as a FileEvent with its SSE payload."""
    record = FileRecord.model_validate(row["data"])
    sse = ServerSentEvent(data=record.model_dump_json(), event=row["event_type"], id=str(row["id"]))
    return FileEvent(
        row["id"], row["file_id"], row["user_id"], row["event_type"], sse.encode(), record.last_checkpoint_at
    )


@dataclass(eq=False)  # identity hashing: each client is its own subscription
class Subscription:
    """One SSE client's bounded queue; `user_id` None means every user (operators)."""

    user_id: UUID | None
    file_id: UUID | None
    token_hash: bytes | None = None
    _pending: dict[int, FileEvent] = field(default_factory=dict)
    _progress_of: dict[UUID, int] = field(default_factory=dict)
    _waiter: asyncio.Future[None] | None = None
    overflowed: bool = False
    ended: bool = False

    def wants(self, event: FileEvent) -> bool:
        """Whether this client may and wants to see the event."""
        if self.user_id is not None and event.user_id != self.user_id:
            return False
        return self.file_id is None or event.file_id == self.file_id

    def put(self, event: FileEvent) -> None:
        """Queue an event, coalescing this file's older pending progress event."""
        if event.event_type == "progress":
            older = self._progress_of.pop(event.file_id, None)
            if older is not None:
                self._pending.pop(older, None)
            self._progress_of[event.file_id] = event.id
        else:
            self._progress_of.pop(event.file_id, None)
        self._pending[event.id] = event
        if len(self._pending) > MAX_PENDING:
            self.overflowed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def end(self) -> None:
        """End the stream (its credential is no longer valid); wakes a waiting `get`."""
        self.ended = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self, timeout: float) -> list[FileEvent]:
        """Everything pending, in id order (waits up to `timeout`; [] if nothing)."""
        if not self._pending:
            # One future and one timer per wait, no task: with 10,000 clients every
            # event wakes 10,000 of these (benchmarks/sse_fanout.py).
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            timer = loop.call_later(timeout, _release, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        events = list(self._pending.values())
        self._pending.clear()
        self._progress_of.clear()
        return events


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Multiplexer:
    """Listens for new file events and hands them to the subscriptions that want them."""

    def __init__(
        self,
        database_url: str,
        pool: asyncpg.Pool,
        replay_window: int = RECENT_EVENTS,
        edge: EdgePublisher | None = None,
    ) -> None:
        self.database_url = database_url
        self.pool = pool
        self.subscriptions: set[Subscription] = set()
        self.last_id = 0
        # Replays a reconnect from memory, and checks its token once per session check.
        self.recent = RecentEvents(replay_window)
        self.credentials = CredentialCache()
        self.started = asyncio.Event()
        # The SSE edge (IMUFLOW_SSE_EDGE_PUBLISH_URL): every event read is published to it.
        self.edge = edge

    def subscribe(
        self, user_id: UUID | None, file_id: UUID | None, token_hash: bytes | None = None
    ) -> Subscription:
        """A new client queue; call `unsubscribe` in a `finally`."""
        sub = Subscription(user_id, file_id, token_hash)
        self.subscriptions.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a client queue (idempotent)."""
        self.subscriptions.discard(sub)

    async def run(self, stop: asyncio.Event) -> None:
        """Follow `file_events` until `stop` is set."""
        self.last_id = await self._load_recent()
        self.started.set()
        if self.edge is not None:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.edge.run(stop))
                tasks.create_task(self._follow(stop))
        else:
            await self._follow(stop)

    async def _follow(self, stop: asyncio.Event) -> None:
        await notifications.follow(
            self.database_url,
            "imuflow_file_events",
            self._drain_or_warn,
            stop,
            poll_seconds=POLL_SECONDS,
            what="event fan-out",
        )

    async def _drain_or_warn(self) -> None:
        try:
            await self._drain()
        except dberrors.DRIVER as exc:  # Postgres away: the next round (NOTIFY or poll) reads on
            log.warning("event fan-out: cannot read events: %s", exc)

    async def watch_sessions(self, stop: asyncio.Event) -> None:
        """End the streams whose token is no longer live, checked for all at once, until `stop`."""
        while not await wait_any(stop, timeout=SESSION_CHECK_SECONDS):
            self.credentials.clear()  # so a revoked token opens no stream after this check
            subs = [s for s in self.subscriptions if s.token_hash is not None and not s.ended]
            if not subs:
                continue
            digests = list({s.token_hash for s in subs if s.token_hash is not None})
            try:
                rows = await self.pool.fetch(QUERIES["live_tokens"], digests)
            except dberrors.DRIVER as exc:
                log.warning("session check skipped: %s", exc)
                continue
            live = {bytes(r["token_hash"]) for r in rows}
            for sub in subs:
                if sub.token_hash not in live:
                    sub.end()

    async def _drain(self) -> None:
        while True:
            rows = await self.pool.fetch(QUERIES["events_after"], self.last_id, FETCH_LIMIT)
            for row in rows:
                event = file_event(row)
                for sub in self.subscriptions:
                    if sub.wants(event):
                        sub.put(event)
                self.recent.add(event)
                if self.edge is not None:
                    self.edge.add(event)
                self.last_id = event.id
            if len(rows) < FETCH_LIMIT:
                return

    async def _load_recent(self) -> int:
        """Fill the in-memory window with one query; the newest event id."""
        rows = await self.pool.fetch(QUERIES["recent_events"], self.recent.capacity)
        events = [file_event(r) for r in rows if r["id"] is not None]
        pruned = int(rows[0]["pruned_through"])
        # All of the log above the oldest row read is in memory; when fewer rows came back
        # than asked for, all of it above the pruned-through mark is.
        full = len(events) == self.recent.capacity
        floor = events[-1].id - 1 if full and events else pruned
        newest = events[0].id if events else int(await self.pool.fetchval(QUERIES["max_event_id"]))
        self.recent.load(events, floor=max(floor, pruned), newest=newest)
        if self.edge is not None:
            self.edge.seed(events)
        return newest
