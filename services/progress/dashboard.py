"""The operator dashboard's reads: live parsers (heartbeats), trends, recent failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import asyncpg

from imuflow import db, dberrors
from services.progress.repository import Unavailable

QUERIES = db.load_queries(Path(__file__).parent / "sql" / "dashboard.sql")


class DashboardRepository:
    """Queries behind /api/admin/parsers, /trends and /failures."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def parsers(self) -> list[dict[str, Any]]:
        """Parsers seen in the last day, live ones first."""
        return await self._fetch(QUERIES["parsers"])

    async def trends(self, days: int, bucket: Literal["hour", "day"]) -> list[dict[str, Any]]:
        """Trend points of the last `days` days, oldest first."""
        return await self._fetch(QUERIES["trends"], bucket, days)

    async def failures(self, hours: int, limit: int) -> list[dict[str, Any]]:
        """Files that ended failed in the last `hours`, newest first."""
        return await self._fetch(QUERIES["failures"], hours, limit)

    async def _fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        with dberrors.translated(Unavailable):
            return [dict(r) for r in await self.pool.fetch(sql, *args)]
