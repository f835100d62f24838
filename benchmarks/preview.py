"""Benchmark: the signal preview and summary of a 60M-sample file, from its pyramid.

The parser's own code (`preview_blocks.block_rows`) builds the pyramid of a 60M-sample,
6-axis, 100 Hz recording in 50,000-sample batches (as the parser stores them) into a fresh
embedded Postgres with the migrations applied; then the progress service's own code
answers previews (`build_preview`) and the summary query, each the median of 5 runs.
A whole-file preview reads only blocks (its range is the file's extent, so no edge
scan); imu_samples is left empty here, which makes the edge scans of a zoom free: the
zoom row measures the block queries alone. Target (issue 20): a whole-file preview
within 300 ms.

`python -m benchmarks.preview`
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import numpy as np

from benchmarks.common import Table, show
from imuflow import db
from imuflow.stack.postgres import start_postgres
from services.parser.formats.base import SampleBatch
from services.parser.preview_blocks import COLUMNS, block_rows
from services.progress.preview import build_preview
from services.progress.summary import QUERIES as SUMMARY_QUERIES

SAMPLES = 60_000_000
BATCH = 50_000
RUNS = 5


def _batch(first: int, rng: np.random.Generator) -> SampleBatch:
    n = min(BATCH, SAMPLES - first)
    values = np.full((n, 9), np.nan, np.float32)
    values[:, :6] = rng.standard_normal((n, 6), dtype=np.float32)
    index = np.arange(first, first + n, dtype=np.int64)
    return SampleBatch(index, 1_700_000_000_000_000_000 + index * 10_000_000, values, end_offset=0)


async def _fill(conn: asyncpg.Connection, file_id: uuid.UUID) -> tuple[float, int]:
    rng = np.random.default_rng(1)
    started, rows = time.perf_counter(), 0
    for first in range(0, SAMPLES, BATCH):
        records = block_rows(file_id, _batch(first, rng))
        rows += len(records)
        await conn.copy_records_to_table("imu_preview_blocks", records=records, columns=list(COLUMNS))
    await conn.execute("ANALYZE imu_preview_blocks")
    return time.perf_counter() - started, rows


async def _median_ms(fn: object) -> float:
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        await fn()  # type: ignore[operator]
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


async def _run() -> list[Table]:
    with tempfile.TemporaryDirectory(prefix="imuflow-preview-") as tmp:
        pg = start_postgres(Path(tmp))
        try:
            await db.migrate(pg.url)
            conn = await asyncpg.connect(pg.url)
            try:
                user_id = await conn.fetchval("INSERT INTO users (name) VALUES ('bench') RETURNING id")
                file_id = uuid.uuid4()
                await conn.execute(
                    "INSERT INTO imu_data_files (id, user_id, filename, size_bytes, sha256, storage_uri) "
                    "VALUES ($1, $2, 'big.csv', 1, 'x', 'file:///dev/null')",
                    file_id,
                    user_id,
                )
                fill_s, rows = await _fill(conn, file_id)
                t0 = 1_700_000_000_000_000_000
                span = SAMPLES * 10_000_000
                table = Table(
                    f"Preview of a {SAMPLES / 1e6:.0f}M-sample file from its pyramid ({rows:,} block rows)",
                    ["request", "median ms"],
                )
                for points in (1000, 5000):
                    ms = await _median_ms(lambda p=points: build_preview(conn, file_id, p, None, None, None))
                    table.rows.append([f"whole file, points={points}", round(ms, 1)])
                zoom = (t0 + span // 3 + 7, t0 + span // 3 + span // 100)
                ms = await _median_ms(lambda: build_preview(conn, file_id, 1000, *zoom, None))
                table.rows.append(["1 % zoom, points=1000 (block queries)", round(ms, 1)])
                ms = await _median_ms(lambda: conn.fetch(SUMMARY_QUERIES["block_summary"], file_id))
                table.rows.append(["summary from the blocks (once per file)", round(ms, 1)])
                table.notes.append(
                    f"building and storing the pyramid: {fill_s:.1f} s for {SAMPLES // BATCH} batches "
                    f"({1000 * fill_s / (SAMPLES // BATCH):.1f} ms per 50k-sample batch)"
                )
            finally:
                await conn.close()
        finally:
            pg.stop()
    return show([table])


def run() -> list[Table]:
    """Measure on a fresh embedded Postgres."""
    return asyncio.run(_run())


def main() -> None:
    """Measure and print."""
    run()


if __name__ == "__main__":
    main()
