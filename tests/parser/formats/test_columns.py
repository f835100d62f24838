"""Mapping header names to canonical columns."""

from __future__ import annotations

import pytest

from services.parser.formats.base import VALUE_COLUMNS, FormatError
from services.parser.formats.columns import map_columns, sensor_of_word
from services.parser.formats.units import ACC, GYR, MAG


def _canon(names: list[str], sensor: str | None = None) -> dict[int, str]:
    cmap = map_columns(names, [None] * len(names), {}, sensor)
    return {c.field: VALUE_COLUMNS[c.canon] for c in cmap.imu}


def test_names_in_the_wild() -> None:
    assert _canon(["t", "ax", "ay", "az", "gx", "gy", "gz"]) == {
        1: "ax", 2: "ay", 3: "az", 4: "gx", 5: "gy", 6: "gz"}  # fmt: skip
    assert _canon(["Acc_X", "Gyr_Y", "Mag_Z", "FreeAcc_X", "Quat_q0", "Mat[1][1]"]) == {
        0: "ax", 1: "gy", 2: "mz"}  # fmt: skip
    assert _canon(["#timestamp", "w_RS_S_x", "a_RS_S_z"]) == {1: "gx", 2: "az"}
    assert _canon(["accX", "gyroZ", "Magnetic Field Y"]) == {0: "ax", 1: "gz", 2: "my"}
    assert _canon(["time", "seconds_elapsed", "z", "y", "x"], ACC) == {2: "az", 3: "ay", 4: "ax"}
    assert _canon(["Static/Angular Velocity/X", "Static/Orientation/X"]) == {0: "gx"}


def test_time_column_preference_and_counter() -> None:
    cmap = map_columns(["time", "seconds_elapsed", "x"], [None] * 3, {}, GYR)
    assert cmap.time_field == 0
    xs = map_columns(["PacketCounter", "SampleTimeFine", "Acc_X"], [None] * 3, {}, None)
    assert (xs.counter_field, xs.fine_field, xs.time_field) == (0, 1, None)


def test_units_from_name_row_or_default() -> None:
    cmap = map_columns(["Accelerometer X (g)", "Gyr_X", "Mag_X"], [None, "deg/s", None], {MAG: "a.u."}, None)
    assert [c.unit for c in cmap.imu] == ["g", "deg/s", "a.u."]
    assert any("a.u." in w for w in cmap.warnings)


def test_unmappable_files_explain_why() -> None:
    with pytest.raises(FormatError, match="activity counts"):
        map_columns(["TimeStamp", "axis1", "axis2", "axis3", "steps", "vm"], [None] * 6, {}, None)
    with pytest.raises(FormatError, match="names an axis but not a sensor"):
        map_columns(["time", "x", "y", "z"], [None] * 4, {}, None)
    with pytest.raises(FormatError, match="no accelerometer"):
        map_columns(["time", "temperature"], [None] * 2, {}, None)


def test_sensor_from_file_name() -> None:
    assert sensor_of_word("Accelerometer") == ACC
    assert sensor_of_word("phyphox_deadreckoning_Gyroscope") == GYR
    assert sensor_of_word("MagnetometerUncalibrated") == MAG
    assert sensor_of_word("TotalAcceleration") == ACC
    assert sensor_of_word("Gravity") is None and sensor_of_word("Orientation") is None
