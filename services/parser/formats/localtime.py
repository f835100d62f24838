"""Device-local wall-clock times to UTC epoch nanoseconds, vectorised.

Binary loggers (Axivity, ActiGraph, GENEActiv) stamp samples with the wall clock of the
computer that configured them. We keep those as "local ns" (the wall-clock fields
encoded as if they were UTC) and shift them by the zone's UTC offset at that wall time.
Ambiguous wall times (the repeated hour when DST ends) take the first occurrence
(`fold=0`); wall times that do not exist (the skipped hour) take the offset in force
before the jump. Both are what `zoneinfo` does by default.
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt

from services.parser.formats.base import FormatError

_NS_PER_S = 1_000_000_000
_NS_PER_MIN = 60 * _NS_PER_S
_EPOCH = dt.datetime(1970, 1, 1)
# Within this span a zone's offset cannot change and change back, so equal offsets at
# both ends mean one offset throughout (DST rules are months apart).
_CONSTANT_SPAN_NS = 7 * 24 * 3600 * _NS_PER_S
_UTC_NAMES = {"UTC", "Etc/UTC", "GMT", "Etc/GMT", "Z", "utc"}


def load_zone(name: str) -> dt.tzinfo:
    """Return the tzinfo for an IANA name, or raise FormatError naming it."""
    if name in _UTC_NAMES:
        return dt.UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise FormatError(f"unknown timezone {name!r}: use an IANA name such as Europe/London") from exc


def parse_gmt_offset(text: str) -> dt.tzinfo | None:
    """Parse `GMT +01:00`, `+01:00`, `-05:00:00` or `0` into a fixed-offset tzinfo."""
    m = re.fullmatch(r"\s*(?:GMT|UTC)?\s*([+-]?)\s*(\d{1,2})(?::(\d{2}))?(?::(\d{2}))?\s*", text)
    if m is None:
        return None
    sign = -1 if m.group(1) == "-" else 1
    hours, minutes = int(m.group(2)), int(m.group(3) or 0)
    if hours > 14 or minutes >= 60:
        return None
    return dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))


def _offset_ns(local_ns: int, tz: dt.tzinfo) -> int:
    wall = _EPOCH + dt.timedelta(microseconds=local_ns // 1000)
    off = wall.replace(tzinfo=tz).utcoffset()
    return 0 if off is None else int(off.total_seconds() * _NS_PER_S)


def local_to_utc_ns(local_ns: npt.NDArray[np.int64], tz: dt.tzinfo) -> npt.NDArray[np.int64]:
    """Shift wall-clock ns (encoded as if UTC) to true UTC ns for zone `tz`."""
    if tz is dt.UTC or local_ns.size == 0:
        return local_ns
    lo, hi = int(local_ns.min()), int(local_ns.max())
    off_lo = _offset_ns(lo, tz)
    if hi - lo < _CONSTANT_SPAN_NS and _offset_ns(hi, tz) == off_lo:
        return local_ns - np.int64(off_lo)
    # A DST change inside the batch (rare): one Python call per distinct minute.
    minutes, inverse = np.unique(local_ns // _NS_PER_MIN, return_inverse=True)
    offsets = np.array([_offset_ns(int(m) * _NS_PER_MIN, tz) for m in minutes], dtype=np.int64)
    return local_ns - offsets[inverse.reshape(local_ns.shape)]


def fields_to_local_ns(
    year: npt.NDArray[np.int64],
    month: npt.NDArray[np.int64],
    day: npt.NDArray[np.int64],
    seconds_of_day: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Calendar fields to wall-clock ns (as if UTC), with a mask of valid dates."""
    valid = (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31) & (year >= 1970)
    valid &= (seconds_of_day >= 0) & (seconds_of_day < 86400)
    y = np.where(valid, year, 1970)
    mo = np.where(valid, month, 1)
    d = np.where(valid, day, 1)
    months = ((y - 1970) * 12 + (mo - 1)).astype("timedelta64[M]")
    first = np.datetime64("1970-01", "M") + months
    days = first.astype("datetime64[D]") + (d - 1).astype("timedelta64[D]")
    # 31 February rolls into March above; reject it by checking the month survived.
    valid &= days.astype("datetime64[M]") == first
    epoch_days = days.astype(np.int64)
    return (epoch_days * 86400 + seconds_of_day) * _NS_PER_S, valid
