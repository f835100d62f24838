"""Transactional outbox: publish rows written with the state they announce.

Whoever changes state that other services must hear about (ingest on upload, the
progress service on retry or a stuck-job requeue, the SQL reset function) inserts an
`outbox` row in the same transaction. Every service runs this relay; rows are claimed
with SKIP LOCKED, sent, and marked published in one transaction, so a crash between
send and mark only sends twice (consumers are idempotent), never zero times.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from contracts import topics
from imuflow import db, dberrors
from imuflow.aio import wait_any
from imuflow.settings import Settings

log = logging.getLogger(__name__)
QUERIES = db.load_queries(Path(__file__).parent / "sql" / "outbox.sql")
BATCH = 200
POLL_SECONDS = 2.0  # fallback when a NOTIFY is missed (e.g. while the listener reconnects)
PRUNE_EVERY_SECONDS = 600.0
KEEP_PUBLISHED = timedelta(days=1)  # published rows are history, kept a day for debugging


async def enqueue(conn: asyncpg.Connection, base_topic: str, key: UUID, payload: dict[str, Any]) -> None:
    """Add a message to the outbox inside the caller's transaction."""
    await conn.execute(
        "INSERT INTO outbox (topic, key, payload) VALUES ($1, $2, $3)",
        base_topic,
        str(key),
        payload,
    )


class OutboxRelay:
    """Publishes pending outbox rows to Kafka until stopped."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, producer: AIOKafkaProducer) -> None:
        self.settings = settings
        self.pool = pool
        self.producer = producer
        self._wake = asyncio.Event()

    async def publish_pending(self) -> int:
        """Publish one batch of pending rows; return how many were published."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(QUERIES["claim_pending"], BATCH)
            if not rows:
                return 0
            sends = [
                await self.producer.send(
                    topics.topic_name(self.settings.kafka_topic_prefix, row["topic"]),
                    value=json.dumps(row["payload"]).encode(),
                    key=row["key"].encode(),
                )
                for row in rows
            ]
            await asyncio.gather(*sends)
            await conn.execute(QUERIES["mark_published"], [row["id"] for row in rows])
            files = [UUID(row["key"]) for row in rows if row["topic"] == topics.FILES]
            if files:
                await conn.fetch(QUERIES["mark_files_queued"], files)
        return len(rows)

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set; wake on NOTIFY, poll as a fallback, back off on errors."""
        listener = await self._listen()
        delay = 0.2
        next_prune = time.monotonic()
        try:
            while not stop.is_set():
                try:
                    while await self.publish_pending() == BATCH:
                        pass
                    delay = 0.2
                    if time.monotonic() >= next_prune:
                        # Every batch of every job passes through here: without pruning
                        # the table grows for ever.
                        await self.prune()
                        next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
                except (KafkaError, *dberrors.DRIVER) as exc:
                    log.warning("outbox relay: publish failed, retrying in %.1fs: %s", delay, exc)
                    await wait_any(stop, timeout=delay)
                    delay = min(delay * 2, 5.0)
                    continue
                self._wake.clear()
                if listener is None or listener.is_closed():
                    listener = await self._listen()
                await wait_any(stop, self._wake, timeout=POLL_SECONDS)
        finally:
            if listener is not None and not listener.is_closed():
                await listener.close()

    async def prune(self, keep: timedelta = KEEP_PUBLISHED) -> int:
        """Delete rows published longer than `keep` ago; return how many."""
        result: str = await self.pool.execute(QUERIES["prune_published"], keep)
        return int(result.split()[-1])

    async def _listen(self) -> asyncpg.Connection | None:
        try:
            conn = await db.connect(self.settings.database_url)
            await conn.add_listener("imuflow_outbox", lambda *_: self._wake.set())
            return conn
        except (db.DatabaseError, OSError, asyncpg.PostgresError) as exc:
            log.warning("outbox relay: cannot LISTEN, polling instead: %s", exc)
            return None
