"""Map header names to canonical columns by NAME, never by position.

Sensor Logger writes `z,y,x`, EuRoC puts the gyroscope first and APDM puts several
sensors side by side, so every column is classified from its own name: a sensor word
(or a unit, file name or the upload's `sensor` field when the name is only an axis),
an axis letter and a unit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from services.parser.formats.base import VALUE_COLUMNS, FormatError
from services.parser.formats.units import (
    ACC,
    CANONICAL_UNIT,
    GYR,
    MAG,
    QUANTITY_OFFSET,
    factor,
    quantity_of_unit,
    split_unit,
)

_AXES = {"x": 0, "y": 1, "z": 2}
# Words that make a column something other than a raw sensor axis (derived or orientation).
_EXCLUDE = {
    "free", "gravity", "absolute", "abs", "magnitude", "norm", "quat", "quaternion",
    "orientation", "euler", "roll", "pitch", "yaw", "mat", "temperature", "temp",
    "pressure", "barometer", "delta", "dq", "dv", "heading", "position", "pos", "vector",
}  # fmt: skip
_SENSOR_WORDS = {
    ACC: ("acc", "accel", "accelerometer", "acceleration", "accelerations", "totalacceleration"),
    GYR: ("gyr", "gyro", "gyroscope", "gyrometer", "angular", "rotation"),
    MAG: ("mag", "magn", "magnetometer", "magnetic", "compass"),
}
_SHORT = re.compile(r"^([agm])([xyz])$")
_EUROC = {("w", "rs", "s"): GYR, ("a", "rs", "s"): ACC}
_TIME_WORDS = ("time", "timestamp", "t", "ts", "epoch", "seconds", "datetime")
_COUNT_HINTS = {"axis1", "axis2", "axis3", "steps", "vm", "counts", "activity", "lux"}


@dataclass(frozen=True)
class ImuColumn:
    """One source field feeding one canonical value column of one sensor group."""

    field: int
    group: int
    canon: int  # index into VALUE_COLUMNS
    factor: float  # multiply to get canonical units (1.0 when stored as given)
    unit: str  # the source unit


@dataclass
class ColumnMap:
    """Which fields hold time and IMU values, and in what units."""

    groups: list[str]
    imu: list[ImuColumn]
    time_field: int | None = None
    time_unit: str | None = None
    counter_field: int | None = None  # Xsens PacketCounter
    fine_field: int | None = None  # Xsens SampleTimeFine (10 kHz ticks)
    utc_fields: dict[str, int] = field(default_factory=dict)  # Xsens UTC_Year .. UTC_Nano, UTC_Valid
    warnings: list[str] = field(default_factory=list)


def tokens(name: str) -> list[str]:
    """Lowercase word tokens of a column name, splitting camelCase and punctuation."""
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)
    return re.findall(r"[a-z]+|\d+", spaced.lower())


def sensor_of_word(text: str) -> str | None:
    """Quantity named by a sensor word or file name (`Gyroscope.csv` → gyr), else None."""
    t = text.lower().replace(" ", "").replace("_", "")
    if any(w in t for w in ("gravity", "orientation", "quaternion", "metadata", "location")):
        return None
    for q, words in (
        (GYR, _SENSOR_WORDS[GYR]),
        (MAG, _SENSOR_WORDS[MAG]),
        (ACC, _SENSOR_WORDS[ACC]),
    ):
        if any(t == w or (len(w) > 4 and w in t) for w in words):
            return q
    return {"a": ACC, "g": GYR, "m": MAG}.get(t)


def _classify(toks: list[str]) -> tuple[str | None, int | None, bool]:
    """(quantity, axis, axis_only) of a name's tokens."""
    if not toks or any(t in _EXCLUDE for t in toks):
        return None, None, False
    if len(toks) == 1 and (m := _SHORT.match(toks[0])):
        return {"a": ACC, "g": GYR, "m": MAG}[m.group(1)], _AXES[m.group(2)], False
    if len(toks) == 4 and tuple(toks[:3]) in _EUROC and toks[3] in _AXES:
        return _EUROC[tuple(toks[:3])], _AXES[toks[3]], False  # type: ignore[index]
    axis = _AXES.get(toks[-1])
    if axis is None:
        return None, None, False
    if len(toks) == 1:
        return None, axis, True
    if "velocity" in toks and "angular" not in toks:
        return None, None, False
    quantity = next((q for t in toks[:-1] if (q := sensor_of_word(t)) is not None), None)
    return quantity, axis, False


# Xsens MT Manager's UTC output: one column per calendar field, nanoseconds, a valid flag.
UTC_PARTS = ("year", "month", "day", "hour", "minute", "second", "nano", "valid")


def _is_time(toks: list[str]) -> int | None:
    """Priority of a time column name (lower is better), None if not a time column."""
    if not toks or toks[0] not in _TIME_WORDS or any(sensor_of_word(t) for t in toks):
        return None
    return 1 if "elapsed" in toks else 0


def map_columns(
    names: list[str],
    units_row: list[str | None],
    default_units: dict[str, str],
    axis_sensor: str | None,
) -> ColumnMap:
    """Classify every header name; raise FormatError if no IMU column is recognised."""
    cmap = ColumnMap(groups=[], imu=[])
    claimed: set[tuple[int, int]] = set()
    best_time: tuple[int, int] | None = None
    for i, raw in enumerate(names):
        group, _, rest = raw.rpartition("/") if raw.count("/") >= 2 else ("", "", raw)
        if group:
            group, _, qty = group.partition("/")
            rest = f"{qty} {rest}"
        base, unit = split_unit(rest)
        unit = unit or units_row[i]
        toks = tokens(base)
        if len(toks) == 2 and toks[0] == "utc" and toks[1] in UTC_PARTS and not group:
            cmap.utc_fields[toks[1]] = i
            continue
        if (prio := _is_time(toks)) is not None and not group:
            if best_time is None or prio < best_time[0]:
                best_time, cmap.time_unit = (prio, i), unit
            continue
        if toks == ["packet", "counter"]:
            cmap.counter_field = i
            continue
        if toks == ["sample", "time", "fine"]:
            cmap.fine_field = i
            continue
        quantity, axis, axis_only = _classify(toks)
        if axis_only:
            quantity = axis_sensor or (quantity_of_unit(unit) if unit else None)
            if quantity is None:
                raise FormatError(
                    f"the column {raw!r} names an axis but not a sensor: upload it with "
                    "sensor=accelerometer, gyroscope or magnetometer, or keep the app's file "
                    "name (e.g. Accelerometer.csv)"
                )
        if quantity is None or axis is None:
            continue
        if group not in cmap.groups:
            cmap.groups.append(group)
        g = cmap.groups.index(group)
        canon = QUANTITY_OFFSET[quantity] + axis
        if (g, canon) in claimed:
            cmap.warnings.append(f"column {raw!r} ignored: {VALUE_COLUMNS[canon]} already mapped")
            continue
        claimed.add((g, canon))
        f, source = _factor(cmap, quantity, unit, default_units)
        cmap.imu.append(ImuColumn(i, g, canon, f, source))
    if best_time is not None:
        cmap.time_field = best_time[1]
    if not cmap.imu:
        raise FormatError(_no_imu_reason(names))
    return cmap


def _factor(cmap: ColumnMap, quantity: str, unit: str | None, defaults: dict[str, str]) -> tuple[float, str]:
    source = unit or defaults.get(quantity)
    label = {ACC: "accelerometer", GYR: "gyroscope", MAG: "magnetometer"}[quantity]
    if source is None:
        note = f"{label} has no unit in the file; assumed {CANONICAL_UNIT[quantity]}"
        if note not in cmap.warnings:
            cmap.warnings.append(note)
        source = CANONICAL_UNIT[quantity]
    f = factor(quantity, source)
    if f is None:
        note = (
            f"{label} unit {source!r} cannot be converted to {CANONICAL_UNIT[quantity]}; "
            "values are stored as given"
        )
        if note not in cmap.warnings:
            cmap.warnings.append(note)
        return 1.0, source
    return f, source


def _no_imu_reason(names: list[str]) -> str:
    toks = {t for n in names for t in tokens(n)} | {n.strip().lower() for n in names}
    if len(toks & _COUNT_HINTS) >= 2:
        return (
            "the file contains activity counts, not raw IMU samples; export the RAW "
            "accelerometer data (e.g. ActiLife 'RAW' CSV or the .gt3x file) instead"
        )
    if toks & {"quat", "quaternion", "orientation", "roll", "pitch", "yaw", "qw", "qx"}:
        return "the file carries no raw IMU samples (orientations only)"
    shown = ", ".join(repr(n) for n in names[:12] if n)
    return (
        f"no accelerometer, gyroscope or magnetometer columns recognised among {shown}; "
        "name them like ax,ay,az / gx,gy,gz / mx,my,mz or 'Accelerometer X (g)'"
    )
