"""Units named in column headers or a units row, and their factors to canonical units."""

from __future__ import annotations

import math
import re

from services.parser.formats.base import STANDARD_GRAVITY

ACC, GYR, MAG = "acc", "gyr", "mag"
# Offset of each quantity's x column in base.VALUE_COLUMNS.
QUANTITY_OFFSET = {ACC: 0, GYR: 3, MAG: 6}
CANONICAL_UNIT = {ACC: "m/s^2", GYR: "rad/s", MAG: "uT"}

_FACTORS: dict[str, dict[str, float]] = {
    ACC: {
        "m/s^2": 1.0,
        "g": STANDARD_GRAVITY,
        "mg": STANDARD_GRAVITY / 1000.0,
        "cm/s^2": 0.01,
    },
    GYR: {
        "rad/s": 1.0,
        "deg/s": math.pi / 180.0,
        "dps": math.pi / 180.0,
        "mrad/s": 1e-3,
    },
    MAG: {
        "ut": 1.0,
        "nt": 1e-3,
        "mt": 1e3,
        "t": 1e6,
        "g": 100.0,  # gauss; case is lost by normalise(), the quantity disambiguates mg/mG
        "gauss": 100.0,
        "mg": 0.1,
        "mgauss": 0.1,
    },
}
# ns per unit of a time column.
TIME_UNITS: dict[str, int] = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
# Units that mark a units row although we do not convert them (APDM temperature etc.).
_OTHER_UNITS = {"degc", "c", "kpa", "hpa", "pa", "deg", "%", "a.u.", "au", "v", "lux", "1"}

_BRACKETED = re.compile(r"[\(\[]([^\(\)\[\]]*)[\)\]]\s*$")


def normalise(unit: str) -> str:
    """Spell a unit one way: lowercase ASCII, `^2` powers, `/s` for per-second."""
    u = unit.strip().replace("µ", "u").replace("μ", "u").replace("²", "^2").replace("°", "deg")
    u = u.replace("\ufffd", "u").lower().replace(" ", "").replace("**", "^")
    u = u.replace("s^-2", "/s^2").replace("s^-1", "/s").replace("//", "/")
    u = re.sub(r"/s/s$|/s2$|/sec\^?2$", "/s^2", u)
    u = re.sub(r"/sec$", "/s", u)
    u = {"sec": "s", "secs": "s", "seconds": "s", "usec": "us", "msec": "ms", "nsec": "ns"}.get(u, u)
    return u.replace("degrees/s", "deg/s").replace("degree/s", "deg/s")


def split_unit(name: str) -> tuple[str, str | None]:
    """Split `Accelerometer X (g)` into (`Accelerometer X`, `g`)."""
    m = _BRACKETED.search(name)
    if m is None:
        return name.strip(), None
    return name[: m.start()].strip(), m.group(1).strip() or None


def factor(quantity: str, unit: str) -> float | None:
    """Factor from `unit` to the canonical unit of `quantity`, or None if unknown."""
    return _FACTORS[quantity].get(normalise(unit))


def time_scale(unit: str) -> int | None:
    """Nanoseconds per `unit` of time, or None if it is not a time unit."""
    return TIME_UNITS.get(normalise(unit))


def quantity_of_unit(unit: str) -> str | None:
    """The quantity a unit can only belong to (m/s^2 → acc), for columns named only by axis."""
    u = normalise(unit)
    for q in (ACC, GYR, MAG):
        if u in _FACTORS[q] and u not in ("g", "mg"):
            return q
    return None


def is_unit_token(text: str) -> bool:
    """True if a units-row cell looks like a unit rather than a name or number."""
    u = normalise(text)
    if not u:
        return True
    return (
        u in TIME_UNITS
        or u in _OTHER_UNITS
        or any(u in f for f in _FACTORS.values())
        or ("/" in u and len(u) <= 12)
    )
