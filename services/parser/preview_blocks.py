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
LEVELS = (256, 2048, 16384)
FINE = LEVELS[0]
GAP_FACTOR = 5  # an interval longer than 5 sample periods is a gap (SPEC §7)
# A sample within 0.3 % of the device's full scale counts as clipped: packed .cwa values
# lose their low bits near the top (2044/256 g at an 8 g range), a 12-bit count is 0.05 %.
CLIP_FRACTION = 0.997
COLUMNS = ("file_id", "sensor", "level", "first_index", "n", "t_first", "t_last", "dt_median",
           "dt_max", "gaps", "mins", "maxs", "sums", "counts", "clipped")  # fmt: skip


async def store(
    conn: asyncpg.Connection,
    file_id: uuid.UUID,
    batch: SampleBatch,
    rows: list[tuple[Any, ...]] | None = None,
) -> None:
    """Write the batch's blocks (inside the caller's transaction), first dropping blocks an
    earlier run left where this batch starts (per sensor: one may first appear late).
    `rows` are `block_rows(file_id, batch)` when the caller made them already."""
    if len(batch) == 0:
        return
    if rows is None:
        rows = block_rows(file_id, batch)
    firsts = {r[1]: r[3] for r in reversed(rows) if r[2] == FINE}  # sensor -> first index
    await conn.execute(QUERIES["forget_from"], file_id, list(firsts), list(firsts.values()))
    if min(firsts.values()) == 0:
        await conn.execute(QUERIES["forget_summary"], file_id)
    await conn.copy_records_to_table("imu_preview_blocks", records=rows, columns=list(COLUMNS))


def block_rows(file_id: uuid.UUID, batch: SampleBatch) -> list[tuple[Any, ...]]:
    """The rows of every block of `batch`, every level, every sensor."""
    rows: list[tuple[Any, ...]] = []
    codes = batch.sensor if batch.sensor is not None and batch.sensors else None
    groups = [("", np.arange(len(batch)))] if codes is None else [
        (name, np.flatnonzero(codes == i)) for i, name in enumerate(batch.sensors)
    ]  # fmt: skip
    for sensor, sel in groups:
        if sel.size == 0:
            continue
        whole = codes is None
        values = batch.values if whole else batch.values[sel]
        t = batch.t_ns if whole else batch.t_ns[sel]
        fine = _fine_blocks(t, values, batch.ranges)
        index = batch.sample_index if whole else batch.sample_index[sel]
        rows.extend(_rows(file_id, sensor, FINE, index, t, fine))
        for level in LEVELS[1:]:
            rows.extend(_rows(file_id, sensor, level, index, t, _coarsen(fine, level // FINE)))
    return rows


class _Blocks:
    """Per-block aggregates of one level (arrays with one row per block)."""

    def __init__(self, starts: npt.NDArray[np.int64], sizes: npt.NDArray[np.int64]) -> None:
        self.starts, self.sizes = starts, sizes
        self.mins = np.empty((0, 9), np.float32)
        self.maxs = np.empty((0, 9), np.float32)
        self.sums = np.empty((0, 9), np.float64)
        self.counts = np.empty((0, 9), np.int64)
        self.clipped: npt.NDArray[np.int64] | None = None
        # Per axis: whether the reader gave its range (else its clipped count is NULL, not 0).
        self.clip_known: npt.NDArray[np.bool_] | None = None
        self.intervals: list[tuple[int | None, int | None, int | None]] | None = None


def _reduce(values: npt.NDArray[Any], level: int, fn: Any) -> npt.NDArray[Any]:
    """`fn` over each run of `level` rows (the last run shorter), contiguous and vectorised."""
    n = values.shape[0]
    full = n // level
    parts = [fn(values[: full * level].reshape(full, level, -1), axis=1)] if full else []
    if n % level:
        parts.append(fn(values[full * level :], axis=0)[None, :])
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _by_block(columns: npt.NDArray[Any], fn: Any, **kw: Any) -> npt.NDArray[Any]:
    """`fn` over each fine block of (9, n) column-major data, as (blocks, 9)."""
    n = columns.shape[1]
    full = n // FINE
    parts = (
        [fn(columns[:, : full * FINE].reshape(columns.shape[0], full, FINE), axis=2, **kw)] if full else []
    )
    if n % FINE:
        parts.append(fn(columns[:, full * FINE :], axis=1, **kw)[:, None])
    out = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    return np.ascontiguousarray(out.T)


def _fine_blocks(
    t: npt.NDArray[np.int64], values: npt.NDArray[np.float32], ranges: dict[str, float] | None
) -> _Blocks:
    n = values.shape[0]
    starts = np.arange(0, n, FINE, dtype=np.int64)
    blocks = _Blocks(starts, np.minimum(FINE, n - starts))
    # Column-major, so every block of every axis is one contiguous run to reduce.
    columns = np.ascontiguousarray(values.T)
    present = ~np.isnan(columns)
    with np.errstate(invalid="ignore"):
        blocks.mins = _by_block(columns, np.fmin.reduce)
        blocks.maxs = _by_block(columns, np.fmax.reduce)
    blocks.sums = _by_block(np.where(present, columns, np.float32(0)), np.add.reduce, dtype=np.float64)
    blocks.counts = _by_block(present, np.add.reduce, dtype=np.int64)
    if ranges:
        limit = np.array([ranges.get(c, np.inf) for c in VALUE_COLUMNS], dtype=np.float32)
        with np.errstate(invalid="ignore"):
            at_range = np.abs(columns) >= (limit * np.float32(CLIP_FRACTION))[:, None]
        blocks.clipped = _by_block(at_range, np.add.reduce, dtype=np.int64)
        blocks.clip_known = np.isfinite(limit)
    if bool((t != NULL_TIME).all()):
        blocks.intervals = _intervals(t)
    return blocks


def _coarsen(fine: _Blocks, factor: int) -> _Blocks:
    """The next level from the fine blocks: `factor` fine blocks make one coarse block."""
    starts = fine.starts[::factor]
    sizes = _reduce(fine.sizes[:, None], factor, np.sum)[:, 0]
    coarse = _Blocks(starts, sizes)
    coarse.mins = _reduce(fine.mins, factor, np.fmin.reduce)
    coarse.maxs = _reduce(fine.maxs, factor, np.fmax.reduce)
    coarse.sums = _reduce(fine.sums, factor, np.sum)
    coarse.counts = _reduce(fine.counts, factor, np.sum)
    if fine.clipped is not None:
        coarse.clipped = _reduce(fine.clipped, factor, np.sum)
        coarse.clip_known = fine.clip_known
    return coarse


def _rows(
    file_id: uuid.UUID,
    sensor: str,
    level: int,
    index: npt.NDArray[np.int64],
    t: npt.NDArray[np.int64],
    b: _Blocks,
) -> list[tuple[Any, ...]]:
    has_time = bool((t != NULL_TIME).all())
    present = b.counts > 0
    mins = np.where(present, b.mins, np.nan).tolist()
    maxs = np.where(present, b.maxs, np.nan).tolist()
    clipped: list[list[int | None]] | None = None
    if b.clipped is not None and b.clip_known is not None:
        known = b.clip_known.tolist()
        clipped = [[c if k else None for c, k in zip(row, known, strict=True)] for row in b.clipped.tolist()]
    out = []
    for k, (s, size) in enumerate(zip(b.starts.tolist(), b.sizes.tolist(), strict=True)):
        dt_med, dt_max, gaps = b.intervals[k] if b.intervals is not None else (None, None, None)
        out.append((
            file_id, sensor, level, int(index[s]), size,
            int(t[s]) if has_time else None, int(t[s + size - 1]) if has_time else None,
            dt_med, dt_max, gaps, _nulls(mins[k]), _nulls(maxs[k]), b.sums[k].tolist(),
            b.counts[k].tolist(), clipped[k] if clipped is not None else None,
        ))  # fmt: skip
    return out


def _nulls(values: list[float]) -> list[float | None]:
    return [None if v != v else v for v in values]  # NaN (no value in the block) -> NULL


def _intervals(t: npt.NDArray[np.int64]) -> list[tuple[int | None, int | None, int | None]]:
    """Per fine block: median and longest interval between its samples, and its gaps."""
    n = t.shape[0]
    full = n // FINE
    out: list[tuple[int | None, int | None, int | None]] = []
    chunks = [np.diff(t[: full * FINE].reshape(full, FINE), axis=1)] if full else []
    if n % FINE:
        chunks.append(np.diff(t[full * FINE :])[None, :])
    for d in chunks:
        if d.shape[1] == 0:
            out.extend((None, None, 0) for _ in range(d.shape[0]))
            continue
        med = np.median(d, axis=1).astype(np.int64)
        longest = d.max(axis=1)
        gaps = np.where(med > 0, (d > GAP_FACTOR * med[:, None]).sum(axis=1), 0)
        out.extend(zip(med.tolist(), longest.tolist(), gaps.tolist(), strict=True))
    return out
