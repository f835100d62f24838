"""The newest file events in memory, so a reconnect storm replays without asking Postgres.

When a progress replica restarts, every client it had reconnects at once with its
Last-Event-ID; replaying each from Postgres costs a query per client (SPEC §4 coalescing,
`replay` in sql/queries.sql). The multiplexer instead loads the newest RECENT_EVENTS
events with one query at start-up and appends every event it fans out, so a Last-Event-ID
inside that window is replayed from memory with the same coalescing as the query: every
state change, and of progress only each file's latest. One older than the window, or
beyond the newest event this replica has seen (a client coming from a replica that is
ahead), is left to the Postgres replay.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.progress.multiplexer import FileEvent

RECENT_EVENTS = 20_000  # IMUFLOW_SSE_REPLAY_WINDOW: about 20 MB of payloads, minutes of ten files parsing


class RecentEvents:
    """A bounded, id-ordered window of the newest events; replays any id inside it."""

    def __init__(self, capacity: int = RECENT_EVENTS) -> None:
        self.capacity = capacity
        self._ids: list[int] = []
        self._events: list[FileEvent] = []
        # Every event with an id above `floor` is held (ids at or below it may not be).
        self.floor = 0
        self.newest = 0
        self.loaded = False

    def load(self, events: Iterable[FileEvent], *, floor: int, newest: int) -> None:
        """Start from the log as read at start-up: `events` are all of it above `floor`."""
        self._events = sorted(events, key=lambda e: e.id)
        self._ids = [e.id for e in self._events]
        self.floor = floor
        self.newest = max(newest, self._ids[-1] if self._ids else 0)
        self.loaded = self.capacity > 0

    def add(self, event: FileEvent) -> None:
        """Append an event the fan-out read (ids only grow), dropping the oldest over capacity."""
        if event.id <= self.newest:
            return
        self._ids.append(event.id)
        self._events.append(event)
        self.newest = event.id
        # Trim in chunks of a tenth, so a full window does not copy its lists per event.
        if len(self._ids) > self.capacity + self.capacity // 10:
            cut = len(self._ids) - self.capacity
            self.floor = self._ids[cut - 1]
            del self._ids[:cut]
            del self._events[:cut]

    def covers(self, after: int) -> bool:
        """Whether the events after this Last-Event-ID are all here."""
        return self.loaded and self.floor <= after <= self.newest

    def replay(self, after: int, wants: Callable[[FileEvent], bool]) -> list[FileEvent] | None:
        """The coalesced replay after `after` of the events `wants` (None: not covered)."""
        if not self.covers(after):
            return None
        start = bisect.bisect_right(self._ids, after)
        later: set[object] = set()  # files with a later event than the one looked at
        kept: list[FileEvent] = []
        for event in reversed(self._events[start:]):
            if not wants(event):
                continue
            if event.event_type != "progress" or event.file_id not in later:
                kept.append(event)
            later.add(event.file_id)
        kept.reverse()
        return kept

    def __len__(self) -> int:
        return len(self._ids)
