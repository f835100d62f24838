"""The parser's heartbeat: a row in `parser_heartbeats`, upserted every few seconds.

The operator page lists live parsers from these rows (a parser is live while its row is
younger than three intervals), with what each is doing and the consumer lag it measured,
so operators see the fleet without broker admin calls. A database outage only skips beats;
a clean stop deletes the row, a killed parser's row ages out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from imuflow import db, dberrors, metrics
from imuflow.aio import wait_any
from imuflow.logs import fields
from imuflow.settings import Settings

log = logging.getLogger("imuflow.parser.heartbeat")
QUERIES = db.load_queries(Path(__file__).parent / "sql" / "heartbeat.sql")
INTERVAL = 5.0


class Heartbeat:
    """Writes this parser's heartbeat row until stopped."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, *, interval: float = INTERVAL) -> None:
        self.settings = settings
        self.pool = pool
        self.interval = interval
        self.hostname = socket.gethostname()
        self.parser_id = f"{self.hostname}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.started_at = datetime.now(UTC)

    async def run(self, stop: asyncio.Event) -> None:
        """Beat every `interval` seconds; leave (delete the row) on a clean stop."""
        beats = 0
        while not stop.is_set():
            try:
                await self.beat(prune=beats % 100 == 0)
                beats += 1
            except dberrors.DRIVER as exc:
                log.warning("heartbeat skipped: %s", exc, extra=fields(action="heartbeat_skip"))
            await wait_any(stop, timeout=self.interval)
        with contextlib.suppress(*dberrors.DRIVER):
            await self.pool.execute(QUERIES["leave"], self.parser_id)

    async def beat(self, *, prune: bool = False) -> None:
        """Write one heartbeat (and drop rows of parsers gone for a day)."""
        lag = int(metrics.CONSUMER_LAG.labels(self.settings.parser_group_id)._value.get())
        await self.pool.execute(
            QUERIES["beat"],
            self.parser_id,
            self.hostname,
            os.getpid(),
            self.started_at,
            self.interval,
            self.settings.parser_concurrency,
            int(metrics.FILES_IN_FLIGHT._value.get()),
            int(metrics.SAMPLES_PARSED._value.get()),
            lag,
        )
        if prune:
            await self.pool.execute(QUERIES["prune"])
