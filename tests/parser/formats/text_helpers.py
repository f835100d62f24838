"""Helpers for the text-engine tests: read a whole file, and synthesise preset files."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from services.parser.formats.base import FileInfo, ReadOptions, ResumePoint, SampleBatch
from services.parser.formats.registry import detect_format, make_reader

DATA = Path(__file__).resolve().parents[2] / "data"


@dataclass
class Result:
    """Everything a full read produced, batches concatenated."""

    info: FileInfo
    batches: list[SampleBatch]
    format_id: str

    @property
    def n(self) -> int:
        """Samples read."""
        return sum(len(b) for b in self.batches)

    @property
    def t_ns(self) -> npt.NDArray[np.int64]:
        """All t_ns."""
        return np.concatenate([b.t_ns for b in self.batches])

    @property
    def values(self) -> npt.NDArray[np.float32]:
        """All values, (n, 9)."""
        return np.concatenate([b.values for b in self.batches])

    @property
    def sample_index(self) -> npt.NDArray[np.int64]:
        """All sample indexes."""
        return np.concatenate([b.sample_index for b in self.batches])

    @property
    def sensor(self) -> npt.NDArray[np.int16]:
        """All sensor codes (zeros where the file has one sensor)."""
        return np.concatenate(
            [b.sensor if b.sensor is not None else np.zeros(len(b), np.int16) for b in self.batches]
        )

    @property
    def rows_skipped(self) -> int:
        """Rows skipped over all batches."""
        return sum(b.rows_skipped for b in self.batches)

    @property
    def warnings(self) -> list[str]:
        """Header warnings then batch warnings."""
        return list(self.info.warnings) + [w for b in self.batches for w in b.warnings]


def read_bytes(
    data: bytes,
    filename: str = "data.csv",
    target: int | Callable[[], int] = 1000,
    format_id: str | None = None,
    resume: ResumePoint | None = None,
    sensor: str | None = None,
    timezone: str = "UTC",
) -> Result:
    """Detect (unless given) and read `data` to the end."""
    fid = format_id or detect_format(data[:65536], filename)
    reader = make_reader(fid)
    opts = ReadOptions(filename=filename, sensor=sensor, timezone=timezone)
    info = reader.open(io.BytesIO(data), opts, resume)
    size = target if callable(target) else (lambda: target)
    return Result(info, list(reader.batches(size)), fid)


def read_path(path: Path, target: int = 1000) -> Result:
    """Read a file from disk under its own name."""
    return read_bytes(path.read_bytes(), path.name, target=target)


def euroc(rows: int = 50, damaged: bool = False) -> bytes:
    """EuRoC imu0/data.csv; `damaged` mimics a spreadsheet round trip plus its junk trailer."""
    out = [
        "#timestamp [ns],w_RS_S_x [rad s^-1],w_RS_S_y [rad s^-1],w_RS_S_z [rad s^-1],"
        "a_RS_S_x [m s^-2],a_RS_S_y [m s^-2],a_RS_S_z [m s^-2]"
    ]
    t0 = 1403636579758555392
    for i in range(rows):
        t = t0 + i * 5_000_000
        ts = f"{t / 1e18:.14f}E+018" if damaged else str(t)
        out.append(f"{ts},{0.01 * i:.6f},-0.02,0.03,{9.0 + i * 0.001:.6f},0.1,-0.2")
    if damaged:
        out += [",,,,,,", "1403636763.853,,,,,,", "1403636763.848,,,,,,", "Step: 0.005 = 1/200,,,,,,"]
    return ("\n".join(out) + "\n").encode()


def sensor_logger(rows: int = 40, t0: int = 1_698_000_000_123_456_789) -> bytes:
    """Sensor Logger per-sensor CSV: time (ns epoch), seconds_elapsed, z, y, x."""
    out = ["time,seconds_elapsed,z,y,x"]
    for i in range(rows):
        out.append(f"{t0 + i * 17_857_143},{i * 0.017857143:.9f},{9.8 + i:.4f},{0.5 + i:.4f},{-0.25 - i:.4f}")
    return ("\n".join(out) + "\n").encode()


def actilife_raw(rows: int = 90, crlf: bool = True, final_newline: bool = False) -> bytes:
    """ActiLife RAW CSV: 10-line preamble at 30 Hz, no time column, values in g."""
    pre = [
        "------------ Data File Created By ActiGraph GT3X+ ActiLife v6.13.4 Firmware v2.5.0 "
        "date format M/d/yyyy at 30 Hz  Filter Normal -----------",
        "Serial Number: NEO1F18120387",
        "Start Time 10:00:00",
        "Start Date 5/14/2019",
        "Epoch Period (hh:mm:ss) 00:00:00",
        "Download Time 11:26:24",
        "Download Date 5/14/2019",
        "Current Memory Address: 0",
        "Current Battery Voltage: 4.22     Mode = 12",
        "--------------------------------------------------",
        "Accelerometer X,Accelerometer Y,Accelerometer Z",
    ]
    data = [f"{0.01 * (i % 7):.3f},{-1 + 0.002 * i:.3f},{0.5:.3f}" for i in range(rows)]
    nl = "\r\n" if crlf else "\n"
    text = nl.join(pre + data)
    return (text + (nl if final_newline else "")).encode()


def phyphox_semicolon(rows: int = 30, decimal_comma: bool = True) -> bytes:
    """phyphox export with ';' between fields (and decimal commas, as its Excel option)."""
    out = ['"Time (s)";"X (rad/s)";"Y (rad/s)";"Z (rad/s)"']
    for i in range(rows):
        vals = [f"{0.01 * i + 0.003:.9E}", f"{0.1 * i:.9E}", "-1.5E-2", f"{i:.9E}"]
        out.append(";".join(v.replace(".", ",") if decimal_comma else v for v in vals))
    return ("\n".join(out) + "\n").encode()
