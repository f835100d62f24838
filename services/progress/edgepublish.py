"""Publishes every file event to the Pushpin SSE edge, batched, with bounded memory.

Set IMUFLOW_SSE_EDGE_PUBLISH_URL (Pushpin's `http://HOST:5561/publish/`) and the
multiplexer hands each event it reads to `EdgePublisher.add`: one item per channel (the
user's, the file's, the operators'; services/progress/grip.py), with the event's id and the
previous id published on that channel. What is queued goes out as one POST per round.

Every replica reads every event (the multiplexer follows `file_events`), but one publishes:
the replica holding a Postgres advisory lock on a connection of its own (PUBLISH_LOCK).
Two publishers would not repeat an event (Pushpin drops the second copy, or its prev-id
mismatch makes Pushpin recover the stream), but each second copy can cost a recovery
request per held stream, and a recovery's replay is coalesced, so clients would see fewer
progress events (seen with two replicas while this was built). The others follow: they
track each channel's previous id, queue nothing, and try for the lock every
LEADER_RETRY_SECONDS; when the leader dies its connection ends, the lock passes on, and
what was published in between is repaired by the next publish's prev-id mismatch.

Memory is bounded twice: at most MAX_QUEUED items wait (beyond that the oldest are
dropped, which the next publish's prev-id mismatch repairs), and the previous id is kept
for the MAX_CHANNELS most recently used channels (a channel not among them is published
without prev-id, which Pushpin delivers unchecked).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx

from imuflow import dberrors
from imuflow.aio import wait_any
from services.progress.grip import ADMIN_CHANNEL, file_channel, user_channel

if TYPE_CHECKING:
    from services.progress.multiplexer import FileEvent

log = logging.getLogger("imuflow.progress.edge")
MAX_QUEUED = 50_000
MAX_CHANNELS = 100_000
BATCH = 500  # items per POST, about 1 MB: imuflow/stack/edge.py sets Pushpin's body limit to fit
RETRY_SECONDS = 1.0
LEADER_RETRY_SECONDS = 2.0
PUBLISH_LOCK = 7_202_617  # advisory-lock key: the one replica that publishes to the edge


class EdgePublisher:
    """A bounded queue of publish items and the task that posts them to Pushpin."""

    def __init__(self, url: str, database_url: str, client: httpx.AsyncClient | None = None) -> None:
        self.url = url
        self.database_url = database_url
        self.leading = False
        self._client = client
        self._queue: deque[dict[str, Any]] = deque(maxlen=MAX_QUEUED)
        self._prev: OrderedDict[str, int] = OrderedDict()
        self._wake = asyncio.Event()
        self.published = 0
        self.dropped = 0

    def seed(self, events: list[FileEvent]) -> None:
        """Remember each channel's newest id among `events` (the replay window at start-up)."""
        for event in sorted(events, key=lambda e: e.id):
            for channel in _channels(event):
                self._remember(channel, event.id)

    def add(self, event: FileEvent) -> None:
        """Queue the event for each of its channels."""
        content = event.sse.decode()
        for channel in _channels(event):
            item: dict[str, Any] = {
                "channel": channel,
                "id": str(event.id),
                "formats": {"http-stream": {"content": content}},
            }
            prev = self._prev.get(channel)
            if prev is not None:
                if prev >= event.id:
                    continue  # seen already (seeded from the window)
                item["prev-id"] = str(prev)
            self._remember(channel, event.id)
            if not self.leading:
                continue
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
            self._queue.append(item)
        self._wake.set()

    def _remember(self, channel: str, event_id: int) -> None:
        self._prev[channel] = event_id
        self._prev.move_to_end(channel)
        if len(self._prev) > MAX_CHANNELS:
            self._prev.popitem(last=False)

    async def run(self, stop: asyncio.Event) -> None:
        """Lead (publish) or follow, until `stop`."""
        client = self._client or httpx.AsyncClient(timeout=10.0)
        try:
            while not stop.is_set():
                try:
                    conn = await asyncpg.connect(self.database_url, timeout=10)
                except dberrors.DRIVER as exc:
                    log.warning("sse edge: cannot reach Postgres for the publish lock: %s", exc)
                    await wait_any(stop, timeout=LEADER_RETRY_SECONDS)
                    continue
                try:
                    await self._lead_or_follow(stop, conn, client)
                except dberrors.DRIVER as exc:
                    log.warning("sse edge: publish lock lost: %s", exc)
                finally:
                    self.leading = False
                    conn.terminate()
        finally:
            if self._client is None:
                await client.aclose()

    async def _lead_or_follow(
        self, stop: asyncio.Event, conn: asyncpg.Connection, client: httpx.AsyncClient
    ) -> None:
        while not stop.is_set():
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", PUBLISH_LOCK):
                self.leading = True
                log.info("sse edge: this replica publishes to %s", self.url)
                await self._publish(stop, conn, client)
                return
            await wait_any(stop, timeout=LEADER_RETRY_SECONDS)

    async def _publish(
        self, stop: asyncio.Event, conn: asyncpg.Connection, client: httpx.AsyncClient
    ) -> None:
        """Post what is queued, a batch per round, while the lock's connection lives."""
        while not stop.is_set() and not conn.is_closed():
            if not self._queue:
                self._wake.clear()
                if not await wait_any(stop, self._wake, timeout=LEADER_RETRY_SECONDS):
                    await conn.execute("SELECT 1")  # the lock is only as alive as its connection
                continue
            await self._post_batch(stop, client)

    async def _post_batch(self, stop: asyncio.Event, client: httpx.AsyncClient) -> None:
        """Post the oldest BATCH queued items; put them back in front if Pushpin is away."""
        batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
        try:
            response = await client.post(self.url, json={"items": batch})
            response.raise_for_status()
            self.published += len(batch)
        except httpx.HTTPError as exc:
            # The queue's bound still holds: extendleft drops from the newest end if full.
            log.warning("sse edge: publish to %s failed: %s", self.url, exc)
            self._queue.extendleft(reversed(batch))
            await wait_any(stop, timeout=RETRY_SECONDS)


def _channels(event: FileEvent) -> tuple[str, str, str]:
    return user_channel(event.user_id), file_channel(event.file_id), ADMIN_CHANNEL
