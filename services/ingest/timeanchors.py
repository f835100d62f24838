"""Absolute start times of phone-app ZIP exports, from their sidecar files.

phyphox's sensor CSVs count seconds from the experiment's start, and its time column runs
on across a pause; `meta/time.csv` says when (Unix seconds) each START happened at which
experiment time. Sensor Logger's `Metadata.csv` gives `recording epoch time` (Unix ms),
where `seconds_elapsed` starts. The anchors (experiment ns -> Unix ns from there on) go
into each extracted stream as one comment line above its header, which the parser's text
engine applies to a relative time column (an absolute one, Sensor Logger's `time`, wins).
"""

from __future__ import annotations

import csv
import io
import zipfile
from decimal import Decimal, InvalidOperation
from pathlib import PurePosixPath

MAX_SIDECAR_BYTES = 64 * 1024
PREFIX = "# imuflow time anchors"


def _ns(text: str, scale: int) -> int | None:
    """A decimal number of units (decimal comma allowed) as integer ns."""
    try:
        value = Decimal(text.strip().replace(",", "."))
    except InvalidOperation:
        return None
    return int(value * scale) if value.is_finite() else None


def _rows(raw: bytes) -> list[dict[str, str]]:
    text = raw.decode("utf-8-sig", "replace")
    first = text.split("\n", 1)[0]
    delimiter = ";" if first.count(";") > first.count(",") else ("\t" if "\t" in first else ",")
    return [
        {k.strip().lower(): (v or "") for k, v in row.items() if k}
        for row in csv.DictReader(io.StringIO(text), delimiter=delimiter)
    ]


def phyphox_anchors(raw: bytes) -> list[tuple[int, int]]:
    """(experiment ns, Unix ns) of every START row of `meta/time.csv`."""
    out = []
    for row in _rows(raw):
        if row.get("event", "").strip().upper() != "START":
            continue
        rel, unix = _ns(row.get("experiment time", ""), 10**9), _ns(row.get("system time", ""), 10**9)
        if rel is not None and unix is not None and unix > 0:
            out.append((rel, unix))
    return sorted(out)


def sensor_logger_anchors(raw: bytes) -> list[tuple[int, int]]:
    """(0, Unix ns) from `Metadata.csv`'s `recording epoch time` (ms)."""
    for row in _rows(raw):
        epoch = _ns(row.get("recording epoch time", ""), 10**6)
        if epoch is not None and epoch > 0:
            return [(0, epoch)]
    return []


def anchor_line(zf: zipfile.ZipFile) -> bytes:
    """The comment line for the ZIP's streams, or b"" when it has no usable sidecar."""
    for info in zf.infolist():
        path = PurePosixPath(info.filename.replace("\\", "/"))
        name = path.name.lower()
        parent = path.parent.name.lower()
        if info.is_dir() or info.file_size > MAX_SIDECAR_BYTES or info.flag_bits & 0x1:
            continue
        if name == "time.csv" and parent == "meta":
            reader, source = phyphox_anchors, "phyphox meta/time.csv"
        elif name == "metadata.csv":
            reader, source = sensor_logger_anchors, "Sensor Logger Metadata.csv"
        else:
            continue
        with zf.open(info) as f:
            anchors = reader(f.read(MAX_SIDECAR_BYTES))
        if anchors:
            pairs = " ".join(f"{rel}={unix}" for rel, unix in anchors)
            return f"{PREFIX} ({source}): {pairs}\n".encode()
    return b""
