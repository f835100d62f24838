"""Benchmark: the signal preview and summary of a 60M-sample file, from its pyramid.

The parser's own code (`preview_blocks.store`) builds the pyramid of a 60M-sample,
6-axis, 100 Hz recording in 50,000-sample batches (as the parser stores them) into a fresh
embedded Postgres with the migrations applied; then the progress service's own code
answers previews and the summary query, each the median of 5 runs: `build_preview`
alone, and the whole request as a browser makes it (`GET /api/files/{id}/preview` through
the service's own router: token check, file record, JSON of up to 5000 x 12 numbers).
A whole-file preview reads only blocks (its range is the file's extent, so no edge
scan). A zoom's edges end in exact scans of `imu_samples`; 60M sample rows would take
GBs here, so only the samples around the zoom's edges are stored (the scans read real
rows, but the table and its BRIN index are smaller than a real 60M-sample file's).
Target (issue 20): a whole-file preview within 300 ms.

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
import httpx
import numpy as np
from fastapi import FastAPI

from benchmarks.common import Table, show
from imuflow import auth, db
from imuflow.stack.postgres import start_postgres
from services.parser import preview_blocks
from services.parser.formats.base import SampleBatch
from services.progress import preview
from services.progress.preview import build_preview
from services.progress.repository import ProgressRepository
from services.progress.summary import QUERIES as SUMMARY_QUERIES

SAMPLES = 60_000_000
BATCH = 50_000
RUNS = 5
T0 = 1_700_000_000_000_000_000
PERIOD_NS = 10_000_000  # 100 Hz
EDGE_SAMPLES = 16_384  # stored on each side of a zoom edge: a coarse block's worth


def _batch(first: int, rng: np.random.Generator) -> SampleBatch:
    n = min(BATCH, SAMPLES - first)
    values = np.full((n, 9), np.nan, np.float32)
    values[:, :6] = rng.standard_normal((n, 6), dtype=np.float32)
    index = np.arange(first, first + n, dtype=np.int64)
    return SampleBatch(index, T0 + index * PERIOD_NS, values, end_offset=0)


async def _store_samples_around(conn: asyncpg.Connection, file_id: uuid.UUID, edges: tuple[int, ...]) -> int:
    """The imu_samples rows within EDGE_SAMPLES of each edge (t_ns), for the exact scans."""
    rng = np.random.default_rng(2)
    rows = 0
    for edge in edges:
        mid = (edge - T0) // PERIOD_NS
        index = np.arange(max(0, mid - EDGE_SAMPLES), min(SAMPLES, mid + EDGE_SAMPLES), dtype=np.int64)
        values = rng.standard_normal((index.size, 6), dtype=np.float32).tolist()
        records = [(file_id, i, T0 + i * PERIOD_NS, *v) for i, v in zip(index.tolist(), values, strict=True)]
        columns = ["file_id", "sample_index", "t_ns", "ax", "ay", "az", "gx", "gy", "gz"]
        await conn.copy_records_to_table("imu_samples", records=records, columns=columns)
        rows += len(records)
    await conn.execute("ANALYZE imu_samples")
    return rows


def _app(pool: asyncpg.Pool) -> FastAPI:
    """The progress service's preview route on its own (no broker, no consumers)."""
    app = FastAPI()
    app.state.pool = pool
    app.state.repo = ProgressRepository(pool)
    app.include_router(preview.router)
    return app


async def _http_rows(
    pool: asyncpg.Pool, token: str, file_id: uuid.UUID, zoom: tuple[int, int]
) -> list[list[object]]:
    """Whole-file and zoomed previews as a browser asks for them: median ms per request."""
    rows: list[list[object]] = []
    transport = httpx.ASGITransport(app=_app(pool))
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://bench", headers=headers) as client:
        url = f"/api/files/{file_id}/preview"

        async def get(params: dict[str, int]) -> None:
            response = await client.get(url, params=params)
            response.raise_for_status()
            assert response.json()["points"] == params["points"]

        for points in (1000, 5000):
            ms = await _median_ms(lambda p=points: get({"points": p}))
            rows.append([f"whole file, points={points}: GET .../preview (HTTP, JSON)", round(ms, 1)])
        ms = await _median_ms(lambda: get({"points": 1000, "start_ns": zoom[0], "end_ns": zoom[1]}))
        rows.append(["1 % zoom, points=1000: GET .../preview (exact edge scans)", round(ms, 1)])
    return rows


async def _fill(conn: asyncpg.Connection, file_id: uuid.UUID) -> tuple[float, int]:
    rng = np.random.default_rng(1)
    started = time.perf_counter()
    for first in range(0, SAMPLES, BATCH):
        await preview_blocks.store(conn, file_id, _batch(first, rng))
    await conn.execute("ANALYZE imu_preview_blocks")
    rows = await conn.fetchval("SELECT count(*) FROM imu_preview_blocks WHERE file_id = $1", file_id)
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
            pool = await db.create_pool(pg.url, max_size=4)
            try:
                token = await auth.create_token(conn, "bench")
                user_id = await conn.fetchval("SELECT id FROM users WHERE name = 'bench'")
                file_id = uuid.uuid4()
                await conn.execute(
                    "INSERT INTO imu_data_files (id, user_id, filename, size_bytes, sha256, storage_uri, "
                    "status, samples_processed) "
                    "VALUES ($1, $2, 'big.csv', 1, 'x', 'file:///dev/null', 'completed', $3)",
                    file_id,
                    user_id,
                    SAMPLES,
                )
                fill_s, rows = await _fill(conn, file_id)
                span = SAMPLES * PERIOD_NS
                zoom = (T0 + span // 3 + 7, T0 + span // 3 + span // 100)
                edge_rows = await _store_samples_around(conn, file_id, zoom)
                table = Table(
                    f"Preview of a {SAMPLES / 1e6:.0f}M-sample file from its pyramid ({rows:,} block rows)",
                    ["request", "median ms"],
                )
                for points in (1000, 5000):
                    ms = await _median_ms(lambda p=points: build_preview(conn, file_id, p, None, None, None))
                    table.rows.append([f"whole file, points={points} (build_preview)", round(ms, 1)])
                table.rows.extend(await _http_rows(pool, token, file_id, zoom))
                ms = await _median_ms(lambda: conn.fetch(SUMMARY_QUERIES["block_summary"], file_id))
                table.rows.append(["summary from the blocks (once per file)", round(ms, 1)])
                table.notes.append(
                    f"building and storing the pyramid: {fill_s:.1f} s for {SAMPLES // BATCH} batches "
                    f"({1000 * fill_s / (SAMPLES // BATCH):.1f} ms per 50k-sample batch); "
                    f"imu_samples holds the {edge_rows:,} samples around the zoom's edges"
                )
            finally:
                await pool.close()
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
