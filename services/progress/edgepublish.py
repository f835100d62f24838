"""Publishes every file event to the Pushpin SSE edge, batched, with bounded memory.

Set IMUFLOW_SSE_EDGE_PUBLISH_URL (Pushpin's `http://HOST:5561/publish/`) and the
multiplexer hands each event it reads to `EdgePublisher.add`: one item per channel (the
user's, the file's, the operators'; services/progress/grip.py), with the event's id and the
previous id published on that channel. What is queued goes out as one POST per round.

Every replica reads every event (the multiplexer follows `file_events`), and every replica
publishes it: Pushpin drops an id it has seen on a channel within `id_cache_ttl` (60 s),
so a client gets it once whichever replica is first, and no leader has to be elected or
failed over. A replica that is behind by more than that publishes ids whose prev-id no
longer matches; Pushpin then recovers each stream from its Grip-Link instead of repeating.

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

import httpx

from imuflow.aio import wait_any
from services.progress.grip import ADMIN_CHANNEL, file_channel, token_channel, user_channel

if TYPE_CHECKING:
    from services.progress.multiplexer import FileEvent

log = logging.getLogger("imuflow.progress.edge")
MAX_QUEUED = 50_000
MAX_CHANNELS = 100_000
BATCH = 500  # items per POST, about 1 MB: imuflow/stack/edge.py sets Pushpin's body limit to fit
RETRY_SECONDS = 1.0


class EdgePublisher:
    """A bounded queue of publish items and the task that posts them to Pushpin."""

    def __init__(self, url: str, client: httpx.AsyncClient | None = None) -> None:
        self.url = url
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
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
            self._queue.append(item)
        self._wake.set()

    def close_streams(self, token_hash: bytes) -> None:
        """Close every edge stream opened with this token (it was revoked or expired)."""
        channel = token_channel(token_hash)
        self._queue.append({"channel": channel, "formats": {"http-stream": {"action": "close"}}})
        self._wake.set()

    def _remember(self, channel: str, event_id: int) -> None:
        self._prev[channel] = event_id
        self._prev.move_to_end(channel)
        if len(self._prev) > MAX_CHANNELS:
            self._prev.popitem(last=False)

    async def run(self, stop: asyncio.Event) -> None:
        """Post what is queued, a batch per round, until `stop`."""
        client = self._client or httpx.AsyncClient(timeout=10.0)
        try:
            while not stop.is_set():
                if not self._queue:
                    self._wake.clear()
                    await wait_any(stop, self._wake, timeout=60.0)
                    continue
                batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
                try:
                    response = await client.post(self.url, json={"items": batch})
                    response.raise_for_status()
                    self.published += len(batch)
                except httpx.HTTPError as exc:
                    # Put them back in front (the queue's bound still holds) and try again.
                    log.warning("sse edge: publish to %s failed: %s", self.url, exc)
                    self._queue.extendleft(reversed(batch))
                    await wait_any(stop, timeout=RETRY_SECONDS)
        finally:
            if self._client is None:
                await client.aclose()


def _channels(event: FileEvent) -> tuple[str, str, str]:
    return user_channel(event.user_id), file_channel(event.file_id), ADMIN_CHANNEL
