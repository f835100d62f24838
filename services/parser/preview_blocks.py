"""The min/max pyramid of a file's samples, written in each batch's transaction.

Per sensor, a batch is cut into blocks of `LEVELS` samples from its first sample (the
last block shorter); each block's row holds what the preview and the summary need
(migration 0014). Rows are built with numpy and sent with one COPY per batch: a batch of
50,000 samples makes ~200 rows, so this costs a small fraction of the samples' own COPY.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import numpy.typing as npt

from imuflow import db
from services.parser.formats.base import NULL_TIME, VALUE_COLUMNS, SampleBatch

QUERIES = db.load_queries(Path(__file__).parent / "sql" / "preview.sql")
LEVELS = (256, 16384)
FINE = LEVELS[0]
GAP_FACTOR = 5  # an interval longer than 5 sample periods is a gap (SPEC §7)
COLUMNS = ("file_id", "sensor", "level", "first_index", "n", "t_first", "t_last", "dt_median",
           "dt_max", "gaps", "mins", "maxs", "sums", "counts", "clipped")  # fmt: skip


async def store(conn: asyncpg.Connection, file_id: uuid.UUID, batch: SampleBatch) -> None:
    """Write the batch's blocks (inside the caller's transaction); a run's first batch
    first drops the blocks and cached summary of any earlier run."""
    if len(batch) == 0:
        return
    if int(batch.sample_index.min()) == 0:
        await conn.execute(QUERIES["forget_file"], file_id)
    rows = block_rows(file_id, batch)
    if rows:
        await conn.copy_records_to_table("imu_preview_blocks", records=rows, columns=list(COLUMNS))


def block_rows(file_id: uuid.UUID, batch: SampleBatch) -> list[tuple[Any, ...]]:
    """The rows of every block of `batch`, every level, every sensor."""
    rows: list[tuple[Any, ...]] = []
    codes = batch.sensor if batch.sensor is not None and batch.sensors else None
    groups = [(b"", np.arange(len(batch)))] if codes is None else [
        (name.encode(), np.flatnonzero(codes == i)) for i, name in enumerate(batch.sensors)
    ]  # fmt: skip
    ranges = batch.ranges
    for name, sel in groups:
        if sel.size == 0:
            continue
        sensor = name.decode()
        values = batch.values[sel]
        t = batch.t_ns[sel]
        first = batch.sample_index[sel]
        for level in LEVELS:
            rows.extend(_level_rows(file_id, sensor, level, first, t, values, ranges))
    return rows


def _level_rows(
    file_id: uuid.UUID,
    sensor: str,
    level: int,
    index: npt.NDArray[np.int64],
    t: npt.NDArray[np.int64],
    values: npt.NDArray[np.float32],
    ranges: dict[str, float] | None,
) -> list[tuple[Any, ...]]:
    n = values.shape[0]
    starts = np.arange(0, n, level)
    sizes = np.minimum(level, n - starts)
    present = ~np.isnan(values)
    counts = np.add.reduceat(present.astype(np.int64), starts, axis=0)
    with np.errstate(invalid="ignore"):
        mins = np.fmin.reduceat(values, starts, axis=0)
        maxs = np.fmax.reduceat(values, starts, axis=0)
    sums = np.add.reduceat(np.where(present, values, 0).astype(np.float64), starts, axis=0)
    clipped = _clipped(values, starts, ranges)
    has_time = bool((t != NULL_TIME).all())
    intervals = _intervals(t, starts, sizes) if has_time and level == FINE else None
    out = []
    for k, (s, size) in enumerate(zip(starts.tolist(), sizes.tolist(), strict=True)):
        c = counts[k]
        mn = [float(v) if c[j] else None for j, v in enumerate(mins[k].tolist())]
        mx = [float(v) if c[j] else None for j, v in enumerate(maxs[k].tolist())]
        dt_med, dt_max, gaps = intervals[k] if intervals is not None else (None, None, None)
        out.append((
            file_id, sensor, level, int(index[s]), size,
            int(t[s]) if has_time else None, int(t[s + size - 1]) if has_time else None,
            dt_med, dt_max, gaps, mn, mx, sums[k].tolist(), c.tolist(),
            clipped[k].tolist() if clipped is not None else None,
        ))  # fmt: skip
    return out


def _clipped(
    values: npt.NDArray[np.float32], starts: npt.NDArray[np.intp], ranges: dict[str, float] | None
) -> npt.NDArray[np.int64] | None:
    """Per block and axis, samples at (within 0.1 % of) the device's full scale."""
    if not ranges:
        return None
    limit = np.array([ranges.get(c, np.inf) for c in VALUE_COLUMNS], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        at_range = np.abs(values.astype(np.float64)) >= limit * 0.999
    result: npt.NDArray[np.int64] = np.add.reduceat(at_range.astype(np.int64), starts, axis=0)
    return result


def _intervals(
    t: npt.NDArray[np.int64], starts: npt.NDArray[np.intp], sizes: npt.NDArray[np.intp]
) -> list[tuple[int | None, int | None, int | None]]:
    """Per block: median and longest interval between its samples, and its gaps."""
    dt = np.diff(t)
    out: list[tuple[int | None, int | None, int | None]] = []
    for s, size in zip(starts.tolist(), sizes.tolist(), strict=True):
        d = dt[s : s + size - 1]
        if d.size == 0:
            out.append((None, None, 0))
            continue
        med = int(np.median(d))
        out.append((med, int(d.max()), int((d > GAP_FACTOR * med).sum()) if med > 0 else 0))
    return out
