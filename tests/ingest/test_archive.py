"""Phone-app ZIP exports: one record per sensor stream; duplicates; ZIP guards."""

from __future__ import annotations

import asyncio
import io
import zipfile
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from imuflow.settings import Settings
from imuflow.storage import LocalStorage
from services.ingest.archive import MAX_MEMBERS, extract, plan_archive
from services.ingest.multipart import UploadRejected
from tests.common.test_archives import claiming
from tests.e2e.helpers import DATA, bearer, make_token, once_ended
from tests.stack import StartStack

PHYPHOX = {
    "Accelerometer.csv": (DATA / "phyphox_deadreckoning_Accelerometer.csv", 10_577),
    "Gyroscope.csv": (DATA / "phyphox_deadreckoning_Gyroscope.csv", 10_575),
    "Magnetometer.csv": (DATA / "phyphox_deadreckoning_Magnetometer.csv", 10_575),
}
FAST = {"IMUFLOW_BATCH_SIZE": "4000", "IMUFLOW_ADAPTIVE_BATCHING": "false", "IMUFLOW_UPLOAD_BURST": "60"}


def phyphox_zip(path: Path) -> Path:
    """A phyphox-style export: `<Sensor>.csv` plus `meta/`."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, (source, _) in PHYPHOX.items():
            zf.write(source, f"deadreckoning/{name}")
        zf.writestr("deadreckoning/meta/device.csv", '"property","value"\n"deviceModel","Pixel"\n')
        zf.writestr("deadreckoning/meta/time.csv", '"event","experiment time","system time"\n')
    return path


def sensor_logger_zip(path: Path, rows: int = 500) -> Path:
    """A Sensor Logger-style export: `time,seconds_elapsed,z,y,x` per sensor, plus sidecars."""
    t0 = 1_700_000_000_000_000_000

    def stream(scale: float) -> str:
        lines = ["time,seconds_elapsed,z,y,x"]
        for i in range(rows):
            lines.append(
                f"{t0 + i * 10_000_000},{i * 0.01:.2f},{scale * 3:.3f},{scale * 2:.3f},{scale + i:.3f}"
            )
        return "\n".join(lines) + "\n"

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("Accelerometer.csv", stream(1.0))
        zf.writestr("Gyroscope.csv", stream(0.1))
        zf.writestr("Gravity.csv", stream(9.8))
        zf.writestr("Orientation.csv", "time,seconds_elapsed,qz,qy,qx,qw,roll,pitch,yaw\n1,0,0,0,0,1,0,0,0\n")
        zf.writestr("Metadata.csv", "version,device name,recording time\n1.31.4,Pixel 6,2023-11-14\n")
        zf.writestr("../../etc/Annotation.csv", "time,text\n")
    return path


# --- the plan, without servers ---------------------------------------------------------


def test_phyphox_plan_skips_meta(tmp_path: Path) -> None:
    plan = plan_archive(phyphox_zip(tmp_path / "p.zip"), "p.zip", 1 << 30)
    assert plan is not None
    assert sorted(Path(i.filename).name for i in plan.streams) == sorted(PHYPHOX)
    assert plan.skipped == ["device.csv", "time.csv"]


def test_sensor_logger_plan_and_hostile_names(tmp_path: Path) -> None:
    path = sensor_logger_zip(tmp_path / "s.zip")
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("../../../tmp/evil/Magnetometer.csv", "time,seconds_elapsed,z,y,x\n1,0,1,2,3\n")
    plan = plan_archive(path, "s.zip", 1 << 30)
    assert plan is not None
    names = [i.filename for i in plan.streams]
    assert names == ["Accelerometer.csv", "Gyroscope.csv", "../../../tmp/evil/Magnetometer.csv"]
    assert {"Gravity.csv", "Orientation.csv", "Metadata.csv", "Annotation.csv"} <= set(plan.skipped)


def test_not_an_app_export(tmp_path: Path) -> None:
    plain = tmp_path / "a.csv"
    plain.write_text("t,ax\n1,2\n")
    assert plan_archive(plain, "a.csv", 1 << 30) is None
    gt3x = tmp_path / "rec.zip"
    with zipfile.ZipFile(gt3x, "w") as zf:
        zf.writestr("info.txt", "Serial Number: X\n")
        zf.writestr("log.bin", b"\x1e")
    assert plan_archive(gt3x, "rec.zip", 1 << 30) is None  # a device container: read whole
    none = tmp_path / "n.zip"
    with zipfile.ZipFile(none, "w") as zf:
        zf.writestr("photo.jpg", b"\xff\xd8\xff")
    with pytest.raises(UploadRejected) as err:
        plan_archive(none, "n.zip", 1 << 30)
    assert err.value.status == 400


def test_zip_bomb_and_member_count_guards(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("Accelerometer.csv", b"0" * 5_000_000)  # compresses to a few KiB
    assert bomb.stat().st_size < 50_000
    with pytest.raises(UploadRejected) as err:
        plan_archive(bomb, "bomb.zip", 1_000_000)
    assert err.value.status == 413
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as zf:
        for i in range(MAX_MEMBERS + 1):
            zf.writestr(f"x{i}.txt", b"")
    with pytest.raises(UploadRejected) as err:
        plan_archive(many, "many.zip", 1 << 30)
    assert err.value.status == 400


def test_inflate_ratio_and_directory_claims_are_refused_with_a_reason(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("Accelerometer.csv", b"0" * 30_000_000)  # within the size limit, ~1000:1
    with pytest.raises(UploadRejected) as err:
        plan_archive(bomb, "bomb.zip", 1 << 30, max_ratio=100)
    assert err.value.status == 400 and "Accelerometer.csv inflates" in err.value.detail
    claims = tmp_path / "claims.zip"
    claims.write_bytes(claiming(phyphox_zip(tmp_path / "p.zip").read_bytes(), 65_535, 0xFFFFFFF0))
    with pytest.raises(UploadRejected) as err:
        plan_archive(claims, "claims.zip", 1 << 30)
    assert err.value.status == 400 and "65,535 members" in err.value.detail


async def test_extract_counts_inflated_bytes_and_leaves_nothing_behind(tmp_path: Path) -> None:
    path = phyphox_zip(tmp_path / "p.zip")
    plan = plan_archive(path, "p.zip", 1 << 30)
    assert plan is not None
    store = tmp_path / "store"
    store.mkdir()
    storage = LocalStorage(store)
    sizes = [i.file_size for i in plan.streams]
    # The budget covers the first two streams but not the third: refused while streaming.
    with path.open("rb") as f:
        with pytest.raises(UploadRejected) as err:
            await extract(f, plan, storage, sum(sizes[:2]) + sizes[2] // 2)
        assert err.value.status == 413 and "unpacks to more than" in err.value.detail
        assert list(store.iterdir()) == []
        parts = await extract(f, plan, storage, 1 << 30)
    assert [p.size for p in parts] == sizes


# --- end to end ------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.e2e
@pytest.mark.timeout(180)
async def test_phyphox_zip_becomes_one_record_per_sensor(
    test_settings: Settings, service_stack: StartStack, database_url: str, tmp_path: Path
) -> None:
    stack = await service_stack(test_settings, env=FAST)
    token = await make_token(database_url, "alice")
    path = phyphox_zip(tmp_path / "deadreckoning.zip")
    async with httpx.AsyncClient(timeout=60, headers=bearer(token)) as client:
        with path.open("rb") as f:
            response = await client.post(f"{stack.ingest_url}/api/files", files={"file": (path.name, f)})
    assert response.status_code == 202, response.text
    parent = response.json()
    assert parent["format"] == "zip" and len(parent["children"]) == 3
    assert any(w.startswith("skipped ") and "time.csv" in w for w in parent["warnings"])
    children = await once_ended(stack.progress_url, token, parent["children"], within=90)
    counts = {c["filename"]: c["sample_count"] for c in children}
    assert counts == {name: n for name, (_, n) in PHYPHOX.items()}
    assert all(c["status"] == "completed" and c["parent_id"] == parent["id"] for c in children)
    conn = await asyncpg.connect(database_url)
    try:
        for child in children:
            source = PHYPHOX[child["filename"]][0]
            row = await conn.fetchrow(
                "SELECT size_bytes, storage_uri FROM imu_data_files WHERE id = $1", child["id"]
            )
            assert row["size_bytes"] == source.stat().st_size
            stored_path = Path(row["storage_uri"].removeprefix("file://"))
            assert await asyncio.to_thread(stored_path.read_bytes) == source.read_bytes()
        gyro = next(c for c in children if c["filename"] == "Gyroscope.csv")
        stored = await conn.fetchrow(
            "SELECT count(gx) AS g, count(ax) AS a FROM imu_samples WHERE file_id = $1", gyro["id"]
        )
        assert stored["g"] == 10_575 and stored["a"] == 0  # the member name said gyroscope
    finally:
        await conn.close()
    (final,) = await once_ended(stack.progress_url, token, [parent["id"]], within=90)
    assert final["status"] == "completed"
    assert final["sample_count"] == final["samples_processed"] == 10_577 + 2 * 10_575
    assert final["sample_count_exact"] is True and final["percent"] == 100


@pytest.mark.integration
@pytest.mark.e2e
@pytest.mark.timeout(180)
async def test_sensor_logger_zip_and_duplicates(
    test_settings: Settings, service_stack: StartStack, database_url: str, tmp_path: Path
) -> None:
    stack = await service_stack(test_settings, env=FAST)
    token = await make_token(database_url, "bob")
    path = sensor_logger_zip(tmp_path / "logger.zip", rows=700)

    async def post(data: dict[str, str] | None = None) -> httpx.Response:
        async with httpx.AsyncClient(timeout=60, headers=bearer(token)) as client:
            return await client.post(
                f"{stack.ingest_url}/api/files", files={"file": (path.name, path.read_bytes())}, data=data
            )

    first = await post()
    assert first.status_code == 202, first.text
    parent = first.json()
    children = await once_ended(stack.progress_url, token, parent["children"], within=90)
    assert sorted(c["filename"] for c in children) == ["Accelerometer.csv", "Gyroscope.csv"]
    assert [c["sample_count"] for c in children] == [700, 700]
    # The same bytes again: 200 with the first record, nothing new stored.
    again = await post()
    assert again.status_code == 200 and again.json()["id"] == parent["id"]
    # Asked for explicitly: a new record that names the first.
    dup = await post({"allow_duplicate": "true"})
    assert dup.status_code == 202 and dup.json()["duplicate_of"] == parent["id"]
    assert dup.json()["id"] != parent["id"] and len(dup.json()["children"]) == 2
    # One sensor for several streams is refused with a reason.
    refused = await post({"allow_duplicate": "true", "sensor": "gyroscope"})
    assert refused.status_code == 400 and "sensor" in refused.json()["detail"]
    conn = await asyncpg.connect(database_url)
    try:
        files = await conn.fetchval("SELECT count(*) FROM imu_data_files")
    finally:
        await conn.close()
    assert files == 6  # two ZIP records with two streams each
    assert len(list(stack.settings.storage_dir.iterdir())) == 6


@pytest.mark.integration
@pytest.mark.e2e
@pytest.mark.timeout(120)
async def test_single_file_duplicate_is_flagged(
    test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    stack = await service_stack(test_settings, env=FAST, services=["ingest"])
    token = await make_token(database_url, "carol")
    other = await make_token(database_url, "dave")
    body = (DATA / "phyphox_deadreckoning_Gyroscope.csv").read_bytes()

    async def post(who: str, data: dict[str, str] | None = None) -> httpx.Response:
        async with httpx.AsyncClient(timeout=60, headers=bearer(who)) as client:
            return await client.post(
                f"{stack.ingest_url}/api/files", files={"file": ("g.csv", body)}, data=data
            )

    first = await post(token)
    assert first.status_code == 202 and first.json()["duplicate_of"] is None
    same = await post(token)
    assert same.status_code == 200 and same.json()["id"] == first.json()["id"]
    flagged = await post(token, {"allow_duplicate": "true"})
    assert flagged.status_code == 202 and flagged.json()["duplicate_of"] == first.json()["id"]
    theirs = await post(other)  # another user's identical bytes are not a duplicate of ours
    assert theirs.status_code == 202 and theirs.json()["duplicate_of"] is None


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.integration
@pytest.mark.timeout(120)
async def test_zip_bomb_is_refused_and_nothing_stored(
    settings_factory: Any, service_stack: StartStack, database_url: str
) -> None:
    settings = settings_factory()
    stack = await service_stack(settings, env={"IMUFLOW_MAX_UPLOAD_BYTES": "1000000"}, services=["ingest"])
    token = await make_token(database_url, "erin")
    bomb = _zip_bytes({"Accelerometer.csv": b"1,2,3,4\n" * 400_000})  # 3.2 MB inside ~10 KB
    async with httpx.AsyncClient(timeout=60, headers=bearer(token)) as client:
        response = await client.post(f"{stack.ingest_url}/api/files", files={"file": ("bomb.zip", bomb)})
    assert response.status_code == 413, response.text
    assert list(stack.settings.storage_dir.iterdir()) == []
