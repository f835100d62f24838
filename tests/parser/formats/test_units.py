"""Unit parsing and conversion factors."""

from __future__ import annotations

import math

from services.parser.formats.base import STANDARD_GRAVITY
from services.parser.formats.units import (
    ACC,
    GYR,
    MAG,
    factor,
    is_unit_token,
    quantity_of_unit,
    split_unit,
    time_scale,
)


def test_split_unit() -> None:
    assert split_unit("Accelerometer X (g)") == ("Accelerometer X", "g")
    assert split_unit("w_RS_S_x [rad s^-1]") == ("w_RS_S_x", "rad s^-1")
    assert split_unit("Acc_X") == ("Acc_X", None)


def test_factors() -> None:
    assert factor(ACC, "g") == STANDARD_GRAVITY
    assert factor(ACC, "m s^-2") == factor(ACC, "m/s²") == 1.0
    assert factor(GYR, "deg/s") == factor(GYR, "°/s") == math.pi / 180
    assert factor(GYR, "rad s^-1") == 1.0
    assert factor(MAG, "µT") == factor(MAG, "μT") == factor(MAG, "uT") == 1.0
    assert factor(MAG, "mG") == 0.1 and factor(ACC, "mg") == STANDARD_GRAVITY / 1000
    assert factor(MAG, "a.u.") is None


def test_time_and_unit_tokens() -> None:
    assert time_scale("ns") == 1 and time_scale("us") == time_scale("µs") == 1000
    assert time_scale("s") == 10**9 and time_scale("m/s^2") is None
    assert quantity_of_unit("m/s^2") == ACC and quantity_of_unit("g") is None
    assert quantity_of_unit("µT") == MAG and quantity_of_unit("rad/s") == GYR
    assert all(is_unit_token(u) for u in ("s", "m/s^2", "uT", "deg C", "kPa", ""))
    assert not is_unit_token("Static/Acceleration/X")
