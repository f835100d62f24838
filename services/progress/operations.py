"""Operator queries: the stuck rule's functions, every user's jobs, performance, alert cursor."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from imuflow import db, dberrors
from services.progress.repository import Unavailable

QUERIES = db.load_queries(Path(__file__).parent / "sql" / "operations.sql")
# One arbitrary constant: the replica holding it this round is the one that acts.
WATCHDOG_LOCK = 7_202_612
FAILED_PAGE = 200


@dataclass
class WatchdogRound:
    """What one watchdog round did (`acted` False: another replica holds the lock)."""

    acted: bool
    actions: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)


class OperationsRepository:
    """Queries behind the operator API, the CLI's admin commands and the watchdog."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def write_config(self, stuck_after: float, max_attempts: int) -> None:
        """Store the settings the SQL stuck rule reads (IMUFLOW_STUCK_AFTER, MAX_ATTEMPTS)."""
        await self._run(self.pool.execute, QUERIES["write_config"], stuck_after, max_attempts)

    async def watchdog_round(self, *, collect_failed: bool) -> WatchdogRound:
        """Reset stuck jobs (and read new failures to alert on) if this replica gets the lock."""
        with dberrors.translated(Unavailable):
            async with self.pool.acquire() as conn, conn.transaction():
                if not await conn.fetchval(QUERIES["try_watchdog_lock"], WATCHDOG_LOCK):
                    return WatchdogRound(acted=False)
                if collect_failed:
                    # Before the reset, so a first round also alerts on the jobs it fails.
                    await conn.execute(QUERIES["init_alert_cursor"])
                actions = [dict(r) for r in await conn.fetch(QUERIES["reset_stuck"], None)]
                failed = await self._failed_since_cursor(conn) if collect_failed else []
                return WatchdogRound(acted=True, actions=actions, failed=failed)

    async def _failed_since_cursor(self, conn: asyncpg.Connection) -> list[dict[str, Any]]:
        after = int(await conn.fetchval(QUERIES["alert_cursor"]))
        upto = int(await conn.fetchval(QUERIES["max_event_id"]))
        rows = await conn.fetch(QUERIES["failed_between"], after, upto, FAILED_PAGE)
        # A full page leaves the rest for the next round; otherwise skip to the newest id.
        await conn.execute(
            QUERIES["advance_alert_cursor"], rows[-1]["id"] if len(rows) == FAILED_PAGE else upto
        )
        return [dict(r) for r in rows]

    async def reset_stuck(self, threshold_seconds: float | None) -> list[dict[str, Any]]:
        """Run `reset_stuck_streaming_processes`; what it requeued or failed."""
        rows = await self._run(self.pool.fetch, QUERIES["reset_stuck"], threshold_seconds)
        return [dict(r) for r in rows]

    async def stuck(self, threshold_seconds: float | None) -> list[dict[str, Any]]:
        """The rows of `get_stuck_streaming_processes`."""
        return [dict(r) for r in await self._run(self.pool.fetch, QUERIES["stuck"], threshold_seconds)]

    async def count_stuck(self) -> int:
        """How many jobs the configured stuck rule matches now."""
        return int(await self._run(self.pool.fetchval, QUERIES["count_stuck"]))

    async def slowing(self) -> list[dict[str, Any]]:
        """The rows of `get_slowing_streaming_processes` (the early warning)."""
        return [dict(r) for r in await self._run(self.pool.fetch, QUERIES["slowing"])]

    async def list_jobs(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        """Every user's files with owner and stuck flag, newest first."""
        return [dict(r) for r in await self._run(self.pool.fetch, QUERIES["list_jobs"], status, limit)]

    async def counts(self) -> dict[str, int]:
        """Number of files in each status."""
        rows = await self._run(self.pool.fetch, QUERIES["count_by_status"])
        return {r["status"]: int(r["files"]) for r in rows}

    async def performance(self, limit: int) -> list[dict[str, Any]]:
        """The overall row of `streaming_performance_metrics`, then the newest `limit` files."""
        return [dict(r) for r in await self._run(self.pool.fetch, QUERIES["performance"], limit)]

    async def _run(self, fn: Any, *args: Any) -> Any:
        with dberrors.translated(Unavailable):
            return await fn(*args)
