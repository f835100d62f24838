"""Absolute start times from phyphox `meta/time.csv` and Sensor Logger `Metadata.csv`.

The ZIP's streams are extracted with their anchors line, then read by the parser's text
engine exactly as a job would: relative times become Unix ns, a phyphox pause included.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np

from imuflow.storage.local import LocalStorage, path_of
from services.ingest.archive import Extracted, Plan, extract, plan_archive
from services.ingest.timeanchors import phyphox_anchors, sensor_logger_anchors
from tests.e2e.helpers import DATA
from tests.parser.formats.text_helpers import read_bytes

ACC = DATA / "phyphox_deadreckoning_Accelerometer.csv"
START = 1_700_000_000_250_000_000  # the first START, Unix ns
RESUME = 1_700_000_100_000_000_000  # the START after a pause at experiment time 50 s
TIME_CSV = (
    '"event","experiment time","system time","system time text"\n'
    '"START",0.000000000E0,1700000000.250,"2023-11-14 22:13:20.250 UTC+00:00"\n'
    '"PAUSE",5.000000000E1,1700000050.250,"2023-11-14 22:14:10.250 UTC+00:00"\n'
    '"START",5.000000000E1,1700000100.000,"2023-11-14 22:15:00.000 UTC+00:00"\n'
    '"PAUSE",1.100000000E2,1700000160.000,"2023-11-14 22:16:00.000 UTC+00:00"\n'
)


def _relative_ns() -> np.ndarray:
    with ACC.open(encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    return np.array([round(float(r[0]) * 1e9) for r in rows], dtype=np.int64)


def test_sidecars_parse_to_anchors() -> None:
    assert phyphox_anchors(TIME_CSV.encode()) == [(0, START), (50 * 10**9, RESUME)]
    semicolon = TIME_CSV.replace(",", ";").replace(".", ",")
    assert phyphox_anchors(semicolon.encode()) == [(0, START), (50 * 10**9, RESUME)]
    meta = "version,device name,recording epoch time,recording time,recording timezone\n"
    meta += "3,Pixel 6,1700000000123,2023-11-14_22-13-20,Europe/Zurich\n"
    assert sensor_logger_anchors(meta.encode()) == [(0, 1_700_000_000_123_000_000)]
    assert phyphox_anchors(b'"event","experiment time","system time"\n') == []


async def _extract(path: Path, plan: Plan, store: Path) -> list[Extracted]:
    with path.open("rb") as f:
        return await extract(f, plan, LocalStorage(store), 1 << 30)


async def test_a_phyphox_zip_gives_absolute_times_across_its_pause(tmp_path: Path) -> None:
    path = tmp_path / "deadreckoning.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(ACC, "deadreckoning/Accelerometer.csv")
        zf.writestr("deadreckoning/meta/time.csv", TIME_CSV)
    plan = plan_archive(path, path.name, 1 << 30)
    assert plan is not None
    store = tmp_path / "store"
    store.mkdir()
    (part,) = await _extract(path, plan, store)
    stored = path_of(part.uri).read_bytes()
    assert stored.startswith(b"# imuflow time anchors (phyphox meta/time.csv): ")
    assert stored.endswith(ACC.read_bytes())
    r = read_bytes(stored, part.filename, target=3000)
    rel = _relative_ns()
    expected = np.where(rel < 50 * 10**9, START + rel, RESUME + rel - 50 * 10**9)
    assert (r.format_id, r.n, r.rows_skipped, r.info.time_base) == ("phyphox", 10_577, 0, "epoch")
    np.testing.assert_array_equal(r.t_ns, expected)
    plain = read_bytes(ACC.read_bytes(), ACC.name)
    np.testing.assert_array_equal(r.values, plain.values)


async def test_sensor_logger_metadata_anchors_seconds_elapsed_but_time_wins(tmp_path: Path) -> None:
    meta = "version,device name,recording epoch time\n3,Pixel 6,1700000000123\n"
    elapsed_only = "seconds_elapsed,z,y,x\n" + "".join(f"{i * 0.02:.2f},9.8,0.1,{i}\n" for i in range(50))
    with_time = "time,seconds_elapsed,z,y,x\n" + "".join(
        f"{1_699_999_999_000_000_000 + i * 20_000_000},{i * 0.02:.2f},9.8,0.1,{i}\n" for i in range(50)
    )
    path = tmp_path / "logger.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("Accelerometer.csv", elapsed_only)
        zf.writestr("Gyroscope.csv", with_time)
        zf.writestr("Metadata.csv", meta)
    plan = plan_archive(path, path.name, 1 << 30)
    assert plan is not None
    store = tmp_path / "store"
    store.mkdir()
    parts = {p.filename: p for p in await _extract(path, plan, store)}
    acc = read_bytes(path_of(parts["Accelerometer.csv"].uri).read_bytes(), "Accelerometer.csv")
    assert acc.n == 50 and acc.info.time_base == "epoch"
    np.testing.assert_array_equal(acc.t_ns, 1_700_000_000_123_000_000 + np.arange(50) * 20_000_000)
    gyro = read_bytes(path_of(parts["Gyroscope.csv"].uri).read_bytes(), "Gyroscope.csv")
    np.testing.assert_array_equal(gyro.t_ns, 1_699_999_999_000_000_000 + np.arange(50) * 20_000_000)
