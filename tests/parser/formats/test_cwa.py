"""Axivity .cwa reader: real GGIRread test files, synthesised AX6 blocks, damage, resume."""

from __future__ import annotations

import datetime as dt
import math
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.parser.formats.base import STANDARD_GRAVITY, FormatError, ReadOptions
from services.parser.formats.cwa import CwaReader, sniff
from tests.parser.formats.binary_helpers import (
    DATA,
    check_resume_everywhere,
    concat,
    read_all,
    read_never_crashes,
)

AX3 = DATA / "ggirread_ax3_testfile.cwa"
AX3_CORRUPT = DATA / "ggirread_ax3_testfile_corrupt_blocks_0_13_14_142_143_144.cwa"


def pack_stamp(t: dt.datetime) -> int:
    """The .cwa packed date: YYYYYY MMMM DDDDD hhhhh mmmmmm ssssss, year - 2000."""
    return (t.year - 2000) << 26 | t.month << 22 | t.day << 17 | t.hour << 12 | t.minute << 6 | t.second


def make_block(seq: int, stamp: dt.datetime, data: bytes, count: int, layout: int, light: int = 0) -> bytes:
    """One 512-byte AX block (100 Hz, timestamp for sample 0) with a valid checksum."""
    head = struct.pack(
        "<2sHHIIIHHBBBBhH", b"AX", 508, 0, 7, seq, pack_stamp(stamp), light, 300, 0, 200,
        0x4A, layout, 0, count,
    )  # fmt: skip
    body = head + data.ljust(480, b"\0")
    words = struct.unpack("<255H", body)
    return body + struct.pack("<H", -sum(words) & 0xFFFF)


def make_header() -> bytes:
    """A minimal 1024-byte MD header."""
    return (b"MD" + struct.pack("<H", 1020)).ljust(1024, b"\xff")


def test_real_ax3_file_gives_exactly_17400_samples() -> None:
    info, batches = read_all(CwaReader(), AX3.read_bytes())
    assert sum(len(b) for b in batches) == 17_400
    assert sum(b.rows_skipped for b in batches) == 0
    assert info.format_id == "cwa" and info.time_base == "epoch"
    assert info.sample_count_estimate == 17_400
    _, values = concat(batches)
    assert np.isnan(values[:, 3:]).all()
    g = np.linalg.norm(values[:, :3], axis=1) / STANDARD_GRAVITY
    assert 0.9 < float(np.median(g)) < 1.1


def test_corrupt_file_skips_and_reports_the_six_bad_blocks() -> None:
    _, batches = read_all(CwaReader(), AX3_CORRUPT.read_bytes())
    assert sum(len(b) for b in batches) == 16_680
    assert sum(b.rows_skipped for b in batches) == 6
    text = " ".join(w for b in batches for w in b.warnings)
    assert "6 blocks failed their checksum" in text
    assert "0, 13, 14, 142, 143, 144" in text


def test_corrupt_blocks_counted_across_small_batches() -> None:
    _, batches = read_all(CwaReader(), AX3_CORRUPT.read_bytes(), target=1000)
    assert sum(b.rows_skipped for b in batches) == 6
    assert sum(len(b) for b in batches) == 16_680


def test_values_and_time_match_a_hand_decode_with_struct() -> None:
    raw = AX3.read_bytes()
    _, batches = read_all(CwaReader(), raw)
    t_ns, values = concat(batches)
    for block in (0, 1, 77):
        at = 1024 + 512 * block
        for k in (0, 1, 59, 119):
            (v,) = struct.unpack_from("<I", raw, at + 30 + 4 * k)
            expected = []
            for shift in (0, 10, 20):  # x, y, z
                x = (v >> shift) & 0x3FF
                x = x - 1024 if x >= 512 else x
                expected.append((x << (v >> 30)) / 256 * STANDARD_GRAVITY)
            assert values[block * 120 + k, :3] == pytest.approx(expected, rel=1e-6)
    frac, stamp = struct.unpack_from("<H8xI", raw, 1024 + 4)
    (ts_offset,) = struct.unpack_from("<h", raw, 1024 + 26)
    wall = dt.datetime(
        2000 + (stamp >> 26), stamp >> 22 & 15, stamp >> 17 & 31,
        stamp >> 12 & 31, stamp >> 6 & 63, stamp & 63, tzinfo=dt.UTC,
    )  # fmt: skip
    fraction = (frac & 0x7FFF) / 32768
    shim = math.floor((frac & 0x7FFF) * 2 * 100 / 65536)  # firmware's compatibility shift
    t0 = wall.timestamp() + fraction - (ts_offset + shim) / 100
    assert abs(t_ns[0] / 1e9 - t0) < 1e-6


def test_device_local_time_is_converted_with_the_upload_timezone() -> None:
    raw = AX3.read_bytes()
    _, utc = read_all(CwaReader(), raw)
    _, ny = read_all(CwaReader(), raw, options=ReadOptions(timezone="America/New_York"))
    # 26 Feb 2019: New York is UTC-5, so the same wall clock is 5 h later in UTC.
    assert int(ny[0].t_ns[0] - utc[0].t_ns[0]) == 5 * 3600 * 10**9


def test_unknown_timezone_is_a_format_error() -> None:
    with pytest.raises(FormatError, match="timezone"):
        read_all(CwaReader(), AX3.read_bytes(), options=ReadOptions(timezone="Mars/Olympus"))


@pytest.mark.parametrize("path", [AX3, AX3_CORRUPT])
def test_resume_from_every_batch_end_gives_identical_samples(path: object) -> None:
    assert isinstance(path, type(AX3))
    n = check_resume_everywhere(CwaReader, path.read_bytes(), target=1200)
    assert n == 15


def test_batches_round_to_whole_blocks_and_offsets_are_block_boundaries() -> None:
    _, batches = read_all(CwaReader(), AX3.read_bytes(), target=250)
    assert all(len(b) == 360 for b in batches[:-1])
    assert all((b.end_offset - 1024) % 512 == 0 for b in batches)
    assert batches[-1].end_offset == AX3.stat().st_size


def test_synthesised_ax6_blocks_decode_to_the_values_written() -> None:
    rng = np.random.default_rng(1)
    accel_code, gyro_code = 3, 2  # 1/2048 g per LSB, 2000 dps full scale
    start = dt.datetime(2024, 3, 1, 12, 0, 0)
    blocks, raws = [], []
    for seq in range(3):
        raw = rng.integers(-30000, 30000, size=(40, 6), dtype=np.int16)
        raws.append(raw)
        stamp = start + dt.timedelta(seconds=0.4 * seq)
        blocks.append(
            make_block(seq, stamp.replace(microsecond=0), raw.astype("<i2").tobytes(), 40, 0x62,
                       light=accel_code << 13 | gyro_code << 10)
        )  # fmt: skip
    info, batches = read_all(CwaReader(), make_header() + b"".join(blocks))
    assert info.units["gx"] == "AX6 gyro LSB"
    _, values = concat(batches)
    assert values.shape == (120, 9)
    raw_all = np.concatenate(raws).astype(np.float64)
    accel = raw_all[:, 3:] / 2048 * STANDARD_GRAVITY
    gyro = np.deg2rad(raw_all[:, :3] * 2000 / 32768)
    np.testing.assert_allclose(values[:, :3], accel, rtol=1e-6)
    np.testing.assert_allclose(values[:, 3:6], gyro, rtol=1e-6)
    assert np.isnan(values[:, 6:]).all()


def test_truncated_last_block_is_counted_not_fatal() -> None:
    raw = AX3.read_bytes()[:-100]
    _, batches = read_all(CwaReader(), raw)
    assert sum(len(b) for b in batches) == 17_280
    assert sum(b.rows_skipped for b in batches) == 1
    assert "partial block" in " ".join(batches[-1].warnings)
    assert batches[-1].end_offset == len(raw)


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"", "MD"), (b"PK\x03\x04" + bytes(2000), "MD"), (b"MD\xfc\x03" + bytes(100), "shorter")],
)
def test_unreadable_files_raise_format_error_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(FormatError, match=reason):
        read_all(CwaReader(), data)


def test_sniff() -> None:
    head = AX3.read_bytes()[:4096]
    assert sniff(head, "x.cwa")
    assert not sniff(b"Device Identity\r\n", "x.bin")
    assert not sniff(b"PK\x03\x04", "x.gt3x")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096), st.booleans())
def test_arbitrary_bytes_never_crash(data: bytes, with_header: bool) -> None:
    if with_header:
        data = make_header() + data
    read_never_crashes(CwaReader, data)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, 75263), st.integers(0, 255)), max_size=40),
    st.integers(0, 75264),
)
def test_randomly_corrupted_real_file_never_crashes(flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(AX3.read_bytes())
    for at, value in flips:
        data[at] = value
    n = read_never_crashes(CwaReader, bytes(data[: max(cut, 1024)]))
    assert n <= 17_400


def test_synthesised_9_axis_blocks_decode_magnetometer_in_ut() -> None:
    """Layout 0x92: 26 samples of gx..gz, ax..az, mx..mz per block; 16 LSB per µT."""
    rng = np.random.default_rng(9)
    accel_code, gyro_code = 4, 3  # 1/4096 g per LSB, 1000 dps full scale
    start = dt.datetime(2024, 3, 1, 12, 0, 0)
    blocks, raws = [], []
    for seq in range(4):
        raw = rng.integers(-20000, 20000, size=(26, 9), dtype=np.int16)
        raws.append(raw)
        blocks.append(
            make_block(seq, start + dt.timedelta(seconds=seq), raw.astype("<i2").tobytes(), 26, 0x92,
                       light=accel_code << 13 | gyro_code << 10)
        )  # fmt: skip
    info, batches = read_all(CwaReader(), make_header() + b"".join(blocks), target=30)
    assert info.units["mx"] == "1/16 uT" and info.sample_count_estimate == 4 * 26
    t_ns, values = concat(batches)
    assert values.shape == (104, 9) and sum(b.rows_skipped for b in batches) == 0
    raw_all = np.concatenate(raws).astype(np.float64)
    np.testing.assert_allclose(values[:, :3], raw_all[:, 3:6] / 4096 * STANDARD_GRAVITY, rtol=1e-6)
    np.testing.assert_allclose(values[:, 3:6], np.deg2rad(raw_all[:, :3] * 1000 / 32768), rtol=1e-6)
    np.testing.assert_allclose(values[:, 6:9], raw_all[:, 6:9] / 16, rtol=1e-6)
    assert t_ns[26] - t_ns[0] == 1_000_000_000  # the next block's second


def test_gyro_scale_bits_of_zero_mean_2000_dps() -> None:
    """Firmware that leaves the gyro scale bits of `light` at 0: OpenMovement reads 2000 dps
    (cwa_metadata.py's default), not 8000 >> 0."""
    raw = np.full((40, 6), 16384, dtype=np.int16)  # half of full scale on every axis
    block = make_block(0, dt.datetime(2024, 3, 1, 12), raw.astype("<i2").tobytes(), 40, 0x62, light=4 << 13)
    _, batches = read_all(CwaReader(), make_header() + block)
    _, values = concat(batches)
    np.testing.assert_allclose(values[:, 3:6], np.deg2rad(1000.0), rtol=1e-6)  # 16384 / 32768 * 2000
    np.testing.assert_allclose(values[:, :3], 4 * STANDARD_GRAVITY, rtol=1e-6)  # 1/4096 g per LSB
    assert batches[0].ranges is not None and batches[0].ranges["gx"] == pytest.approx(np.deg2rad(2000.0))


def test_runs_of_full_blocks_decode_like_mixed_ones() -> None:
    # A batch of only full blocks is decoded straight into its arrays; one with a short
    # block takes the general gather. Both must give the same samples, exponents included.
    rng = np.random.default_rng(5)
    start = dt.datetime(2024, 3, 1, 12, 0, 0)
    counts = [120, 120, 50, 120, 120, 120]
    blocks, words = [], []
    for seq, count in enumerate(counts):
        w = rng.integers(0, 2**32, size=120, dtype=np.uint64).astype(np.uint32)
        words.append(w[:count])
        stamp = (start + dt.timedelta(seconds=1.2 * seq)).replace(microsecond=0)
        blocks.append(make_block(seq, stamp, w.astype("<u4").tobytes(), count, 0x30))
    data = make_header() + b"".join(blocks)
    _, whole = read_all(CwaReader(), data)  # one batch, with the short block: general path
    _, single = read_all(CwaReader(), data, target=1)  # a block a batch: mostly the fast path
    assert [len(b) for b in whole] == [sum(counts)] and [len(b) for b in single] == counts
    t_whole, v_whole = concat(whole)
    t_single, v_single = concat(single)
    assert np.array_equal(t_whole, t_single) and np.array_equal(v_whole, v_single, equal_nan=True)
    v = np.concatenate(words).astype(np.int64)
    for axis in range(3):
        x = (v >> (10 * axis)) & 0x3FF
        x = np.where(x >= 512, x - 1024, x) << (v >> 30)
        np.testing.assert_allclose(v_whole[:, axis], x / 256 * STANDARD_GRAVITY, rtol=1e-6)
    assert np.isnan(v_whole[:, 3:]).all()
