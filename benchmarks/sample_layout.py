"""Raw samples beyond one Postgres: three layouts measured on the same synthetic samples.

`python -m benchmarks.sample_layout [--files 5] [--rows 1000000]` builds, in a scratch
database of the Postgres at IMUFLOW_BENCH_DATABASE_URL (default 127.0.0.1:5432):

* `imu_samples` as today (one table, BRIN on (file_id, sample_index));
* the same table partitioned by HASH (file_id) into 16 partitions (same BRIN in each);

and, with pyarrow, one Parquet file per upload (zstd, sorted by sample_index, 64k-row row
groups), what an object-store layout would keep. For each: bytes per sample stored
(table + indexes; file size) and the time of a typical range read (one minute at 100 Hz:
6,000 consecutive samples of one file, median of 9 random offsets). Not in the suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common import Table, show
from tests.servers import with_database

SERVER = os.environ.get("IMUFLOW_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
COLUMNS = "sample_index, t_ns, ax, ay, az, gx, gy, gz, mx, my, mz, sensor"
RANGE = 6_000
IMU = ("ax", "ay", "az", "gx", "gy", "gz")
READS = 9

SCHEMA = """
CREATE TABLE flat (
    file_id uuid NOT NULL, sample_index bigint NOT NULL, t_ns bigint,
    ax real, ay real, az real, gx real, gy real, gz real, mx real, my real, mz real, sensor text);
CREATE INDEX ON flat USING brin (file_id, sample_index) WITH (pages_per_range = 32);
CREATE TABLE part (LIKE flat) PARTITION BY HASH (file_id);
"""
FILL = """
INSERT INTO {table} SELECT $1::uuid, i, i * 10000000,
    random(), random(), random(), random(), random(), random(), NULL, NULL, NULL, NULL
FROM generate_series(0::bigint, $2::bigint - 1) AS i
"""


async def _postgres(files: list[str], rows: int) -> list[list[object]]:
    name = f"imuflow_bench_layout_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(SERVER)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        conn = await asyncpg.connect(with_database(SERVER, name))
        try:
            await conn.execute(SCHEMA)
            for n in range(16):
                await conn.execute(
                    f"CREATE TABLE part_{n} PARTITION OF part FOR VALUES WITH (MODULUS 16, REMAINDER {n})"
                )
            await conn.execute(
                "CREATE INDEX ON part USING brin (file_id, sample_index) WITH (pages_per_range = 32)"
            )
            out = []
            for table in ("flat", "part"):
                began = time.perf_counter()
                for file_id in files:
                    await conn.execute(FILL.format(table=table), file_id, rows)
                loaded = time.perf_counter() - began
                await conn.execute(f"VACUUM ANALYZE {table}")
                size = await conn.fetchval(
                    "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                    "WHERE c.relname = $1 OR c.relname LIKE $1 || '\\_%' AND c.relkind IN ('r', 'p')",
                    table,
                )
                times = []
                for _ in range(READS):
                    start = random.randrange(rows - RANGE)
                    began = time.perf_counter()
                    got = await conn.fetch(
                        f"SELECT {COLUMNS} FROM {table} WHERE file_id = $1::uuid "
                        "AND sample_index >= $2 AND sample_index < $3 ORDER BY sample_index",
                        random.choice(files),
                        start,
                        start + RANGE,
                    )
                    times.append(time.perf_counter() - began)
                    assert len(got) == RANGE
                label = "Postgres, one table (today)" if table == "flat" else "Postgres, 16 hash partitions"
                total = rows * len(files)
                out.append([label, round(int(size) / total, 1), round(statistics.median(times) * 1000, 1),
                            round(total / loaded)])  # fmt: skip
            return out
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


def _parquet(files: list[str], rows: int) -> list[object]:
    with tempfile.TemporaryDirectory(prefix="imuflow-layout-") as tmp:
        size = 0
        began = time.perf_counter()
        paths = []
        for file_id in files:
            index = pa.array(range(rows), pa.int64())
            table = pa.table(
                {
                    "sample_index": index,
                    "t_ns": pa.compute.multiply(index, 10_000_000),
                    **{
                        c: pa.array(_randoms(rows), pa.float32())
                        for c in ("ax", "ay", "az", "gx", "gy", "gz")
                    },
                    **{c: pa.nulls(rows, pa.float32()) for c in ("mx", "my", "mz")},
                    "sensor": pa.nulls(rows, pa.string()),
                }
            )
            path = Path(tmp) / f"{file_id}.parquet"
            pq.write_table(table, path, compression="zstd", row_group_size=65_536)
            size += path.stat().st_size
            paths.append(path)
        written = time.perf_counter() - began
        times = []
        for _ in range(READS):
            start = random.randrange(rows - RANGE)
            began = time.perf_counter()
            got = pq.read_table(
                random.choice(paths),
                filters=[("sample_index", ">=", start), ("sample_index", "<", start + RANGE)],
            )
            times.append(time.perf_counter() - began)
            assert got.num_rows == RANGE
    total = rows * len(files)
    return ["Parquet per file (zstd), local disk", round(size / total, 1),
            round(statistics.median(times) * 1000, 1), round(total / written)]  # fmt: skip


def _randoms(n: int) -> list[float]:
    rng = random.Random(n)
    return [rng.random() for _ in range(n)]


def run(files: int = 5, rows: int = 1_000_000) -> list[Table]:
    """The table."""
    ids = [str(uuid.uuid4()) for _ in range(files)]
    table = Table(
        f"Raw samples: {files} files x {rows:,} samples, bytes per sample and a one-minute range read",
        ["layout", "bytes/sample", "range read ms (6,000 samples)", "load samples/s"],
    )
    table.rows.extend(asyncio.run(_postgres(ids, rows)))
    table.rows.append(_parquet(ids, rows))
    table.notes.append(
        "six random IMU channels (real), magnetometer and sensor NULL, as an accelerometer+gyroscope "
        "file stores them; Postgres load is INSERT ... SELECT generate_series (server-side, not the "
        "parser's COPY); Parquet load includes generating the values in Python."
    )
    return [table]


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    show(run(args.files, args.rows))


if __name__ == "__main__":
    main()
