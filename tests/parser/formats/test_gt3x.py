"""ActiGraph .gt3x reader, tested with files synthesised from the documented layout."""

from __future__ import annotations

import datetime as dt
import io
import struct
import time
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.parser.formats import gt3x
from services.parser.formats.base import STANDARD_GRAVITY, FormatError, Limits, ReadOptions
from services.parser.formats.gt3x import Gt3xReader, sniff
from services.parser.formats.registry import make_reader
from tests.common.test_archives import claiming
from tests.parser.formats.binary_helpers import (
    check_resume_everywhere,
    concat,
    read_all,
    read_never_crashes,
)

RATE = 30
START = dt.datetime(2024, 5, 1, 8, 0, 0)  # device-local wall clock
START_S = int(START.replace(tzinfo=dt.UTC).timestamp())


def record(rtype: int, ts: int, payload: bytes, good: bool = True) -> bytes:
    """One log.bin record with its ~XOR checksum (deliberately wrong if not `good`)."""
    body = struct.pack("<BBIH", 0x1E, rtype, ts, len(payload)) + payload
    x = 0
    for b in body:
        x ^= b
    return body + bytes([(~x & 0xFF) ^ (0 if good else 0x5A)])


def make_gt3x(
    log: bytes,
    info_extra: str = "TimeZone: -05:00:00\r\n",
    member: str = "log.bin",
    compression: int = zipfile.ZIP_DEFLATED,
    scale: str | None = "256.0",
) -> bytes:
    """A .gt3x ZIP with info.txt (30 Hz, scale 256) and the given log.bin."""

    def ticks(t: dt.datetime) -> int:
        return int((t - dt.datetime(1, 1, 1)).total_seconds()) * 10_000_000

    info = (
        "Serial Number: MOS2E00000000\r\nDevice Type: wGT3XBT\r\nSample Rate: 30\r\n"
        f"Start Date: {ticks(START)}\r\nLast Sample Time: {ticks(START) + 12 * 10**7}\r\n"
        + (f"Acceleration Scale: {scale}\r\n" if scale else "")
        + info_extra
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as zf:
        zf.writestr("info.txt", info)
        zf.writestr(member, log)
    return out.getvalue()


def synthetic_log(seconds: int = 10) -> tuple[bytes, np.ndarray]:
    """ACTIVITY2 records for `seconds` seconds (second 4 missing: idle sleep) + extras."""
    rng = np.random.default_rng(3)
    parts, raws = [record(0x06, START_S, b'{"MetadataType":"x"}')], []
    for s in range(seconds):
        if s == 4:
            continue
        raw = rng.integers(-2048, 2048, size=(RATE, 3), dtype=np.int16)
        raws.append(raw)
        parts.append(record(0x1A, START_S + s, raw.astype("<i2").tobytes()))
        parts.append(record(0x02, START_S + s, b"\x10\x0f"))  # battery
    return b"".join(parts), np.concatenate(raws)


def test_synthesised_gt3x_decodes_to_the_values_written() -> None:
    log, raw = synthetic_log()
    info, batches = read_all(Gt3xReader(), make_gt3x(log))
    assert info.format_id == "gt3x" and info.bytes_total == len(log)
    assert info.sample_count_estimate == 12 * RATE
    t_ns, values = concat(batches)
    assert len(t_ns) == 9 * RATE
    np.testing.assert_allclose(values[:, :3], raw / 256 * STANDARD_GRAVITY, rtol=1e-6)
    assert np.isnan(values[:, 3:]).all()
    # info.txt TimeZone -05:00 wins: local 08:00 is 13:00 UTC; samples 1/30 s apart.
    assert t_ns[0] == (START_S + 5 * 3600) * 10**9
    assert t_ns[1] - t_ns[0] == round(1e9 / RATE)
    assert t_ns[4 * RATE] - t_ns[0] == 5 * 10**9  # the idle-sleep second is a gap
    assert sum(b.rows_skipped for b in batches) == 0


def test_upload_timezone_used_when_info_txt_has_none() -> None:
    log, _ = synthetic_log(2)
    data = make_gt3x(log, info_extra="")
    _, batches = read_all(Gt3xReader(), data, options=ReadOptions(timezone="Europe/Berlin"))
    assert batches[0].t_ns[0] == (START_S - 2 * 3600) * 10**9  # CEST in May


def test_bad_checksum_and_garbage_are_skipped_and_counted() -> None:
    log, _ = synthetic_log(3)
    bad = record(0x1A, START_S + 9, bytes(6 * RATE), good=False)
    damaged = log + bad + b"\x00\x01\x02" + record(0x1A, START_S + 10, bytes(6 * RATE))
    _, batches = read_all(Gt3xReader(), make_gt3x(damaged))
    assert sum(len(b) for b in batches) == 3 * RATE + RATE
    assert sum(b.rows_skipped for b in batches) == 2
    text = " ".join(w for b in batches for w in b.warnings)
    assert "1 records failed their checksum" in text


def test_truncated_log_keeps_whole_records() -> None:
    log, _ = synthetic_log(5)
    _, batches = read_all(Gt3xReader(), make_gt3x(log[:-50]))
    assert sum(len(b) for b in batches) == 3 * RATE  # the last ACTIVITY2 is cut short
    assert "incomplete" in " ".join(w for b in batches for w in b.warnings)


def test_resume_from_every_batch_end_gives_identical_samples() -> None:
    log, _ = synthetic_log(10)
    assert check_resume_everywhere(Gt3xReader, make_gt3x(log), target=40) == 5


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not a zip at all", "ZIP"),
        (make_gt3x(b"", member="data.bin"), "activity.bin"),
        (make_gt3x(b"", info_extra="Sample Rate: 0\r\n").replace(b"Sample Rate: 30", b"x"), "Rate"),
    ],
)
def test_unreadable_files_raise_format_error_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(FormatError, match=reason):
        read_all(Gt3xReader(), data)


def test_sniff() -> None:
    log, _ = synthetic_log(1)
    assert sniff(make_gt3x(log)[:4096], "upload")
    assert sniff(b"PK\x03\x04", "x.GT3X")
    assert not sniff(b"PK\x03\x04", "x.zip")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_arbitrary_log_bytes_never_crash(log: bytes) -> None:
    read_never_crashes(Gt3xReader, make_gt3x(log), target=50)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=20))
def test_randomly_corrupted_gt3x_never_crashes(flips: list[tuple[int, int]]) -> None:
    log, _ = synthetic_log(10)
    data = bytearray(make_gt3x(log))
    for at, value in flips:
        data[at % len(data)] = value
    read_never_crashes(Gt3xReader, bytes(data), target=50)


# --- hostile files (SPEC §7 "Limits and fairness") --------------------------------------


def inflating_log(mib: int) -> bytes:
    """Identical ACTIVITY2 records: a log.bin that deflates several hundred to one."""
    one = record(0x1A, START_S, bytes(6 * RATE))
    return one * (mib * (1 << 20) // len(one))


def test_a_member_inflating_past_the_ratio_is_refused_before_reading() -> None:
    data = make_gt3x(inflating_log(40))
    assert len(data) < 400_000  # 40 MiB of log.bin in a few hundred KB
    with pytest.raises(FormatError, match=r"log.bin inflates [0-9,]+:1, more than the 100:1"):
        read_all(Gt3xReader(), data)


def test_uncompressed_content_counts_against_the_upload_limit() -> None:
    log, _ = synthetic_log(10)
    options = ReadOptions(limits=Limits(max_content_bytes=len(log) // 2))
    with pytest.raises(FormatError, match=r"log\.bin unpacks to .* more than the"):
        read_all(Gt3xReader(), make_gt3x(log), options=options)
    options = ReadOptions(limits=Limits(max_content_bytes=len(log) + 10_000))
    assert sum(len(b) for b in read_all(Gt3xReader(), make_gt3x(log), options=options)[1]) == 9 * RATE


def test_a_directory_claiming_huge_counts_is_refused_before_zipfile_reads_it() -> None:
    log, _ = synthetic_log(2)
    data = claiming(make_gt3x(log), 65_535, 0xFFFFFFF0)
    with pytest.raises(FormatError, match="65,535 members"):
        read_all(Gt3xReader(), data)


@pytest.mark.parametrize(
    "log",
    [
        b"\x1e\x00" * (2 << 20),  # a separator every other byte, none framing a record
        b"\x1e\x1a\x00\x00\x00\x00\xff\xff\x00" * 460_000,  # each claims a 64 KiB record that fails
        bytes(np.random.default_rng(5).integers(0, 256, 4 << 20, dtype=np.uint8)),
    ],
    ids=["dense-separators", "fake-long-records", "random"],
)
def test_fake_records_are_scanned_in_linear_time(log: bytes) -> None:
    data = make_gt3x(log, compression=zipfile.ZIP_STORED)
    t0 = time.perf_counter()
    _, batches = read_all(Gt3xReader(), data)
    elapsed = time.perf_counter() - t0
    assert elapsed < 5, f"{len(log) / elapsed / 1e6:.1f} MB/s"  # ~0.1 s now; the old resync took 10 s+
    assert sum(b.rows_skipped for b in batches) > 0 and batches[-1].end_offset == len(log)


def test_records_without_samples_still_end_batches_and_trip_the_guard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    battery = record(0x02, START_S, b"\x10\x0f")
    log = battery * ((1 << 20) // len(battery)) + synthetic_log(2)[0]
    monkeypatch.setattr(gt3x, "MAX_BATCH_INPUT_BYTES", 64 * 1024)
    _, batches = read_all(Gt3xReader(), make_gt3x(log, compression=zipfile.ZIP_STORED))
    assert len(batches) >= 16 and all(len(b) == 0 for b in batches[:15])
    assert sum(len(b) for b in batches) == 2 * RATE  # the two seconds after the stretch
    reader = make_reader("gt3x")
    options = ReadOptions(limits=Limits(max_bytes_without_sample=256 * 1024))
    reader.open(io.BytesIO(make_gt3x(log, compression=zipfile.ZIP_STORED)), options, None)
    with pytest.raises(FormatError, match="without finding one IMU sample"):
        list(reader.batches(lambda: 50_000))


def test_each_kind_of_damage_is_described_once_per_file() -> None:
    good = record(0x1A, START_S, bytes(6 * RATE))
    bad = record(0x1A, START_S, bytes(6 * RATE), good=False)
    _, batches = read_all(Gt3xReader(), make_gt3x((good + bad) * 200), target=RATE)
    warnings = [w for b in batches for w in b.warnings]
    assert len(warnings) == 1 and "failed their checksum" in warnings[0]
    assert sum(b.rows_skipped for b in batches) == 200


def pack12(xyz: np.ndarray, order: tuple[int, int, int]) -> bytes:
    """Samples as ActiGraph's 12-bit packing: values in `order`, MSB first, 36 bits each."""
    bits = "".join(format(int(v) & 0xFFF, "012b") for row in xyz for v in row[list(order)])
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""


def test_legacy_activity_bin_is_timed_from_start_date_at_341_per_g() -> None:
    rng = np.random.default_rng(12)
    xyz = rng.integers(-2048, 2048, size=(301, 3))  # odd: the last sample ends mid-byte
    data = make_gt3x(pack12(xyz, (1, 0, 2)), member="activity.bin", scale=None)  # as NEO files
    info, batches = read_all(Gt3xReader(), data, target=40)
    assert info.sample_count == 301 and info.units["ax"] == "1/341 g" and info.warnings == ()
    t_ns, values = concat(batches)
    assert len(t_ns) == 301 and sum(b.rows_skipped for b in batches) == 0
    np.testing.assert_allclose(values[:, :3], xyz / 341 * STANDARD_GRAVITY, rtol=1e-6)
    assert t_ns[0] == (START_S + 5 * 3600) * 10**9  # Start Date, local -05:00
    assert t_ns[300] - t_ns[0] == round(300 * 1e9 / RATE)
    assert all(b.end_offset % 9 == 0 for b in batches[:-1])
    assert check_resume_everywhere(Gt3xReader, data, target=40) == len(batches)


def test_12_bit_activity_records_decode_y_x_z_and_a_docking_byte_is_no_sample() -> None:
    rng = np.random.default_rng(5)
    xyz = [rng.integers(-2048, 2048, size=(RATE, 3)) for _ in range(3)]
    log = b"".join(record(0x00, START_S + s, pack12(v, (1, 0, 2))) for s, v in enumerate(xyz))
    log += record(0x00, START_S + 3, b"\x01")  # docking marker
    log += record(0x1B, START_S + 4, pack12(xyz[0], (0, 1, 2)))  # ACTIVITY3: x, y, z
    _, batches = read_all(Gt3xReader(), make_gt3x(log))
    t_ns, values = concat(batches)
    expected = np.concatenate([*xyz, xyz[0]]) / 256 * STANDARD_GRAVITY
    assert len(t_ns) == 4 * RATE and sum(b.rows_skipped for b in batches) == 0
    np.testing.assert_allclose(values[:, :3], expected, rtol=1e-6)
    assert t_ns[3 * RATE] - t_ns[0] == 4 * 10**9
