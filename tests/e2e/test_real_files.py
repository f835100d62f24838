"""Every real file in the test data, uploaded to running services, ends as it should.

Counts are those of SOURCES.md; files without raw IMU samples fail with a reason the
user can act on; the damaged .cwa keeps its good blocks and reports the bad ones.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from imuflow.settings import Settings
from tests.e2e.helpers import DATA, follow_until_done, make_token, upload
from tests.stack import StartStack

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(240)]
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "imu"

# file -> (samples, rows skipped) when it parses, or a phrase of its failure reason.
EXPECTED: dict[str, tuple[int, int] | str] = {
    "xio_fusion_sensor_data.csv": (13_514, 0),
    "phyphox_deadreckoning_Accelerometer.csv": (10_577, 0),
    "phyphox_deadreckoning_Gyroscope.csv": (10_575, 0),
    "phyphox_deadreckoning_Magnetometer.csv": (10_575, 0),
    "opensim_MT_012005D6_009-001_00B421E6.txt": (2_432, 0),
    "opensim_MT2022_ACC_GYRO_ROT_ALL_TAB_NAN_00B42D4B.txt": (5, 0),
    "opensim_MT2022_ACC_GYRO_ROT_MAT_COMMA_00B42D4B.txt": (5, 0),
    "opensim_MT46_01-000_00B42D4D.txt": (5, 0),
    "opensim_MT_01200454_000-000_00B40DE4.txt": (4, 0),
    "opensim_apdm_format7.csv": (18, 0),  # 3 rows x 6 sensors
    "opensim_imuData01.csv": (4_096, 0),  # 1,024 rows x 4 sensors
    "ggirread_ax3_testfile.cwa": (17_400, 0),
    "ggirread_ax3_testfile_corrupt_blocks_0_13_14_142_143_144.cwa": (16_680, 6),
    "ggirread_GENEActiv_testfile.bin": (5_031, 0),
    "ggirread_ax3test.wav": (32_640, 0),
    "ggirread_ActiGraph13_timestamps_headers.csv": "activity counts",
    "opensim_imuOrientations.sto": "orientations only",
}


async def test_every_real_file_ends_right(
    test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    stack = await service_stack(test_settings)
    token = await make_token(database_url, "researcher")
    files = {name: DATA / name for name in EXPECTED}
    mtx = SHARED / "ggirread_mtx_12.5Hz_acc_gyro.BIN"
    if mtx.is_file():  # a format we do not read: must fail with a reason, not crash
        files[mtx.name] = mtx
    ids: dict[str, str] = {}
    for name, path in files.items():
        response = await upload(stack.ingest_url, token, path)
        assert response.status_code == 202, (name, response.text)
        ids[name] = response.json()["id"]

    async def final(file_id: str) -> dict[str, Any]:
        events = await follow_until_done(f"{stack.progress_url}/api/files/{file_id}/events", token)
        return events[-1].record

    records = dict(
        zip(ids, await asyncio.wait_for(asyncio.gather(*map(final, ids.values())), 180), strict=True)
    )
    conn = await asyncpg.connect(database_url)
    try:
        for name, record in records.items():
            expected = EXPECTED.get(name, "do not read")
            stored = await conn.fetchval(
                "SELECT count(*) FROM imu_samples WHERE file_id = $1::uuid", ids[name]
            )
            if isinstance(expected, tuple):
                samples, skipped = expected
                assert record["status"] == "completed", (name, record["error_message"])
                assert (record["samples_processed"], record["rows_skipped"]) == (samples, skipped), name
                assert record["sample_count_exact"] is True
                assert stored == samples, name
            else:
                assert record["status"] == "failed", name
                assert expected in str(record["error_message"]), (name, record["error_message"])
                assert stored == 0, name
    finally:
        await conn.close()
    corrupt = records["ggirread_ax3_testfile_corrupt_blocks_0_13_14_142_143_144.cwa"]
    assert any("checksum" in w for w in corrupt["warnings"])


async def test_a_png_named_csv_fails_with_a_reason(
    test_settings: Settings, service_stack: StartStack, database_url: str, tmp_path: Path
) -> None:
    stack = await service_stack(test_settings)
    token = await make_token(database_url, "researcher")
    fake = tmp_path / "recording.csv"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40)
    response = await upload(stack.ingest_url, token, fake)
    assert response.status_code == 202
    events = await asyncio.wait_for(
        follow_until_done(f"{stack.progress_url}/api/files/{response.json()['id']}/events", token), 60
    )
    assert events[-1].type == "failed"
    assert "PNG" in events[-1].record["error_message"]
