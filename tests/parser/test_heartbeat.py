"""The parser's heartbeat row on a real Postgres: written while running, gone after a clean stop."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from imuflow import metrics
from imuflow.settings import Settings
from services.parser.heartbeat import Heartbeat

pytestmark = pytest.mark.integration


async def test_beats_while_running_and_leaves_on_a_clean_stop(pool: asyncpg.Pool) -> None:
    settings = Settings(database_url="x", parser_concurrency=3, parser_group_id="hb-parser")
    metrics.CONSUMER_LAG.labels("hb-parser").set(42)
    heart = Heartbeat(settings, pool, interval=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(heart.run(stop))
    try:
        first = None
        for _ in range(100):  # bounded: ~5 s
            rows = await pool.fetch("SELECT * FROM parser_heartbeats")
            if rows and first is None:
                first = rows[0]["seen_at"]
            elif rows and rows[0]["seen_at"] > first:
                break
            await asyncio.sleep(0.05)
        (row,) = rows
        assert row["seen_at"] > first  # it keeps beating
        assert row["parser_id"] == heart.parser_id and row["concurrency"] == 3
        assert row["consumer_lag"] == 42 and row["interval_seconds"] == pytest.approx(0.1)
    finally:
        stop.set()
        await task
    assert await pool.fetchval("SELECT count(*) FROM parser_heartbeats") == 0


async def test_rows_of_parsers_gone_for_a_day_are_pruned(pool: asyncpg.Pool) -> None:
    await pool.execute(
        "INSERT INTO parser_heartbeats (parser_id, hostname, pid, started_at, seen_at, interval_seconds,"
        " concurrency) VALUES ('old', 'h', 1, now() - interval '3 days', now() - interval '2 days', 5, 2)"
    )
    heart = Heartbeat(Settings(database_url="x"), pool)
    await heart.beat(prune=True)
    ids = {r["parser_id"] for r in await pool.fetch("SELECT parser_id FROM parser_heartbeats")}
    assert ids == {heart.parser_id}
