"""The soak's upload mix: ordinary files with known counts, damaged ones, hostile ones.

Every file comes with what must become of it (`Expect`): an exact sample count (and rows
skipped) for ordinary and damaged files, "fails with a reason" for hostile ones. Generated
files carry a salt, so the same kind uploaded twice is two different files.
"""

from __future__ import annotations

import io
import random
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "tests" / "data"


@dataclass(frozen=True)
class Expect:
    """What must become of an upload: completed with a count, or refused/failed with a reason."""

    kind: str  # "ordinary", "damaged", "hostile"
    samples: int | None = None  # None: must fail (or be refused) with a reason
    skipped: int = 0


@dataclass(frozen=True)
class Upload:
    """One file to send."""

    name: str
    body: bytes
    expect: Expect


def generated_csv(rng: random.Random) -> Upload:
    """A clean 7-column CSV of 20k-300k rows."""
    rows = rng.randint(20_000, 300_000)
    salt = rng.getrandbits(32)
    return Upload(f"gen_{salt:08x}.csv", _csv(rows, salt), Expect("ordinary", rows))


def long_header_csv(rng: random.Random) -> Upload:
    """A good CSV whose header line is ~600 KB (one column with a very long unit)."""
    rows = rng.randint(5_000, 20_000)
    salt = rng.getrandbits(32)
    header, rows_text = _csv(rows, salt).split(b"\n", 1)
    long_column = b",note_" + b"x" * 600_000  # an extra column, ignored
    body = header + long_column + b"\n" + rows_text.replace(b"\n", b",0\n")
    return Upload(f"long_header_{salt:08x}.csv", body, Expect("ordinary", rows))


def damaged_csv(rng: random.Random) -> Upload:
    """A CSV with some rows of garbage in the middle: kept rows counted, bad rows skipped."""
    rows = rng.randint(20_000, 100_000)
    bad = rng.randint(1, 15)
    salt = rng.getrandbits(32)
    lines = _csv(rows, salt).split(b"\n")
    for _ in range(bad):
        lines.insert(rng.randint(2, len(lines) - 2), b"garbage,not,a,number,at,all,!")
    return Upload(f"damaged_{salt:08x}.csv", b"\n".join(lines), Expect("damaged", rows, bad))


Make = Callable[[random.Random], Upload]


def real_file(name: str, samples: int, skipped: int = 0, kind: str = "ordinary") -> Make:
    """A real file from tests/data with its known count (SOURCES.md)."""

    def make(rng: random.Random) -> Upload:
        return Upload(name, (DATA / name).read_bytes(), Expect(kind, samples, skipped))

    return make


def inflating_gt3x(rng: random.Random) -> Upload:
    """A .gt3x whose log.bin inflates far beyond any ratio a real recording has."""
    second = _gt3x_record(0x1A, 1_714_550_400, bytes(30 * 6))
    log = second * 400_000  # ~76 MB of identical records, ~0.3 MB deflated
    return Upload(f"bomb_{rng.getrandbits(32):08x}.gt3x", _gt3x(log, rng), Expect("hostile"))


def fake_record_gt3x(rng: random.Random) -> Upload:
    """A 0.2 MB .gt3x made of fake records: each separator claims a 64 KiB record whose checksum fails."""
    unit = b"\x1e\x1a\x00\x00\x00\x00\xff\xff\x00"
    return Upload(f"fake_{rng.getrandbits(32):08x}.gt3x", _gt3x(unit * 22_000, rng), Expect("hostile"))


def zip_bomb(rng: random.Random) -> Upload:
    """A phone-app ZIP whose accelerometer stream inflates ~1000:1."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("Accelerometer.csv", b"time,z,y,x\n" + b"1,0,0,0\n" * 25_000_000)
        zf.writestr("salt.txt", str(rng.getrandbits(32)))
    return Upload("bomb_export.zip", out.getvalue(), Expect("hostile"))


def junk(rng: random.Random) -> Upload:
    """Random bytes named like a CSV."""
    body = rng.randbytes(rng.randint(10_000, 2_000_000))
    return Upload(f"junk_{rng.getrandbits(32):08x}.csv", body, Expect("hostile"))


MIX: list[tuple[float, Make]] = [
    (6, generated_csv),
    (1, long_header_csv),
    (2, damaged_csv),
    (1, real_file("xio_fusion_sensor_data.csv", 13_514)),
    (1, real_file("ggirread_ax3_testfile.cwa", 17_400)),
    (1, real_file("ggirread_ax3_testfile_corrupt_blocks_0_13_14_142_143_144.cwa", 16_680, 6, "damaged")),
    (1, real_file("ggirread_GENEActiv_testfile.bin", 5_031)),
    (1, real_file("phyphox_deadreckoning_Accelerometer.csv", 10_577)),
    (1, inflating_gt3x),
    (1, fake_record_gt3x),
    (1, zip_bomb),
    (1, junk),
]


def pick(rng: random.Random) -> Upload:
    """One upload drawn from the mix by weight."""
    weights = [w for w, _ in MIX]
    make = rng.choices([m for _, m in MIX], weights=weights)[0]
    return make(rng)


def _csv(rows: int, salt: int) -> bytes:
    import numpy as np

    gen = np.random.default_rng(salt)
    t = np.arange(rows, dtype=np.float64) / 100.0
    values = gen.normal(0, 1, size=(rows, 6)).round(4)
    lines = ["time (s),ax (m/s^2),ay (m/s^2),az (m/s^2),gx (rad/s),gy (rad/s),gz (rad/s)"]
    table = np.column_stack([t, values])
    buf = io.StringIO()
    np.savetxt(buf, table, delimiter=",", fmt=["%.2f"] + ["%.4f"] * 6)
    return ("\n".join(lines) + "\n" + buf.getvalue()).encode()


def _gt3x_record(rtype: int, ts: int, payload: bytes) -> bytes:
    body = struct.pack("<BBIH", 0x1E, rtype, ts, len(payload)) + payload
    x = 0
    for b in body:
        x ^= b
    return body + bytes([~x & 0xFF])


def _gt3x(log: bytes, rng: random.Random) -> bytes:
    ticks = 638_501_472_000_000_000  # 2024-05-01 08:00 in .NET ticks
    info = (
        "Serial Number: MOS2E00000000\r\nDevice Type: wGT3XBT\r\nSample Rate: 30\r\n"
        f"Start Date: {ticks}\r\nLast Sample Time: {ticks + 12 * 10**7}\r\n"
        f"Acceleration Scale: 256.0\r\nSalt: {rng.getrandbits(32)}\r\n"
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("info.txt", info)
        zf.writestr("log.bin", log)
    return out.getvalue()
