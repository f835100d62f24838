"""`GET /api/files/{id}/summary`: duration, rate, gaps and per-axis ranges of a file.

Read from the preview pyramid (migration 0014), so even a 60M-sample file answers from a
few hundred thousand block rows; a file parsed before the pyramid existed is read from
imu_samples. A completed run's summary is computed once and kept (`imu_file_summaries`,
keyed by run, so a re-parse computes it again); while parsing it covers what is stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
from fastapi import APIRouter

from contracts.records import AxisRange, FileRecord, FileSummary, SensorSummary
from imuflow import db
from imuflow.web import Pool, database_unavailable
from services.progress.api import NOT_FOUND, OwnedFile
from services.progress.repository import DRIVER_ERRORS

QUERIES = db.load_queries(Path(__file__).parent / "sql" / "summary.sql")
AXES = ("ax", "ay", "az", "gx", "gy", "gz", "mx", "my", "mz")

router = APIRouter(prefix="/api", tags=["files"])


@router.get("/files/{file_id}/summary", response_model=FileSummary, responses=NOT_FOUND)
async def file_summary(record: OwnedFile, pool: Pool) -> FileSummary:
    """What the stored samples cover: count, time span, rate, gaps and per-axis ranges, per sensor."""
    try:
        async with pool.acquire() as conn:
            return await summarise(conn, record)
    except DRIVER_ERRORS as exc:
        raise database_unavailable(exc) from exc


async def summarise(conn: asyncpg.Connection, record: FileRecord) -> FileSummary:
    """The cached summary of a completed run, else computed (and kept once completed)."""
    done = record.status == "completed"
    if done and (cached := await conn.fetchval(QUERIES["cached"], record.id, record.run)) is not None:
        return FileSummary.model_validate(cached)
    rows = [dict(r) for r in await conn.fetch(QUERIES["block_summary"], record.id)]
    if not rows:
        rows = [dict(r) for r in await conn.fetch(QUERIES["file_summary"], record.id)]
        if rows:
            intervals = {
                r["sensor"]: dict(r) for r in await conn.fetch(QUERIES["sample_intervals"], record.id)
            }
            for row in rows:
                row.update(
                    intervals.get(row["sensor"], {"period": None, "longest_gap_ns": None, "gaps": None})
                )
    summary = combine(record, [sensor_summary(row) for row in rows])
    if done:
        await conn.execute(QUERIES["keep"], record.id, record.run, summary.model_dump(mode="json"))
    return summary


def combine(record: FileRecord, sensors: list[SensorSummary]) -> FileSummary:
    """The file's summary from its sensors'."""
    starts = [s.start_ns for s in sensors if s.start_ns is not None]
    ends = [s.end_ns for s in sensors if s.end_ns is not None]
    rates = [s.sample_rate_hz for s in sensors if s.sample_rate_hz is not None]
    longest = [s.longest_gap_seconds for s in sensors if s.longest_gap_seconds is not None]
    gaps = [s.gaps for s in sensors if s.gaps is not None]
    return FileSummary(
        file_id=record.id,
        status=record.status,
        samples=sum(s.samples for s in sensors),
        duration_seconds=(max(ends) - min(starts)) / 1e9 if starts and ends else None,
        # With several sensors at different rates, the fastest one is what users quote.
        sample_rate_hz=max(rates) if rates else None,
        sensors=sensors,
        longest_gap_seconds=max(longest) if longest else None,
        gaps=sum(gaps) if gaps else None,
    )


def sensor_summary(row: dict[str, Any]) -> SensorSummary:
    """One sensor's row of the `block_summary` (or `file_summary` + intervals) query."""
    samples = int(row["samples"])
    start, end = row["t_min_ns"], row["t_max_ns"]
    duration = (end - start) / 1e9 if start is not None and end is not None else None
    period = row.get("period")
    # The rate is 1 / the median interval: a gap (idle sleep, a pause) does not lower it.
    rate = 1e9 / float(period) if period else None
    longest = row.get("longest_gap_ns")
    ranges = {
        axis: AxisRange(
            min=row[f"{axis}_min"],
            max=row[f"{axis}_max"],
            mean=float(row[f"{axis}_mean"]) if row.get(f"{axis}_mean") is not None else None,
            clipped=int(row[f"{axis}_clipped"]) if row.get(f"{axis}_clipped") is not None else None,
        )
        for axis in AXES
        if row[f"{axis}_min"] is not None
    }
    return SensorSummary(
        sensor=row["sensor"] or None,
        samples=samples,
        start_ns=start,
        end_ns=end,
        duration_seconds=duration,
        sample_rate_hz=rate,
        ranges=ranges,
        longest_gap_seconds=longest / 1e9 if longest is not None and period else None,
        gaps=int(row["gaps"]) if row.get("gaps") is not None and period else None,
    )
