"""The parser's preview pyramid rows: true min/max, counts, intervals and gaps per block."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import numpy as np

from services.parser.formats.base import NULL_TIME, STANDARD_GRAVITY, SampleBatch
from services.parser.formats.cwa import CwaReader
from services.parser.formats.geneactiv import GeneactivReader, clip_limits, decode_hex_samples
from services.parser.formats.gt3x import Gt3xReader
from services.parser.preview_blocks import COLUMNS, block_rows
from tests.parser.formats.binary_helpers import DATA, read_all
from tests.parser.formats.test_cwa import make_block, make_header
from tests.parser.formats.test_gt3x import make_gt3x, pack12, synthetic_log

FILE = uuid.uuid4()


def batch(n: int, first: int = 0, step_ns: int = 10_000_000, timed: bool = True) -> SampleBatch:
    """n samples at 100 Hz with accelerometer values only (the rest NULL)."""
    values = np.full((n, 9), np.nan, np.float32)
    values[:, 0] = np.arange(n, dtype=np.float32) % 7
    values[:, 1:3] = 1.0
    t = np.arange(first, first + n, dtype=np.int64) * step_ns if timed else np.full(n, NULL_TIME)
    return SampleBatch(np.arange(first, first + n, dtype=np.int64), t, values, end_offset=0)


def as_dicts(b: SampleBatch) -> list[dict[str, Any]]:
    return [dict(zip(COLUMNS, row, strict=True)) for row in block_rows(FILE, b)]


def test_blocks_of_both_levels_cover_the_batch_and_keep_a_one_sample_spike() -> None:
    b = batch(20_000, first=40_000)
    b.values[12_345, 0] = 80.0
    rows = as_dicts(b)
    fine = [r for r in rows if r["level"] == 256]
    coarse = [r for r in rows if r["level"] == 16384]
    assert [r["n"] for r in coarse] == [16384, 20_000 - 16384]
    assert sum(r["n"] for r in rows if r["level"] == 2048) == 20_000
    assert sum(r["n"] for r in fine) == 20_000 and len(fine) == 79  # 78 full + 32
    assert fine[0]["first_index"] == 40_000 and fine[-1]["first_index"] == 40_000 + 78 * 256
    spiked = [r for r in fine if r["maxs"][0] == 80.0]
    assert len(spiked) == 1 and spiked[0]["first_index"] == 40_000 + 12_288
    assert max(r["maxs"][0] for r in coarse) == 80.0
    first = fine[0]
    assert first["mins"][3:] == [None] * 6 and first["counts"][:4] == [256, 256, 256, 0]
    assert first["t_first"] == 400_000_000_000 and first["t_last"] == first["t_first"] + 255 * 10_000_000
    assert (first["dt_median"], first["dt_max"], first["gaps"]) == (10_000_000, 10_000_000, 0)
    assert first["clipped"] is None


def test_gaps_inside_a_block_and_clipping_where_the_range_is_known() -> None:
    b = batch(300)
    b.t_ns[100:] += 2_000_000_000  # one 2 s gap
    b.values[5, 1] = -2 * 9.80665
    b.ranges = {"ax": 2 * 9.80665, "ay": 2 * 9.80665, "az": 2 * 9.80665}
    fine = [r for r in as_dicts(b) if r["level"] == 256]
    assert (fine[0]["gaps"], fine[0]["dt_max"]) == (1, 2_010_000_000)
    assert fine[0]["clipped"][:3] == [0, 1, 0]
    assert fine[1]["n"] == 44 and fine[1]["gaps"] == 0


def test_no_time_base_and_several_sensors() -> None:
    b = batch(10, timed=False)
    b.sensor = np.array([0, 1] * 5, np.int16)
    b.sensors = ("left", "right")
    b.sample_index = np.repeat(np.arange(5, dtype=np.int64), 2)
    rows = [r for r in as_dicts(b) if r["level"] == 256]
    assert [(r["sensor"], r["n"], r["t_first"], r["dt_median"]) for r in rows] == [
        ("left", 5, None, None),
        ("right", 5, None, None),
    ]


def test_readers_that_know_the_device_range_say_so() -> None:
    """.cwa (rate byte), GENEActiv (calibrated 12-bit extremes), .gt3x (Acceleration Max)."""
    _, cwa = read_all(CwaReader(), (DATA / "ggirread_ax3_testfile.cwa").read_bytes())
    assert cwa[0].ranges is not None
    assert cwa[0].ranges["ax"] / STANDARD_GRAVITY in (2, 4, 8, 16) and "gx" not in cwa[0].ranges
    _, gene = read_all(GeneactivReader(), (DATA / "ggirread_GENEActiv_testfile.bin").read_bytes())
    assert gene[0].ranges is not None and set(gene[0].ranges) == {"ax", "ay", "az"}
    # A sample at the 12-bit end of scale is counted as clipped, one 15 counts inside is not.
    gains, offsets = np.array([25875.0, 25734, 25538]), np.array([140.0, -300, 20])
    limits = clip_limits(gains, offsets)
    values, _ = decode_hex_samples(b"800" + b"7FF" + b"7F0" + b"000", gains, offsets)
    b = batch(1)
    b.values[0, :3] = values[0]
    b.ranges = limits
    (fine,) = [r for r in as_dicts(b) if r["level"] == 256]
    assert fine["clipped"][:3] == [1, 1, 0]
    log, _ = synthetic_log(2)
    _, gt3x = read_all(Gt3xReader(), make_gt3x(log, info_extra="Acceleration Max: 8.0\r\n"))
    assert gt3x[0].ranges == dict.fromkeys(("ax", "ay", "az"), 8 * STANDARD_GRAVITY)


def test_clipped_counts_of_a_9_axis_cwa_per_axis_and_null_where_the_range_is_unknown() -> None:
    """Synthesised AX6 9-axis blocks at +-8 g (rate byte) and 2000 dps (scale bits 0): samples
    at full scale are counted per axis; the magnetometer's range is not in the file: NULL."""
    rng = np.random.default_rng(3)
    raw = rng.integers(-20000, 20000, size=(3 * 26, 9), dtype=np.int16)  # well inside both ranges
    raw[[2, 30, 77], 3] = 32767  # ax at +8 g (1/4096 g per LSB)
    raw[[5, 6], 4] = -32768  # ay at -8 g
    raw[[0, 26, 27, 52], 0] = 32767  # gx at +2000 dps
    raw[10, 6] = 32767  # a magnetometer extreme is no clip: its range is unknown
    blocks = b"".join(
        make_block(k, dt.datetime(2024, 3, 1, 12, 0, k), raw[26 * k : 26 * (k + 1)].astype("<i2").tobytes(),
                   26, 0x92, light=4 << 13)
        for k in range(3)
    )  # fmt: skip
    _, batches = read_all(CwaReader(), make_header() + blocks)
    rows = [r for b in batches for r in as_dicts(b) if r["level"] == 256]
    per_axis = [
        sum(r["clipped"][k] for r in rows) if rows[0]["clipped"][k] is not None else None for k in range(9)
    ]
    assert sum(r["n"] for r in rows) == 78
    assert per_axis == [3, 2, 0, 4, 0, 0, None, None, None]
    assert all(r["clipped"][6:] == [None] * 3 for r in rows)


def test_a_legacy_gt3x_clips_at_its_12_bit_full_scale() -> None:
    """activity.bin gives no Acceleration Max; its counts end at 2047 (~6 g at 341 per g)."""
    rng = np.random.default_rng(8)
    xyz = rng.integers(-2000, 2000, size=(300, 3))
    xyz[[3, 150], 0] = 2047
    xyz[[7, 8, 9], 2] = -2048
    xyz[11, 1] = 2040  # 0.35 % inside full scale: not clipped
    _, batches = read_all(Gt3xReader(), make_gt3x(pack12(xyz, (1, 0, 2)), member="activity.bin", scale=None))
    assert batches[0].ranges == dict.fromkeys(("ax", "ay", "az"), 2047 / 341 * STANDARD_GRAVITY)
    rows = [r for b in batches for r in as_dicts(b) if r["level"] == 256]
    assert sum(r["n"] for r in rows) == 300
    assert [sum(r["clipped"][k] for r in rows) for k in range(3)] == [2, 0, 3]
