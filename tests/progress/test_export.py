"""Export: the stored samples back as CSV or Parquet, in order, units named; constant memory."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from imuflow.cli.main import main as cli_main
from imuflow.settings import Settings
from tests.e2e.helpers import DATA, bearer, follow_until_done, make_token, upload
from tests.stack import ServiceStack, StartStack

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
GYRO = DATA / "phyphox_deadreckoning_Gyroscope.csv"
GYRO_SAMPLES = 10_575
BIG_ROWS = 5_000_000
MEMORY_BOUND = 150 * 1024 * 1024  # growth of the server's peak RSS; the CSV alone is ~400 MB


async def _parsed(stack: ServiceStack, token: str, path: Path, **fields: str) -> dict[str, Any]:
    response = await upload(stack.ingest_url, token, path, **fields)
    assert response.status_code == 202, response.text
    seen = await asyncio.wait_for(
        follow_until_done(f"{stack.progress_url}/api/files/{response.json()['id']}/events", token), 120
    )
    assert seen[-1].type == "completed", seen[-1].record
    return seen[-1].record


async def _get(stack: ServiceStack, token: str, file_id: str, **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=120, headers=bearer(token)) as client:
        return await client.get(f"{stack.progress_url}/api/files/{file_id}/samples", params=params)


def _f32(values: list[Any]) -> np.ndarray[Any, Any]:
    return np.array([np.nan if v in (None, "") else float(v) for v in values], dtype=np.float32)


async def test_export_round_trip(
    test_settings: Settings, service_stack: StartStack, database_url: str, tmp_path: Path
) -> None:
    stack = await service_stack(test_settings)
    token = await make_token(database_url, "alice")
    record = await _parsed(stack, token, GYRO)
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT sample_index, t_ns, gx, gy, gz FROM imu_samples WHERE file_id = $1 ORDER BY sample_index",
            uuid.UUID(record["id"]),
        )
    finally:
        await conn.close()
    assert len(rows) == GYRO_SAMPLES
    stored = {k: [r[k] for r in rows] for k in ("sample_index", "t_ns", "gx", "gy", "gz")}

    response = await _get(stack, token, record["id"], **{"as": "csv"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(response.text)))
    assert table[0] == ["sample_index", "t_ns", "gx (rad/s)", "gy (rad/s)", "gz (rad/s)"]
    body = table[1:]
    assert [int(r[0]) for r in body] == stored["sample_index"]
    assert [int(r[1]) for r in body] == stored["t_ns"]
    for i, axis in enumerate(("gx", "gy", "gz"), start=2):
        np.testing.assert_array_equal(_f32([r[i] for r in body]), _f32(stored[axis]))

    response = await _get(stack, token, record["id"], **{"as": "parquet"})
    assert response.status_code == 200
    parquet = pq.read_table(io.BytesIO(response.content))
    assert parquet.column_names == ["sample_index", "t_ns", "gx", "gy", "gz"]
    assert parquet.schema.field("gx").metadata == {b"unit": b"rad/s"}
    assert parquet.column("sample_index").to_pylist() == stored["sample_index"]
    assert parquet.column("t_ns").to_pylist() == stored["t_ns"]
    for axis in ("gx", "gy", "gz"):
        np.testing.assert_array_equal(parquet.column(axis).to_numpy(), _f32(stored[axis]))

    # Downsampled, bucketed for plotting, and a time window (ns or ISO-8601).
    every = list(csv.reader(io.StringIO((await _get(stack, token, record["id"], every=10)).text)))[1:]
    assert [int(r[0]) for r in every] == stored["sample_index"][::10]
    buckets = list(csv.reader(io.StringIO((await _get(stack, token, record["id"], buckets=50)).text)))
    assert buckets[0][:5] == ["bucket", "t_ns", "samples", "gx_min (rad/s)", "gx_max (rad/s)"]
    assert len(buckets) - 1 <= 50 and sum(int(r[2]) for r in buckets[1:]) == GYRO_SAMPLES
    assert min(float(r[3]) for r in buckets[1:]) == pytest.approx(min(stored["gx"]), rel=1e-6)
    assert max(float(r[4]) for r in buckets[1:]) == pytest.approx(max(stored["gx"]), rel=1e-6)
    t0, t1 = stored["t_ns"][100], stored["t_ns"][200]
    window = list(csv.reader(io.StringIO((await _get(stack, token, record["id"], start=t0, end=t1)).text)))
    assert [int(r[0]) for r in window[1:]] == list(range(100, 200))
    iso = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=t0 // 1000)).isoformat()
    if t0 % 1000 == 0:
        later = list(csv.reader(io.StringIO((await _get(stack, token, record["id"], start=iso)).text)))
        assert int(later[1][0]) == 100
    bad = await _get(stack, token, record["id"], start="yesterday-ish")
    assert bad.status_code == 400 and "start" in bad.json()["detail"]
    both = await _get(stack, token, record["id"], every=2, buckets=3)
    assert both.status_code == 400

    # Another user's file does not exist for them.
    other = await make_token(database_url, "mallory")
    assert (await _get(stack, other, record["id"])).status_code == 404

    # The CLI writes the same bytes.
    data_dir = tmp_path / "cli"
    data_dir.mkdir()
    (data_dir / "stack.env").write_text(
        f"IMUFLOW_PROGRESS_URL={stack.progress_url}\nIMUFLOW_INGEST_URL={stack.ingest_url}\n"
        f"IMUFLOW_TOKEN={token}\nIMUFLOW_DATABASE_URL={database_url}\n"
    )
    out = tmp_path / "gyro.parquet"
    code = await asyncio.to_thread(
        _cli, ["--data-dir", str(data_dir), "export", record["id"], "--as", "parquet", "-o", str(out)]
    )
    assert code == 0
    assert pq.read_table(out).equals(parquet)


def _cli(argv: list[str]) -> int:
    try:
        cli_main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.timeout(600)
@pytest.mark.xdist_group("cpu")
async def test_export_of_five_million_rows_stays_within_a_memory_bound(
    test_settings: Settings, service_stack: StartStack, database_url: str, tmp_path: Path
) -> None:
    stack = await service_stack(test_settings, services=["progress"])
    pid = stack.supervisor.services["progress"].pid
    assert pid is not None
    token = await make_token(database_url, "bulk")
    file_id = uuid.uuid4()
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO imu_data_files (id, user_id, filename, size_bytes, sha256, storage_uri, status,"
            " units, samples_processed, sample_count, sample_count_exact)"
            " SELECT $1, id, 'big.csv', 1, 'x', 'file:///nonexistent', 'completed',"
            ' \'{"ax": "m/s^2", "ay": "m/s^2", "az": "m/s^2", "gx": "rad/s", "gy": "rad/s", "gz": "rad/s"}\','
            " $2, $2, true FROM users WHERE name = 'bulk'",
            file_id,
            BIG_ROWS,
        )
        # Synthetic rows written straight into the table by the server (no parser involved).
        await conn.execute(
            "INSERT INTO imu_samples (file_id, sample_index, t_ns, ax, ay, az, gx, gy, gz)"
            " SELECT $1, g, 1700000000000000000 + g * 10000000, sin(g)::real, cos(g)::real, 9.81,"
            " (g % 1000) / 1000.0, -0.5, 0.25 FROM generate_series(0::bigint, $2::bigint - 1) g",
            file_id,
            BIG_ROWS,
        )
    finally:
        await conn.close()
    url = f"{stack.progress_url}/api/files/{file_id}/samples"
    # The process's first Parquet export imports pyarrow (40 MiB of peak RSS, once per
    # process: progress imports it only then). Its last second, exported first, puts that
    # in the baseline, so what is measured below is the export's own growth.
    last = datetime.fromtimestamp((1_700_000_000_000_000_000 + (BIG_ROWS - 1) * 10_000_000) / 1e9 - 1, UTC)
    async with httpx.AsyncClient(timeout=30, headers=bearer(token)) as client:
        warm = await client.get(url, params={"as": "parquet", "start": last.isoformat()})
    assert warm.status_code == 200 and pq.read_table(io.BytesIO(warm.content)).num_rows == 101
    for kind in ("csv", "parquet"):
        before = _peak_rss(pid)
        target = tmp_path / f"big.{kind}"
        size = 0
        newlines = 0
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(30, read=300), headers=bearer(token)) as client,
            client.stream("GET", url, params={"as": kind}) as response,
        ):
            assert response.status_code == 200
            with target.open("wb") as f:
                async for chunk in response.aiter_bytes():
                    f.write(chunk)
                    size += len(chunk)
                    newlines += chunk.count(b"\n")
        growth = _peak_rss(pid) - before
        assert growth < MEMORY_BOUND, f"{kind}: peak RSS grew by {growth / 2**20:.0f} MiB for {size} bytes"
        if kind == "csv":
            assert newlines == BIG_ROWS + 1
            assert size > 2 * MEMORY_BOUND  # the bound is far below what buffering would need
        else:
            assert pq.ParquetFile(target).metadata.num_rows == BIG_ROWS
            assert BIG_ROWS * 40 > MEMORY_BOUND  # the rows as Arrow columns would not fit the bound
        target.unlink()


async def test_export_of_a_multi_sensor_file_names_the_sensor(
    test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    stack = await service_stack(test_settings)
    token = await make_token(database_url, "alice")
    record = await _parsed(stack, token, DATA / "opensim_apdm_format7.csv")  # 3 rows x 6 sensors
    response = await _get(stack, token, record["id"], **{"as": "csv"})
    assert response.status_code == 200, response.text
    table = list(csv.reader(io.StringIO(response.text)))
    assert "sensor" in table[0]
    column = table[0].index("sensor")
    body = table[1:]
    assert len(body) == 18
    assert len({row[column] for row in body}) == 6
    assert all(row[column] for row in body)
