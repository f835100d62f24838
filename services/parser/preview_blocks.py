"""The min/max pyramid of a file's samples, written in each batch's transaction.

Per sensor, a batch is cut into blocks of `LEVELS` samples from its first sample (the
last block shorter); each block's row holds what the preview and the summary need
(migration 0014). Rows are built with numpy as one COPY BINARY payload per batch (as the
samples are, `pgcopy`): Python tuples through `copy_records_to_table` cost as much as
the samples' own encoding. `block_rows` gives the same rows as tuples, to read and to
check the payload against (tests/parser/test_preview_copy.py).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import numpy.typing as npt

from imuflow import db
from services.parser import pgcopy
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


@dataclass(frozen=True)
class Encoded:
    """A batch's pyramid as one COPY BINARY payload, and where each sensor's blocks start."""

    payload: bytes
    firsts: dict[str, int]  # sensor ('' = none) -> the batch's first sample index of it


async def store(
    conn: asyncpg.Connection, file_id: uuid.UUID, batch: SampleBatch, encoded: Encoded | None = None
) -> None:
    """Write the batch's blocks (inside the caller's transaction), first dropping blocks an
    earlier run left where this batch starts (per sensor: one may first appear late).
    `encoded` is `encode(file_id, batch)` when the caller made it already."""
    if len(batch) == 0:
        return
    if encoded is None:
        encoded = encode(file_id, batch)
    firsts = encoded.firsts
    await conn.execute(QUERIES["forget_from"], file_id, list(firsts), list(firsts.values()))
    if min(firsts.values()) == 0:
        await conn.execute(QUERIES["forget_summary"], file_id)
    await conn.copy_to_table(
        "imu_preview_blocks", source=_once(encoded.payload), columns=list(COLUMNS), format="binary"
    )


@dataclass(frozen=True)
class _Level:
    """One sensor's blocks of one level in a batch."""

    sensor: str
    level: int
    index: npt.NDArray[np.int64]  # the sensor's sample indexes in the batch
    t: npt.NDArray[np.int64]  # and their times
    blocks: _Blocks


def encode(file_id: uuid.UUID, batch: SampleBatch) -> Encoded:
    """The COPY BINARY payload of every block of `batch`, every level, every sensor."""
    parts, firsts = [pgcopy.HEADER], dict[str, int]()
    for lv in _levels(batch):
        firsts.setdefault(lv.sensor, int(lv.index[0]))
        parts.append(_binary_rows(file_id, lv))
    parts.append(pgcopy.TRAILER)
    return Encoded(b"".join(parts), firsts)


def block_rows(file_id: uuid.UUID, batch: SampleBatch) -> list[tuple[Any, ...]]:
    """The same rows as `encode`, as Python tuples in COLUMNS order."""
    return [row for lv in _levels(batch) for row in _rows(file_id, lv)]


def _levels(batch: SampleBatch) -> list[_Level]:
    codes = batch.sensor if batch.sensor is not None and batch.sensors else None
    groups = [("", np.arange(len(batch)))] if codes is None else [
        (name, np.flatnonzero(codes == i)) for i, name in enumerate(batch.sensors)
    ]  # fmt: skip
    out: list[_Level] = []
    for sensor, sel in groups:
        if sel.size == 0:
            continue
        whole = codes is None
        values = batch.values if whole else batch.values[sel]
        t = batch.t_ns if whole else batch.t_ns[sel]
        fine = _fine_blocks(t, values, batch.ranges)
        index = batch.sample_index if whole else batch.sample_index[sel]
        out.append(_Level(sensor, FINE, index, t, fine))
        out.extend(_Level(sensor, level, index, t, _coarsen(fine, level // FINE)) for level in LEVELS[1:])
    return out


async def _once(payload: bytes) -> AsyncIterator[bytes]:
    yield payload


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
        self.intervals: _Intervals | None = None


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


def _rows(file_id: uuid.UUID, lv: _Level) -> list[tuple[Any, ...]]:
    b, index, t = lv.blocks, lv.index, lv.t
    has_time = bool((t != NULL_TIME).all())
    present = b.counts > 0
    mins = np.where(present, b.mins, np.nan).tolist()
    maxs = np.where(present, b.maxs, np.nan).tolist()
    clipped: list[list[int | None]] | None = None
    if b.clipped is not None and b.clip_known is not None:
        known = b.clip_known.tolist()
        clipped = [[c if k else None for c, k in zip(row, known, strict=True)] for row in b.clipped.tolist()]
    intervals = b.intervals.as_tuples() if b.intervals is not None else None
    out = []
    for k, (s, size) in enumerate(zip(b.starts.tolist(), b.sizes.tolist(), strict=True)):
        dt_med, dt_max, gaps = intervals[k] if intervals is not None else (None, None, None)
        out.append((
            file_id, lv.sensor, lv.level, int(index[s]), size,
            int(t[s]) if has_time else None, int(t[s + size - 1]) if has_time else None,
            dt_med, dt_max, gaps, _nulls(mins[k]), _nulls(maxs[k]), b.sums[k].tolist(),
            b.counts[k].tolist(), clipped[k] if clipped is not None else None,
        ))  # fmt: skip
    return out


def _binary_rows(file_id: uuid.UUID, lv: _Level) -> bytes:
    """`_rows` as COPY BINARY rows: one numpy pass per column, not per block."""
    b, m = lv.blocks, len(lv.blocks.starts)
    everywhere = np.ones(m, np.bool_)
    timed = np.full(m, bool((lv.t != NULL_TIME).all()))
    sensor = np.frombuffer(lv.sensor.encode(), np.uint8)
    fields: list[pgcopy.Block] = [
        pgcopy.field_count(m, len(COLUMNS)),
        pgcopy.field(np.broadcast_to(np.frombuffer(file_id.bytes, np.uint8), (m, 16)), everywhere),
        pgcopy.field(np.broadcast_to(sensor, (m, sensor.size)), everywhere),
        pgcopy.number_field(np.full(m, lv.level), ">i4"),
        pgcopy.number_field(lv.index[b.starts], ">i8"),
        pgcopy.number_field(b.sizes, ">i4"),
        pgcopy.number_field(lv.t[b.starts], ">i8", timed),
        pgcopy.number_field(lv.t[b.starts + b.sizes - 1], ">i8", timed),
    ]
    if b.intervals is None:
        fields += [pgcopy.null_field(m)] * 3
    else:
        i = b.intervals
        fields += [
            pgcopy.number_field(i.median, ">i8", i.known),
            pgcopy.number_field(i.longest, ">i8", i.known),
            pgcopy.number_field(i.gaps, ">i4"),
        ]
    present = b.counts > 0
    for extreme in (b.mins, b.maxs):
        kept = np.where(present, extreme, np.float32(np.nan))
        fields.append(pgcopy.array_field(kept, ">f4", ~np.isnan(kept)))
    fields += [pgcopy.array_field(b.sums, ">f8", np.ones(b.sums.shape, np.bool_)),
               pgcopy.array_field(b.counts, ">i4", np.ones(b.counts.shape, np.bool_))]  # fmt: skip
    if b.clipped is not None and b.clip_known is not None:
        fields.append(pgcopy.array_field(b.clipped, ">i4", np.broadcast_to(b.clip_known, b.clipped.shape)))
    else:
        fields.append(pgcopy.null_field(m))
    return pgcopy.join_rows(fields)


def _nulls(values: list[float]) -> list[float | None]:
    return [None if v != v else v for v in values]  # NaN (no value in the block) -> NULL


@dataclass(frozen=True)
class _Intervals:
    """Per fine block: the median and longest interval between its samples (unknown in a
    block of one sample) and its gaps."""

    median: npt.NDArray[np.int64]
    longest: npt.NDArray[np.int64]
    gaps: npt.NDArray[np.int64]
    known: npt.NDArray[np.bool_]

    def as_tuples(self) -> list[tuple[int | None, int | None, int]]:
        return [
            (med, longest, gaps) if known else (None, None, 0)
            for med, longest, gaps, known in zip(
                self.median.tolist(),
                self.longest.tolist(),
                self.gaps.tolist(),
                self.known.tolist(),
                strict=True,
            )
        ]


def _intervals(t: npt.NDArray[np.int64]) -> _Intervals:
    n = t.shape[0]
    full = n // FINE
    chunks = [np.diff(t[: full * FINE].reshape(full, FINE), axis=1)] if full else []
    if n % FINE:
        chunks.append(np.diff(t[full * FINE :])[None, :])
    parts: list[tuple[npt.NDArray[np.int64], ...]] = []
    for d in chunks:
        if d.shape[1] == 0:  # a last block of one sample: no interval
            zero = np.zeros(d.shape[0], np.int64)
            parts.append((zero, zero, zero, np.zeros(d.shape[0], np.bool_)))
            continue
        med = np.median(d, axis=1).astype(np.int64)
        gaps = np.where(med > 0, (d > GAP_FACTOR * med[:, None]).sum(axis=1), 0)
        parts.append((med, d.max(axis=1), gaps.astype(np.int64), np.ones(d.shape[0], np.bool_)))
    median, longest, gaps, known = (np.concatenate([p[k] for p in parts]) for k in range(4))
    return _Intervals(median, longest, gaps, known)
