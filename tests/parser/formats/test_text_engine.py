"""The text engine on the real files (exact counts, values) and on synthesised presets."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest

from services.parser.formats.base import NULL_TIME, STANDARD_GRAVITY, FormatError, ResumePoint
from tests.parser.formats.text_helpers import (
    DATA,
    actilife_raw,
    euroc,
    phyphox_semicolon,
    read_bytes,
    read_path,
    sensor_logger,
)

DEG = math.pi / 180.0
COUNTS = {
    "xio_fusion_sensor_data.csv": ("generic_csv", 13514),
    "phyphox_deadreckoning_Accelerometer.csv": ("phyphox", 10577),
    "phyphox_deadreckoning_Gyroscope.csv": ("phyphox", 10575),
    "phyphox_deadreckoning_Magnetometer.csv": ("phyphox", 10575),
    "opensim_MT_012005D6_009-001_00B421E6.txt": ("xsens", 2432),
    "opensim_MT2022_ACC_GYRO_ROT_ALL_TAB_NAN_00B42D4B.txt": ("xsens", 5),
    "opensim_MT2022_ACC_GYRO_ROT_MAT_COMMA_00B42D4B.txt": ("xsens", 5),
    "opensim_MT46_01-000_00B42D4D.txt": ("xsens", 5),
    "opensim_MT_01200454_000-000_00B40DE4.txt": ("xsens", 4),
    # 3 rows x 6 sensors; per sensor accelerometer, gyroscope and magnetometer are IMU
    # columns, barometer and orientation are not.
    "opensim_apdm_format7.csv": ("apdm", 18),
    "opensim_imuData01.csv": ("apdm", 4096),
}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_real_file_counts(name: str) -> None:
    fmt, count = COUNTS[name]
    r = read_path(DATA / name, target=700)
    assert (r.format_id, r.n, r.rows_skipped) == (fmt, count, 0)
    assert r.info.sample_count is None


def _csv_rows(path: Path, skip: int, delimiter: str = ",") -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter=delimiter))
    return [r for r in rows[skip:] if r]


def test_xio_values_units_and_axis_order() -> None:
    r = read_path(DATA / "xio_fusion_sensor_data.csv", target=4000)
    rows = np.array(_csv_rows(DATA / "xio_fusion_sensor_data.csv", 1), dtype=np.float64)
    expect = np.column_stack([rows[:, 4:7] * STANDARD_GRAVITY, rows[:, 1:4] * DEG, rows[:, 7:10]])
    np.testing.assert_allclose(r.values, expect, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(r.t_ns, np.rint(rows[:, 0] * 1e9).astype(np.int64))
    assert r.info.units["ax"] == "g" and r.info.units["gx"] == "deg/s"
    assert r.info.time_base == "relative"
    np.testing.assert_array_equal(r.sample_index, np.arange(13514))


@pytest.mark.parametrize("sensor", ["Accelerometer", "Gyroscope", "Magnetometer"])
def test_phyphox_values_and_sensor_from_header_unit(sensor: str) -> None:
    path = DATA / f"phyphox_deadreckoning_{sensor}.csv"
    r = read_path(path)
    rows = np.array(_csv_rows(path, 1), dtype=np.float64)
    offset = {"Accelerometer": 0, "Gyroscope": 3, "Magnetometer": 6}[sensor]
    np.testing.assert_allclose(r.values[:, offset : offset + 3], rows[:, 1:4], rtol=1e-6)
    assert np.isnan(np.delete(r.values, np.s_[offset : offset + 3], axis=1)).all()
    # Renamed, the unit in the header ('X (m/s^2)') still says which sensor it is.
    renamed = read_bytes(path.read_bytes(), "export.csv")
    np.testing.assert_array_equal(renamed.values, r.values)


def test_xsens_counter_time_and_unconvertible_magnetometer() -> None:
    r = read_path(DATA / "opensim_MT_012005D6_009-001_00B421E6.txt")
    np.testing.assert_array_equal(r.t_ns, np.arange(2432, dtype=np.int64) * 10_000_000)
    assert r.values[0, :3].tolist() == pytest.approx([0.102257, 4.888482, -8.503300])
    mag = read_path(DATA / "opensim_MT_01200454_000-000_00B40DE4.txt")
    assert mag.values[0, 6:9].tolist() == pytest.approx([-0.835693, -0.422607, -0.119629])
    assert any("'a.u.'" in w and "stored as given" in w for w in mag.warnings)
    # MT Manager 2022 headers give no update rate and the time fields are NaN.
    nan = read_path(DATA / "opensim_MT2022_ACC_GYRO_ROT_ALL_TAB_NAN_00B42D4B.txt")
    assert np.isnan(nan.values[0, 0]) and nan.values[0, 1] == pytest.approx(-0.040975)
    assert (nan.t_ns == NULL_TIME).all() and nan.info.time_base == "none"


def test_xsens_counter_wraps_at_65536() -> None:
    head = "// Update Rate: 100.0Hz\nPacketCounter\tAcc_X\tAcc_Y\tAcc_Z\n"
    counters = [65533, 65534, 65535, 0, 1, 2]
    body = "".join(f"{c:05d}\t1.0\t2.0\t3.0\n" for c in counters)
    for target in (1, 2, 100):
        r = read_bytes((head + body).encode(), "MT_x.txt", target=target)
        np.testing.assert_array_equal(r.t_ns, np.arange(6, dtype=np.int64) * 10_000_000)


def test_apdm_format7_multi_sensor() -> None:
    r = read_path(DATA / "opensim_apdm_format7.csv", target=5)
    first = r.batches[0]
    assert first.sensors == ("Lumbar", "Right Ankle", "Left Ankle", "Left Foot", "Chest", "Right Foot")
    assert r.sensor.tolist() == list(range(6)) * 3
    assert r.sample_index.tolist() == [i for i in range(3) for _ in range(6)]
    assert r.t_ns[0] == 1550879504438281000 and r.info.time_base == "epoch"
    rows = _csv_rows(DATA / "opensim_apdm_format7.csv", 3)
    lumbar = [float(x) for x in rows[0][1:10]]
    np.testing.assert_allclose(r.values[0], lumbar, rtol=1e-6)
    chest = [float(x) for x in rows[1][1 + 4 * 14 : 10 + 4 * 14]]
    np.testing.assert_allclose(r.values[6 + 4], chest, rtol=1e-6)


def test_apdm_units_row_file() -> None:
    r = read_path(DATA / "opensim_imuData01.csv", target=1000)
    assert r.batches[0].sensors == ("Static", "Upper", "Middle", "Lower")
    rows = _csv_rows(DATA / "opensim_imuData01.csv", 4)
    upper = [float(x) for x in rows[0][16:25]]
    np.testing.assert_allclose(r.values[1], upper, rtol=1e-6)
    assert r.t_ns[0] == 7457625
    assert np.bincount(r.sensor).tolist() == [1024] * 4


def test_euroc_gyro_first_and_exact_ns() -> None:
    r = read_bytes(euroc(rows=30), "data.csv", target=7)
    assert r.format_id == "euroc"
    assert r.t_ns[-1] == 1403636579758555392 + 29 * 5_000_000  # beyond float64 precision
    assert r.values[1, 3:6].tolist() == pytest.approx([0.01, -0.02, 0.03])
    assert r.values[1, 0:3].tolist() == pytest.approx([9.001, 0.1, -0.2])


def test_euroc_spreadsheet_damage_and_junk_trailer() -> None:
    r = read_bytes(euroc(rows=30, damaged=True), "data.csv", target=8)
    assert (r.n, r.rows_skipped) == (30, 4)
    assert r.t_ns[0] == 1403636579758560000  # the 15 significant digits the file kept
    assert any("scientific notation" in w for w in r.warnings)
    assert any("no usable IMU values" in w and "line 32" in w for w in r.warnings)


def test_sensor_logger_zyx_and_name_decides_sensor() -> None:
    data = sensor_logger(rows=10)
    acc = read_bytes(data, "Accelerometer.csv")
    assert acc.format_id == "sensor_logger"
    assert acc.values[1, 0:3].tolist() == pytest.approx([-1.25, 1.5, 10.8])  # x, y, z
    assert acc.t_ns[1] == 1_698_000_000_123_456_789 + 17_857_143
    gyro = read_bytes(data, "Gyroscope.csv")
    assert gyro.values[1, 3:6].tolist() == pytest.approx([-1.25, 1.5, 10.8])
    forced = read_bytes(data, "Gyroscope.csv", sensor="magnetometer")
    assert forced.values[1, 6:9].tolist() == pytest.approx([-1.25, 1.5, 10.8])
    with pytest.raises(FormatError, match="sensor"):
        read_bytes(data, "upload.csv")
    with pytest.raises(FormatError, match="gravity"):
        read_bytes(data, "Gravity.csv")


def test_actilife_raw_synthesised_time_and_g() -> None:
    r = read_bytes(actilife_raw(rows=90), "NEO_RAW.csv", target=25, timezone="America/New_York")
    assert (r.format_id, r.n) == ("actilife_csv", 90)
    start = 1557828000 * 10**9 + 4 * 3600 * 10**9  # 10:00 EDT = 14:00 UTC
    assert r.t_ns[0] == start and r.t_ns[30] == start + 10**9
    assert r.values[1, 0:3].tolist() == pytest.approx([0.01 * 9.80665, -0.998 * 9.80665, 0.5 * 9.80665])


def test_phyphox_semicolon_decimal_comma() -> None:
    for comma in (True, False):
        r = read_bytes(phyphox_semicolon(decimal_comma=comma), "Gyroscope.csv")
        assert (r.format_id, r.n) == ("phyphox", 30)
        assert r.t_ns[2] == 23_000_000
        assert r.values[2, 3:6].tolist() == pytest.approx([0.2, -0.015, 2.0])


def test_bad_value_keeps_row_with_null() -> None:
    data = b"time,ax,ay,az\n0.0,1,2,3\n0.01,1,oops,3\n0.02,,2,3\n0.03,4,5,6\n"
    r = read_bytes(data)
    assert r.n == 4 and r.rows_skipped == 0
    assert np.isnan(r.values[1, 1]) and np.isnan(r.values[2, 0]) and r.values[1, 0] == 1
    assert any("NULL" in w for w in r.warnings)
    assert any("no unit" in w for w in r.warnings)


def test_wrong_field_count_rows_skipped_and_counted() -> None:
    data = b"time,ax,ay,az\n0.0,1,2,3\n0.01,1,2\n0.02,1,2,3,4,5\n0.03,4,5,6\n"
    r = read_bytes(data)
    assert (r.n, r.rows_skipped) == (2, 2)
    assert any("line 3" in w and "wrong number of fields" in w for w in r.warnings)


def test_crlf_bom_nul_and_partial_last_line() -> None:
    plain = read_bytes(b"time,ax,ay,az\n0,1,2,3\n0.5,4,5,6\n1.0,7,8,9\n")
    messy = b"\xef\xbb\xbftime,ax,ay,az\r\n0,1,2,3\r\n0.5,4,\x005,6\r\n1.0,7,8,9"
    r = read_bytes(messy, target=1)
    np.testing.assert_array_equal(r.values, plain.values)
    np.testing.assert_array_equal(r.t_ns, plain.t_ns)
    assert r.batches[-1].end_offset == len(messy)


def test_space_delimiter_with_empty_fields() -> None:
    head = "// Update Rate: 50Hz\nPacketCounter SampleTimeFine Year Acc_X Acc_Y Acc_Z\n"
    body = "".join(f"{51400 + i}   {i}.5 {i + 1}.0 {i + 2}.0\n" for i in range(5))
    r = read_bytes((head + body).encode(), "MT_space.txt")
    assert r.n == 5 and r.values[2, 0:3].tolist() == [2.5, 3.0, 4.0]
    assert r.t_ns[1] == 20_000_000


def test_batch_boundary_inside_a_line_and_resume_everywhere() -> None:
    data = (DATA / "xio_fusion_sensor_data.csv").read_bytes()[:200_000]
    whole = read_bytes(data, "x.csv", target=10**6)
    parts = read_bytes(data, "x.csv", target=333)
    np.testing.assert_array_equal(parts.values, whole.values)
    np.testing.assert_array_equal(parts.t_ns, whole.t_ns)
    done = 0
    for b in parts.batches:
        assert data[b.end_offset - 1 : b.end_offset] == b"\n" or b.end_offset == len(data)
        done += len(b)
        rest = read_bytes(data, "x.csv", target=500, resume=ResumePoint(b.end_offset, done, b.state))
        if rest.n:
            np.testing.assert_array_equal(rest.values, whole.values[done:])
            np.testing.assert_array_equal(rest.sample_index, np.arange(done, whole.n))
            np.testing.assert_array_equal(rest.t_ns, whole.t_ns[done:])


def test_resume_keeps_counter_wrap_and_multi_sensor_state() -> None:
    for name, target in (("opensim_MT_012005D6_009-001_00B421E6.txt", 300), ("opensim_imuData01.csv", 400)):
        data = (DATA / name).read_bytes()
        whole = read_bytes(data, name, target=10**6)
        parts = read_bytes(data, name, target=target)
        b = parts.batches[1]
        done = len(parts.batches[0]) + len(b)
        rest = read_bytes(data, name, resume=ResumePoint(b.end_offset, done, b.state))
        np.testing.assert_array_equal(rest.t_ns, whole.t_ns[done:])
        np.testing.assert_array_equal(rest.sample_index, whole.sample_index[done:])
        np.testing.assert_array_equal(rest.sensor, whole.sensor[done:])


def test_zero_usable_samples_is_a_format_error() -> None:
    with pytest.raises(FormatError, match="no usable IMU samples"):
        read_bytes(b"time,ax,ay,az,temp\n0,,,,25.1\n1,,,,25.2\n2,,,,25.3\n")
    with pytest.raises(FormatError, match="no delimited numeric data"):
        read_bytes(b"time,ax,ay,az\n0,,,\n1,,,\n", format_id="generic_csv")


def test_activity_counts_are_rejected_with_reason() -> None:
    path = DATA / "ggirread_ActiGraph13_timestamps_headers.csv"
    with pytest.raises(FormatError, match="activity counts, not raw IMU samples"):
        read_path(path)


def test_iso_datetime_column_is_local_time() -> None:
    data = b"timestamp,ax,ay,az\n2024-01-15 12:00:00.000,1,2,3\n2024-01-15 12:00:00.010,1,2,3\n"
    r = read_bytes(data, timezone="Europe/Berlin")
    utc = 1705316400 * 10**9  # 12:00 CET = 11:00 UTC
    assert r.t_ns.tolist() == [utc, utc + 10_000_000] and r.info.time_base == "epoch"
    zoned = data.replace(b".000,", b".000Z,").replace(b".010,", b".010Z,")
    assert read_bytes(zoned, timezone="Europe/Berlin").t_ns[0] == utc + 3600 * 10**9


def test_unknown_timezone_and_sensor() -> None:
    with pytest.raises(FormatError, match="timezone"):
        read_bytes(b"time,ax,ay,az\n0,1,2,3\n1,1,2,3\n", timezone="Mars/Olympus")
    with pytest.raises(FormatError, match="unknown sensor"):
        read_bytes(sensor_logger(), "Accelerometer.csv", sensor="thermometer")


def test_memory_flat_reads_forward_in_blocks() -> None:
    data = b"time,ax,ay,az\n" + b"".join(b"%d,1,2,3\n" % i for i in range(20000))

    class Counting(io.BytesIO):
        largest = 0

        def read(self, n: int | None = -1) -> bytes:
            out = super().read(n)
            Counting.largest = max(Counting.largest, len(out))
            return out

    from services.parser.formats.base import ReadOptions
    from services.parser.formats.registry import make_reader

    reader = make_reader("generic_csv")
    reader.open(Counting(data), ReadOptions(filename="d.csv"), None)
    assert sum(len(b) for b in reader.batches(lambda: 1000)) == 20000
    assert Counting.largest < 100_000 < len(data)


def _as_space_export(name: str, sep: str) -> bytes:
    """The MT Manager export `name` re-written as its SPACE option does: empty fields stay
    empty, so a run of k+1 spaces stands for k empty fields (NaN cells become empty)."""
    out = []
    for line in (DATA / name).read_text(encoding="utf-8").splitlines():
        out.append(
            line if line.startswith("//") else " ".join("" if f == "NaN" else f for f in line.split(sep))
        )
    return ("\n".join(out) + "\n").encode()


@pytest.mark.parametrize(
    ("name", "sep", "count"),
    [
        ("opensim_MT2022_ACC_GYRO_ROT_MAT_COMMA_00B42D4B.txt", ",", 5),
        ("opensim_MT2022_ACC_GYRO_ROT_ALL_TAB_NAN_00B42D4B.txt", "\t", 5),
        ("opensim_MT_012005D6_009-001_00B421E6.txt", "\t", 2432),
    ],
)
def test_xsens_space_export_with_runs_of_spaces(name: str, sep: str, count: int) -> None:
    original = read_path(DATA / name)
    spaced = read_bytes(_as_space_export(name, sep), name.replace(".txt", "_space.txt"), target=700)
    assert (spaced.format_id, spaced.n, spaced.rows_skipped) == ("xsens", count, 0)
    np.testing.assert_array_equal(spaced.values, original.values)
    np.testing.assert_array_equal(spaced.t_ns, original.t_ns)


def test_xsens_utc_columns_give_absolute_time() -> None:
    """The real 2,432-row export with its empty UTC_* columns filled as MT Manager writes them
    (100 Hz from 2019-12-18 10:00:00 UTC); rows not flagged valid keep their values, no time."""
    name = "opensim_MT_012005D6_009-001_00B421E6.txt"
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    header = lines[5].split("\t")
    col = {h: header.index(h) for h in header if h.startswith("UTC_")}
    t0 = 1_576_663_200_000_000_000  # 2019-12-18T10:00:00Z
    out = lines[:6]
    for k, line in enumerate(lines[6:]):
        f = line.split("\t")
        t = t0 + k * 10_000_000
        day_ns = t % 86_400_000_000_000
        f[col["UTC_Nano"]] = str(t % 1_000_000_000)
        f[col["UTC_Year"]], f[col["UTC_Month"]], f[col["UTC_Day"]] = "2019", "12", "18"
        f[col["UTC_Hour"]] = str(day_ns // 3_600_000_000_000)
        f[col["UTC_Minute"]] = str(day_ns // 60_000_000_000 % 60)
        f[col["UTC_Second"]] = str(day_ns // 1_000_000_000 % 60)
        # 0: invalid; 2: time of day only (XsUtcTime), date unknown; 1 (XsUtcTime) and 3
        # (GNSS date + time bits) are valid like 7.
        f[col["UTC_Valid"]] = {1000: "0", 1001: "2", 1002: "1", 1003: "3"}.get(k, "7")
        out.append("\t".join(f))
    r = read_bytes(("\n".join(out) + "\n").encode(), name, target=700)
    original = read_path(DATA / name)
    assert (r.format_id, r.n, r.rows_skipped, r.info.time_base) == ("xsens", 2432, 0, "epoch")
    expected = t0 + np.arange(2432, dtype=np.int64) * 10_000_000
    expected[[1000, 1001]] = NULL_TIME
    np.testing.assert_array_equal(r.t_ns, expected)
    np.testing.assert_array_equal(r.values, original.values)
