"""`GET /api/files/{id}/summary`: duration, sample rate and per-axis ranges of a file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException

from contracts.records import AxisRange, FileSummary, SensorSummary
from imuflow import db
from imuflow.web import Pool
from services.progress.api import NOT_FOUND, OwnedFile
from services.progress.repository import DRIVER_ERRORS

QUERIES = db.load_queries(Path(__file__).parent / "sql" / "summary.sql")
AXES = ("ax", "ay", "az", "gx", "gy", "gz", "mx", "my", "mz")

router = APIRouter(prefix="/api", tags=["files"])


@router.get("/files/{file_id}/summary", response_model=FileSummary, responses=NOT_FOUND)
async def file_summary(record: OwnedFile, pool: Pool) -> FileSummary:
    """What the stored samples cover: count, time span, rate and per-axis ranges, per sensor."""
    try:
        rows = await pool.fetch(QUERIES["file_summary"], record.id)
    except DRIVER_ERRORS as exc:
        raise HTTPException(503, "the database is unavailable; try again shortly") from exc
    sensors = [sensor_summary(dict(row)) for row in rows]
    starts = [s.start_ns for s in sensors if s.start_ns is not None]
    ends = [s.end_ns for s in sensors if s.end_ns is not None]
    rates = [s.sample_rate_hz for s in sensors if s.sample_rate_hz is not None]
    return FileSummary(
        file_id=record.id,
        status=record.status,
        samples=sum(s.samples for s in sensors),
        duration_seconds=(max(ends) - min(starts)) / 1e9 if starts and ends else None,
        # With several sensors at different rates, the fastest one is what users quote.
        sample_rate_hz=max(rates) if rates else None,
        sensors=sensors,
    )


def sensor_summary(row: dict[str, Any]) -> SensorSummary:
    """One sensor's row of the `file_summary` query as a summary."""
    samples = int(row["samples"])
    start, end = row["t_min_ns"], row["t_max_ns"]
    duration = (end - start) / 1e9 if start is not None and end is not None else None
    # n samples span n-1 intervals; a single sample or a zero span has no rate.
    rate = (samples - 1) / duration if duration and samples > 1 else None
    ranges = {
        axis: AxisRange(min=row[f"{axis}_min"], max=row[f"{axis}_max"])
        for axis in AXES
        if row[f"{axis}_min"] is not None
    }
    return SensorSummary(
        sensor=row["sensor"],
        samples=samples,
        start_ns=start,
        end_ns=end,
        duration_seconds=duration,
        sample_rate_hz=rate,
        ranges=ranges,
    )
