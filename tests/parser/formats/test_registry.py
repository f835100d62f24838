"""Format ids, detection by content and reader construction."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.parser.formats.base import FormatError
from services.parser.formats.registry import FORMAT_IDS, detect_format, make_reader
from tests.parser.formats.text_helpers import (
    DATA,
    actilife_raw,
    euroc,
    phyphox_semicolon,
    read_path,
    sensor_logger,
)

SHARED = Path("/work/shared/data/imu")


def test_documented_ids() -> None:
    for fid in ("generic_csv", "euroc", "phyphox", "sensor_logger", "xsens", "actilife_csv",
                "apdm", "cwa", "geneactiv", "gt3x"):  # fmt: skip
        assert FORMAT_IDS[fid]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("xio_fusion_sensor_data.csv", "generic_csv"),
        ("phyphox_deadreckoning_Magnetometer.csv", "phyphox"),
        ("opensim_MT46_01-000_00B42D4D.txt", "xsens"),
        ("opensim_MT2022_ACC_GYRO_ROT_MAT_COMMA_00B42D4B.txt", "xsens"),
        ("opensim_apdm_format7.csv", "apdm"),
        ("opensim_imuData01.csv", "apdm"),
        ("ggirread_ActiGraph13_timestamps_headers.csv", "actilife_csv"),
    ],
)
def test_detects_real_files(name: str, expected: str) -> None:
    assert detect_format((DATA / name).read_bytes()[:65536], name) == expected


def test_detects_synthesised_presets() -> None:
    assert detect_format(euroc(), "data.csv") == "euroc"
    assert detect_format(euroc(damaged=True), "data.csv") == "euroc"
    assert detect_format(sensor_logger(), "Accelerometer.csv") == "sensor_logger"
    assert detect_format(actilife_raw(), "raw.csv") == "actilife_csv"
    assert detect_format(phyphox_semicolon(), "Gyroscope.csv") == "phyphox"


def test_rejects_non_imu_content_with_reasons() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    with pytest.raises(FormatError, match="PNG"):
        detect_format(png, "photo.png")
    sto = (DATA / "opensim_imuOrientations.sto").read_bytes()
    with pytest.raises(FormatError, match=r"orientations only"):
        detect_format(sto, "imuOrientations.sto")
    with pytest.raises(FormatError, match="orientations only"):
        detect_format(sto, "renamed.txt")
    with pytest.raises(FormatError, match="empty"):
        detect_format(b"   \n", "x.csv")
    with pytest.raises(FormatError, match="binary"):
        detect_format(bytes(range(1, 32)) * 100, "x.dat")
    with pytest.raises(FormatError, match="header row"):
        detect_format(b"1,2,3\n4,5,6\n7,8,9\n", "x.csv")


def test_make_reader_lists_valid_ids() -> None:
    assert make_reader("euroc").format_id == "euroc"
    with pytest.raises(FormatError, match=r"valid formats: .*generic_csv"):
        make_reader("nope")


def test_orientation_only_columns_rejected() -> None:
    data = b"time,qw,qx,qy,qz\n0,1,0,0,0\n0.01,1,0,0,0\n"
    with pytest.raises(FormatError, match="orientations only"):
        read_path_bytes(data)


def read_path_bytes(data: bytes) -> None:
    """Open a text reader on bytes (for errors raised at open)."""
    import io

    from services.parser.formats.base import ReadOptions

    make_reader(detect_format(data, "x.csv")).open(io.BytesIO(data), ReadOptions("x.csv"), None)


SHARED_COUNTS = {
    "xio_fusion_sensor_data.csv": 13514,
    "phyphox_deadreckoning_Accelerometer.csv": 10577,
    "opensim_MT_012005D6_009-001_00B421E6.txt": 2432,
    "opensim_imuData01.csv": 4096,
}


@pytest.mark.parametrize("name", sorted(SHARED_COUNTS))
def test_shared_folder_copies_still_match(name: str) -> None:
    if not (SHARED / name).exists():
        pytest.skip(f"{SHARED} is not mounted here; the copy in tests/data is tested instead")
    assert read_path(SHARED / name, target=5000).n == SHARED_COUNTS[name]
