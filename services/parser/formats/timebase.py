"""Infer a text file's time base and turn a chunk's time field into int64 ns.

Nanosecond timestamps have 19 digits, beyond float64's 15-16, so integer time fields are
parsed as int64 and scaled in integers; only fractional seconds go through float64.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import statistics
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from services.parser.formats.base import NULL_TIME
from services.parser.formats.header import is_number
from services.parser.formats.localtime import fields_to_local_ns, load_zone, local_to_utc_ns
from services.parser.formats.units import time_scale

I64 = npt.NDArray[np.int64]
_EPOCH_MIN_S = 1e8  # 1973: absolute epoch times are above this, relative ones below
_RATE = re.compile(r"(\d+(?:\.\d+)?)\s*[,:]?\s*hz\b", re.IGNORECASE)
_MAX_NS = 9.2e18


@dataclass(frozen=True)
class TimePlan:
    """How to get t_ns for each row."""

    kind: str  # int | float | decimal | text | counter | fine | synth | utc | none
    scale: int = 1  # ns per unit of the time field
    epoch: bool = False
    rate_hz: float | None = None
    start_ns: int = 0  # synth: t of row 0
    timezone: str = "UTC"  # for device-local wall-clock text times
    text_order: str = "ymd"  # text: ymd, mdy or dmy

    @property
    def time_base(self) -> str:
        """The FileInfo.time_base this plan produces."""
        return "none" if self.kind == "none" else ("epoch" if self.epoch else "relative")


def rate_from_preamble(lines: list[str]) -> float | None:
    """Sample rate from `at 30 Hz`, `// Update Rate: 100.0Hz` or `Sample Rate:,128,Hz`."""
    for line in lines:
        if m := _RATE.search(line):
            rate = float(m.group(1))
            if rate > 0:
                return rate
    return None


def _date_order(fmt: str) -> str:
    letters = [c for c in fmt.lower() if c in "dmy"]
    return "".join(dict.fromkeys(letters)) or "mdy"


def start_from_preamble(lines: list[str]) -> tuple[dt.datetime | None, str]:
    """ActiLife `Start Date`/`Start Time` as a naive wall-clock datetime, and the date order."""
    text = "\n".join(lines)
    fmt = re.search(r"date format\s+(\S+)", text, re.IGNORECASE)
    order = _date_order(fmt.group(1)) if fmt else "mdy"
    date = re.search(r"Start Date\s*:?\s*(\d{1,4})[/.-](\d{1,2})[/.-](\d{1,4})", text)
    time = re.search(r"Start Time\s*:?\s*(\d{1,2}):(\d{2})(?::(\d{2}))?", text)
    if date is None:
        return None, order
    parts = dict(zip(order, (int(g) for g in date.groups()), strict=True))
    hh, mm, ss = (int(time.group(1)), int(time.group(2)), int(time.group(3) or 0)) if time else (0, 0, 0)
    try:
        return dt.datetime(parts["y"], parts["m"], parts["d"], hh, mm, ss), order
    except (KeyError, ValueError):
        return None, order


def _infer_scale(values: list[str], int_like: bool) -> int:
    first = abs(float(values[0]))
    for limit, scale in ((1e17, 1), (1e14, 10**3), (1e11, 10**6), (_EPOCH_MIN_S, 10**9)):
        if first >= limit:
            return scale
    if not int_like:
        return 10**9
    steps = [abs(float(b) - float(a)) for a, b in itertools.pairwise(values)]
    step = statistics.median(steps) if steps else 0.0
    return 1 if step >= 1e5 else (10**3 if step >= 100 else 10**6)


def plan_numeric_time(
    values: list[str], unit: str | None, default_unit: str | None
) -> tuple[TimePlan, list[str]]:
    """Plan for a numeric time field from its unit (header or preset) or its magnitude."""
    warnings: list[str] = []
    int_like = all(re.fullmatch(r"\s*[+-]?\d+\s*", v) for v in values)
    scale = time_scale(unit) if unit else None
    if scale is None and default_unit:
        scale = time_scale(default_unit)
    if scale is None:
        scale = _infer_scale(values, int_like)
        name = {1: "ns", 10**3: "µs", 10**6: "ms", 10**9: "s"}[scale]
        warnings.append(f"the time column gives no unit; inferred {name} from its values")
    epoch = abs(float(values[0])) * scale / 1e9 >= _EPOCH_MIN_S
    if int_like and scale <= 10**3:
        return TimePlan("int", scale, epoch), warnings
    if scale == 1:
        warnings.append(
            "nanosecond timestamps were rewritten in scientific notation (e.g. saved by a "
            "spreadsheet) and keep only ~15 significant digits (±5 µs)"
        )
        return TimePlan("decimal", scale, epoch), warnings
    return TimePlan("float", scale, epoch), warnings


def plan_text_time(values: list[str], order: str, timezone: str) -> TimePlan | None:
    """Plan for a date-time text field (ISO 8601 or M/d/yyyy h:mm:ss), None if not one."""
    v = values[0].strip()
    if re.match(r"\d{4}-\d{1,2}-\d{1,2}[ T]\d{1,2}:\d{2}", v):
        return TimePlan("text", epoch=True, timezone=timezone, text_order="ymd")
    if re.match(r"\d{1,2}[/.-]\d{1,2}[/.-]\d{4}[ T]\d{1,2}:\d{2}", v):
        return TimePlan("text", epoch=True, timezone=timezone, text_order=order if order != "ymd" else "mdy")
    return None


def time_values(rows: list[list[str]], field: int | None, decimal_comma: bool = False) -> list[str]:
    """Non-empty values of one field in the head's sample rows (decimal commas made points)."""
    if field is None:
        return []
    out = [r[field].strip() for r in rows if field < len(r)]
    out = [v for v in out if v and v.lower() != "nan"]
    return [v.replace(",", ".") for v in out] if decimal_comma else out


def mostly_numeric(values: list[str]) -> list[str]:
    """The numeric values if at least 80 % are numbers (a junk row may sit in the head)."""
    numeric = [v for v in values if is_number(v)]
    return numeric if numeric and len(numeric) * 5 >= len(values) * 4 else []


def _null_mask(col: pa.Array) -> npt.NDArray[np.bool_]:
    return np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def _from_float(v: npt.NDArray[np.float64], scale: float) -> tuple[I64, npt.NDArray[np.bool_]]:
    ns = v * scale
    ok = np.isfinite(ns) & (np.abs(ns) < _MAX_NS)
    return np.where(ok, np.rint(np.where(ok, ns, 0.0)), 0).astype(np.int64), ok


def _decimal_ns(text: str | None, scale: int) -> int | None:
    try:
        d = Decimal((text or "").strip()) * scale
    except InvalidOperation:
        return None
    return int(d) if d.is_finite() and abs(d) < Decimal(_MAX_NS) else None


def _text_to_ns(col: pa.Array, plan: TimePlan) -> tuple[I64, npt.NDArray[np.bool_]]:
    s = pc.utf8_trim_whitespace(col.cast(pa.string()))
    if plan.text_order != "ymd":
        y_last = r"(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})"
        repl = r"\3-\1-\2" if plan.text_order.startswith("m") else r"\3-\2-\1"
        s = pc.replace_substring_regex(s, y_last, repl)
    s = pc.replace_substring_regex(s, r"^(\d{4})-(\d)-", r"\1-0\2-")
    s = pc.replace_substring_regex(s, r"^(\d{4}-\d{2})-(\d)([ T])", r"\1-0\2\3")
    s = pc.replace_substring_regex(s, r"([ T])(\d):", r"\10\2:")  # RE2: \1, then "0"
    zoned = bool(pc.any(pc.match_substring_regex(s, r"(Z|[+-]\d{2}:?\d{2})$")).as_py())
    target = pa.timestamp("ns", tz="UTC") if zoned else pa.timestamp("ns")
    try:
        ts = pc.cast(s, target)
    except pa.ArrowInvalid:
        ts = pa.array([_cast_one(x, target) for x in s.to_pylist()], type=target)
    ok = ~_null_mask(ts)
    ns = pc.fill_null(ts.cast(pa.int64()), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    if not zoned:
        ns = local_to_utc_ns(ns, load_zone(plan.timezone))
    return ns, ok


def _cast_one(text: str | None, target: pa.DataType) -> Any:
    try:
        return pc.cast(pa.array([text], pa.string()), target)[0].as_py()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _unwrap(
    raw: npt.NDArray[np.float64], period: int, state: dict[str, Any]
) -> tuple[I64, npt.NDArray[np.bool_]]:
    """Unwrap a wrapping counter, continuing from `state` (keys last, base, first)."""
    ok = np.isfinite(raw) & (raw >= 0) & (raw < period)  # outside the counter's range: bad
    vals = np.where(ok, raw, 0).astype(np.int64)
    good = vals[ok]
    out = np.zeros(vals.shape, dtype=np.int64)
    if good.size:
        last = state.get("last")
        prev = np.concatenate(([good[0] if last is None else last], good[:-1]))
        wraps = np.cumsum((good - prev) < -(period // 2)) + state.get("wraps", 0)
        full = good + wraps * period
        state.setdefault("first", int(full[0]))
        state["last"], state["wraps"] = int(good[-1]), int(wraps[-1])
        out[ok] = full - state["first"]
    return out, ok


def chunk_times(
    plan: TimePlan, col: pa.Array | None, first_row: int, n: int, state: dict[str, Any]
) -> tuple[I64, npt.NDArray[np.bool_]]:
    """t_ns for `n` rows and a mask of rows whose time is usable; updates `state`."""
    ok: npt.NDArray[np.bool_]
    if plan.kind == "none" or (col is None and plan.kind != "synth"):
        return np.full(n, NULL_TIME, dtype=np.int64), np.zeros(n, dtype=bool)
    if plan.kind == "synth":
        rows = np.arange(first_row, first_row + n, dtype=np.float64)
        return plan.start_ns + np.rint(rows * (1e9 / float(plan.rate_hz or 1))).astype(np.int64), np.ones(
            n, dtype=bool
        )
    assert col is not None
    if plan.kind == "int":
        ok = ~_null_mask(col)
        v = pc.fill_null(col, 0).to_numpy(zero_copy_only=False).astype(np.int64)
        with np.errstate(over="ignore"):
            ns = v * np.int64(plan.scale)
        ok &= np.abs(v) < int(_MAX_NS) // plan.scale
    elif plan.kind == "float":
        ns, ok = _from_float(col.to_numpy(zero_copy_only=False).astype(np.float64), float(plan.scale))
    elif plan.kind == "decimal":
        vals = [_decimal_ns(x, plan.scale) for x in col.cast(pa.string()).to_pylist()]
        ok = np.array([x is not None for x in vals], dtype=bool)
        ns = np.array([x or 0 for x in vals], dtype=np.int64)
    elif plan.kind == "text":
        ns, ok = _text_to_ns(col, plan)
    else:  # counter (uint16, Xsens PacketCounter) or fine (uint32 10 kHz ticks)
        period = 65536 if plan.kind == "counter" else 2**32
        ticks, ok = _unwrap(col.to_numpy(zero_copy_only=False).astype(np.float64), period, state)
        step = 1e9 / float(plan.rate_hz or 1) if plan.kind == "counter" else 1e5
        ns = np.rint(ticks * step).astype(np.int64)
    return np.where(ok, ns, NULL_TIME).astype(np.int64), ok


def utc_columns_filled(rows: list[list[str]], fields: dict[str, int]) -> bool:
    """True when Xsens UTC columns are present and hold a plausible year in the head's rows."""
    if not {"year", "month", "day", "hour", "minute", "second"} <= set(fields):
        return False
    years = [v for v in time_values(rows, fields["year"]) if re.fullmatch(r"\d{4}", v)]
    return bool(years) and len(years) * 2 > len(rows) and all(1970 <= int(y) < 2200 for y in years)


def utc_times(
    columns: dict[int, pa.Array], fields: dict[str, int], n: int
) -> tuple[I64, npt.NDArray[np.bool_]]:
    """t_ns from Xsens UTC_Year..UTC_Second + UTC_Nano (UTC already); rows the device does
    not flag valid, or with a field missing, get no time. UTC_Valid is 1 for valid in
    XsUtcTime (2: time of day only, the date may be wrong); in the GNSS bit field newer
    devices forward, bit 0 is a valid date and bit 1 a valid time of day. So a row is
    timed when the flag is 1 or has both bits."""

    def col(name: str) -> npt.NDArray[np.float64]:
        if name not in fields:
            return np.zeros(n)
        values: npt.NDArray[np.float64] = (
            columns[fields[name]].to_numpy(zero_copy_only=False).astype(np.float64)
        )
        return values

    parts = {name: col(name) for name in ("year", "month", "day", "hour", "minute", "second", "nano")}
    ok = np.all([np.isfinite(v) for v in parts.values()], axis=0)
    if "valid" in fields:
        valid = col("valid")
        flags = np.where(np.isfinite(valid), valid, 0).astype(np.int64)
        ok &= (flags == 1) | ((flags & 3) == 3)
    whole = {k: np.where(ok, v, 0).astype(np.int64) for k, v in parts.items()}
    seconds = whole["hour"] * 3600 + whole["minute"] * 60 + whole["second"]
    ns, dates_ok = fields_to_local_ns(whole["year"], whole["month"], whole["day"], seconds)
    ok &= dates_ok & (whole["nano"] >= 0) & (whole["nano"] < 1_000_000_000)
    return np.where(ok, ns + whole["nano"], NULL_TIME).astype(np.int64), ok
