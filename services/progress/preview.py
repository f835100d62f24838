"""`GET /api/files/{id}/preview`: per-bucket min/max of a file's signal, fast at any size.

The parser keeps a pyramid of blocks (migration 0014: 16384, 2048 and 256 samples, per-axis
min/max). A request picks the coarsest level whose blocks are much narrower than a
bucket, aggregates the blocks wholly inside the range in SQL, and answers each block that
straddles an edge of the range from the next finer level, down to an exact scan of
`imu_samples` for the finest edge blocks. So every bucket's min and max are true values
(a one-sample spike survives), and a whole-file preview of 60M samples reads ~4,000 rows.
A block is placed in the bucket of its middle; blocks are at most half a bucket wide (one
that spans a gap in time is wider, and is answered from the level below, like an edge),
so a value lands at most a quarter of a bucket away from where it was recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, HTTPException, Query

from contracts.records import AxisPreview, FilePreview
from imuflow import db
from imuflow.web import Pool, database_unavailable
from services.progress.api import NOT_FOUND, OwnedFile
from services.progress.repository import DRIVER_ERRORS

QUERIES = db.load_queries(Path(__file__).parent / "sql" / "preview.sql")
AXES = ("ax", "ay", "az", "gx", "gy", "gz", "mx", "my", "mz")
LEVELS = (256, 2048, 16384)  # as services/parser/preview_blocks.py writes them
# Samples per bucket a level needs (its blocks at most half a bucket wide); below the
# finest, the range is few enough samples to scan exactly.
_PER_BUCKET = 2

router = APIRouter(prefix="/api", tags=["files"])
Buckets = dict[int, list[float | None]]  # bucket -> 9 mins then 9 maxs


@dataclass(frozen=True)
class Extent:
    """One sensor's stored samples: index and time span, which axes hold values."""

    sensor: str
    i0: int
    i1: int
    t0: int | None
    t1: int | None
    samples: int
    timed: bool
    axes: tuple[str, ...]
    pyramid: bool  # False: parsed before the pyramid existed (exact scans only)


@dataclass(frozen=True)
class Frame:
    """The buckets asked for: x in [lo, hi] split into n equal parts."""

    lo: int
    hi: int
    n: int
    timed: bool


@router.get(
    "/files/{file_id}/preview",
    response_model=FilePreview,
    responses={**NOT_FOUND, 422: {"description": "points outside 10-5000"}},
)
async def file_preview(
    record: OwnedFile,
    pool: Pool,
    points: Annotated[int, Query(ge=10, le=5000)] = 1000,
    start_ns: int | None = None,
    end_ns: int | None = None,
    sensor: str | None = None,
) -> FilePreview:
    """Min and max per bucket of each axis the file has, over the range asked (default: all
    stored so far). Where the file has no time, `start_ns`/`end_ns` are sample indexes."""
    if record.samples_processed == 0:  # nothing yet (or a re-parse whose old blocks still wait)
        return FilePreview(points=0, t_start_ns=None, t_end_ns=None, axes={})
    try:
        async with pool.acquire() as conn:
            return await build_preview(conn, record.id, points, start_ns, end_ns, sensor)
    except DRIVER_ERRORS as exc:
        raise database_unavailable(exc) from exc


async def extents(conn: asyncpg.Connection, file_id: Any) -> list[Extent]:
    """Every sensor's extent, from the pyramid (or imu_samples for an older file)."""
    rows, pyramid = await conn.fetch(QUERIES["sensors"], file_id), True
    if not rows:
        rows, pyramid = await conn.fetch(QUERIES["legacy_sensors"], file_id), False
    return [
        Extent(
            sensor=r["sensor"],
            i0=r["i0"],
            i1=r["i1"],
            t0=r["t0"],
            t1=r["t1"],
            samples=int(r["samples"]),
            timed=bool(r["timed"]) and r["t0"] is not None,
            axes=tuple(a for a in AXES if r[f"{a}_n"]),
            pyramid=pyramid,
        )
        for r in rows
    ]


async def build_preview(
    conn: asyncpg.Connection, file_id: Any, points: int, start: int | None, end: int | None,
    sensor: str | None,
) -> FilePreview:  # fmt: skip
    """The preview of one sensor of a file (the first one unless `sensor` names another)."""
    found = await extents(conn, file_id)
    if sensor is not None:
        found = [e for e in found if e.sensor == sensor]
        if not found:
            raise HTTPException(404, f"the file has no sensor {sensor!r}")
    if not found:
        return FilePreview(points=0, t_start_ns=None, t_end_ns=None, axes={})
    ext = found[0]
    first, last = (ext.t0, ext.t1) if ext.timed else (ext.i0, ext.i1)
    assert first is not None and last is not None
    lo, hi = max(first, start if start is not None else first), min(last, end if end is not None else last)
    if hi < lo:
        return _answer(ext, Frame(lo, max(lo, hi), 0, ext.timed), {})
    # Samples in the range, assuming an even spread (only chooses the level and n).
    share = (hi - lo + 1) / max(1, last - first + 1)
    in_range = max(1, math.ceil(ext.samples * share))
    frame = Frame(lo, hi, min(points, in_range), ext.timed)
    per_bucket = in_range / frame.n
    level = next((i for i in reversed(range(len(LEVELS))) if per_bucket >= _PER_BUCKET * LEVELS[i]), -1)
    buckets: Buckets = {}
    if ext.pyramid and level >= 0:
        await _collect(conn, file_id, ext, frame, level, lo, hi, buckets)
    else:
        i0, i1 = ext.i0, ext.i1
        if ext.pyramid:
            span = await conn.fetchrow(QUERIES["index_span"], file_id, ext.sensor, lo, hi, ext.timed)
            if span["i0"] is None:
                return _answer(ext, frame, {})
            i0, i1 = span["i0"], span["i1"]
        await _exact(conn, file_id, ext, frame, i0, i1, lo, hi, buckets)
    return _answer(ext, frame, buckets)


async def _collect(
    conn: asyncpg.Connection, file_id: Any, ext: Extent, frame: Frame, level: int, a: int, b: int,
    out: Buckets,
) -> None:  # fmt: skip
    """Buckets of x in [a, b] from blocks of LEVELS[level], edges from the level below."""
    size = LEVELS[level]
    args = (file_id, ext.sensor, size, a, b)
    widest = (frame.hi - frame.lo + 1) // (2 * frame.n)
    rows = await conn.fetch(QUERIES["inner_buckets"], *args, frame.lo, frame.hi, frame.n, frame.timed, widest)
    _merge(out, rows)
    for edge in await conn.fetch(QUERIES["edge_blocks"], *args, frame.timed, widest):
        sub_a, sub_b = max(a, edge["x0"]), min(b, edge["x1"])
        if level > 0:
            await _collect(conn, file_id, ext, frame, level - 1, sub_a, sub_b, out)
        else:
            i0 = edge["first_index"]
            await _exact(conn, file_id, ext, frame, i0, i0 + edge["n"] - 1, sub_a, sub_b, out)


async def _exact(
    conn: asyncpg.Connection, file_id: Any, ext: Extent, frame: Frame, i0: int, i1: int, a: int,
    b: int, out: Buckets,
) -> None:  # fmt: skip
    rows = await conn.fetch(
        QUERIES["sample_buckets"], file_id, ext.sensor, i0, i1, a, b, frame.lo, frame.hi, frame.n,
        frame.timed,
    )  # fmt: skip
    _merge(out, rows)


def _merge(out: Buckets, rows: list[asyncpg.Record]) -> None:
    for r in rows:
        b = int(r["b"])
        new = [r[f"{a}_min"] for a in AXES] + [r[f"{a}_max"] for a in AXES]
        old = out.get(b)
        if old is None:
            out[b] = new
            continue
        for j in range(len(AXES)):
            old[j] = _pick(min, old[j], new[j])
            old[j + 9] = _pick(max, old[j + 9], new[j + 9])


def _pick(f: Any, x: float | None, y: float | None) -> float | None:
    if x is None:
        return y
    if y is None:
        return x
    return float(f(x, y))


def _answer(ext: Extent, frame: Frame, buckets: Buckets) -> FilePreview:
    axes = {}
    for axis in ext.axes:
        k = AXES.index(axis)
        axes[axis] = AxisPreview(
            min=[buckets[i][k] if i in buckets else None for i in range(frame.n)],
            max=[buckets[i][k + 9] if i in buckets else None for i in range(frame.n)],
        )
    return FilePreview(
        points=frame.n,
        t_start_ns=frame.lo if frame.timed else None,
        t_end_ns=frame.hi if frame.timed else None,
        axes=axes,
    )
