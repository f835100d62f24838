"""The preview pyramid's COPY BINARY payload stores exactly the rows its tuples store.

`preview_blocks.encode` replaced Python tuples sent through `copy_records_to_table`
(issue 18); both are written to twin tables on a real Postgres and compared as text,
which keeps NULL apart from NaN and -0 apart from 0 (float text output is exact since
Postgres 12), on synthetic batches that reach every NULL case and on every test file.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import numpy as np
import pytest

from imuflow import db
from services.parser.formats.base import NULL_TIME, FormatError, ReadOptions, SampleBatch
from services.parser.formats.registry import detect_format, make_reader
from services.parser.preview_blocks import COLUMNS, FINE, block_rows, encode
from tests.parser.formats.binary_helpers import DATA, read_all

pytestmark = pytest.mark.integration
FILE = uuid.UUID("0f0e0d0c-0b0a-0908-0706-050403020100")
ORDER = "sensor, level, first_index"


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    c = await db.connect(database_url)
    await c.execute("CREATE TEMP TABLE as_tuples (LIKE imu_preview_blocks)")
    await c.execute("CREATE TEMP TABLE as_binary (LIKE imu_preview_blocks)")
    try:
        yield c
    finally:
        await c.close()


async def assert_same_rows(conn: asyncpg.Connection, batch: SampleBatch) -> int:
    """Store `batch` both ways; the rows must be equal field for field. Their count."""
    await conn.execute("TRUNCATE as_tuples, as_binary")
    await conn.copy_records_to_table("as_tuples", records=block_rows(FILE, batch), columns=list(COLUMNS))
    encoded = encode(FILE, batch)
    await conn.copy_to_table(
        "as_binary", source=_once(encoded.payload), columns=list(COLUMNS), format="binary"
    )
    tuples = await conn.fetch(f"SELECT t::text AS row FROM as_tuples t ORDER BY {ORDER}")
    binary = await conn.fetch(f"SELECT t::text AS row FROM as_binary t ORDER BY {ORDER}")
    assert [r["row"] for r in binary] == [r["row"] for r in tuples]
    firsts = await conn.fetch(
        f"SELECT sensor, min(first_index) AS f FROM as_tuples WHERE level = {FINE} GROUP BY 1"
    )
    assert encoded.firsts == {r["sensor"]: r["f"] for r in firsts}
    return len(tuples)


async def _once(payload: bytes) -> AsyncIterator[bytes]:
    yield payload


def synthetic(n: int, seed: int) -> SampleBatch:
    rng = np.random.default_rng(seed)
    values = rng.normal(0, 9, (n, 9)).astype(np.float32)
    t = np.arange(n, dtype=np.int64) * 10_000_000 + 1_700_000_000_000_000_000
    return SampleBatch(np.arange(1000, 1000 + n, dtype=np.int64), t, values, end_offset=0)


def mixed() -> SampleBatch:
    """Every NULL case at once: columns NULL in every row, cells NULL here and there, a
    block with no value of an axis, an infinity, -0, gaps, zero intervals, known ranges."""
    b = synthetic(40_001, 1)  # the last fine block holds one sample: no interval
    b.values[:, 6:] = np.nan
    b.values[::7, 2] = np.nan
    b.values[256:512, 4] = np.nan  # a whole fine block without gy
    b.values[3, 0], b.values[9, 1] = np.inf, -0.0
    b.t_ns[5000:] += 3_000_000_000
    b.t_ns[7000:7002] = b.t_ns[6999]  # zero intervals
    b.ranges = {"ax": 2 * 9.80665, "ay": 2 * 9.80665, "az": 2 * 9.80665, "gx": 2000.0}
    return b


def sensors() -> SampleBatch:
    """Two sensors interleaved, one first appearing late, no time base."""
    b = synthetic(3000, 2)
    b.t_ns[:] = NULL_TIME
    b.sensor = np.where(np.arange(3000) < 700, 0, np.arange(3000) % 2).astype(np.int16)
    b.sensors = ("left", "right-ünïcode", "never")
    return b


def tiny() -> SampleBatch:
    b = synthetic(1, 3)
    b.values[0, :] = np.nan
    return b


@pytest.mark.parametrize("make", [lambda: synthetic(400_000, 0), mixed, sensors, tiny])
async def test_synthetic_batches(conn: asyncpg.Connection, make: object) -> None:
    assert callable(make)
    assert await assert_same_rows(conn, make()) > 0


async def test_every_test_file(conn: asyncpg.Connection) -> None:
    """Every file of tests/data the parser accepts (two are rejected: counts, orientations)."""
    stored, files = 0, 0
    for path in sorted(p for p in DATA.iterdir() if p.suffix != ".md"):
        data = path.read_bytes()
        try:
            reader = make_reader(detect_format(data[:65536], path.name))
            _, batches = read_all(reader, data, 5_000, ReadOptions(filename=path.name))
        except FormatError:
            continue
        files += 1
        for b in batches:
            stored += await assert_same_rows(conn, b)
    assert files >= 15 and stored > 500


def test_the_payload_is_the_same_bytes_every_time() -> None:
    """Deterministic: a re-parse writes the same rows (no dict or set order leaks in)."""
    assert encode(FILE, mixed()).payload == encode(FILE, mixed()).payload
