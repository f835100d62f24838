"""GENEActiv .bin reader: the GGIRread test file (truncated last page), damage, resume."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.parser.formats.base import STANDARD_GRAVITY, FormatError, ReadOptions
from services.parser.formats.geneactiv import GeneactivReader, sniff
from tests.parser.formats.binary_helpers import (
    DATA,
    check_resume_everywhere,
    concat,
    read_all,
    read_never_crashes,
)

BIN = DATA / "ggirread_GENEActiv_testfile.bin"


def test_real_file_gives_5031_samples_including_the_truncated_page() -> None:
    info, batches = read_all(GeneactivReader(), BIN.read_bytes())
    assert sum(len(b) for b in batches) == 5031
    assert sum(b.rows_skipped for b in batches) == 0
    assert info.format_id == "geneactiv" and info.time_base == "epoch"
    _, values = concat(batches)
    g = np.linalg.norm(values[:, :3], axis=1) / STANDARD_GRAVITY
    assert g[0] == pytest.approx(0.98, abs=0.01)
    assert 0.9 < float(np.median(g)) < 1.1
    assert np.isnan(values[:, 3:]).all()


def test_first_sample_matches_a_hand_decode_of_the_header_calibration() -> None:
    raw = BIN.read_bytes()
    _, batches = read_all(GeneactivReader(), raw)
    _, values = concat(batches)
    page = raw.index(b"Recorded Data")
    hex_line = raw[page:].split(b"\r\n")[9]
    calib = {"x": (25875, 439), "y": (25734, -662), "z": (25538, -3056)}  # from the header
    for k in (0, 1, 299):
        sample = hex_line[12 * k : 12 * k + 12]
        for axis, name in enumerate("xyz"):
            v = int(sample[3 * axis : 3 * axis + 3], 16)
            v = v - 4096 if v >= 2048 else v
            gain, offset = calib[name]
            expected = (v * 100 - offset) / gain * STANDARD_GRAVITY
            assert values[k, axis] == pytest.approx(expected, rel=1e-5)


def test_page_time_plus_i_over_fs_in_the_files_own_time_zone() -> None:
    _, batches = read_all(GeneactivReader(), BIN.read_bytes())
    t_ns, _ = concat(batches)
    # Page Time 2013-05-30 10:12:54:500 at "GMT +01:00" is 09:12:54.5 UTC.
    first = dt.datetime(2013, 5, 30, 9, 12, 54, 500_000, tzinfo=dt.UTC)
    assert t_ns[0] == int(first.timestamp() * 1e9)
    assert t_ns[299] - t_ns[0] == round(299 / 85.7 * 1e9)
    # The second page restarts from its own Page Time (10:12:58:000).
    assert t_ns[300] - t_ns[0] == 3_500_000_000


def test_upload_timezone_is_only_a_fallback_and_a_disagreement_is_reported() -> None:
    raw = BIN.read_bytes()
    info, batches = read_all(GeneactivReader(), raw, options=ReadOptions(timezone="Asia/Tokyo"))
    _, utc = read_all(GeneactivReader(), raw)
    assert batches[0].t_ns[0] == utc[0].t_ns[0]
    assert any("GMT +01:00" in w for w in info.warnings)
    no_tz = raw.replace(b"Time Zone:GMT +01:00", b"Time Zone:           ")
    _, tokyo = read_all(GeneactivReader(), no_tz, options=ReadOptions(timezone="Asia/Tokyo"))
    assert utc[0].t_ns[0] - tokyo[0].t_ns[0] == 8 * 3600 * 10**9  # +09:00 instead of +01:00


def test_resume_from_every_batch_end_gives_identical_samples() -> None:
    assert check_resume_everywhere(GeneactivReader, BIN.read_bytes(), target=600) == 9


def test_batches_are_whole_pages() -> None:
    _, batches = read_all(GeneactivReader(), BIN.read_bytes(), target=500)
    assert [len(b) for b in batches] == [600] * 8 + [231]
    assert batches[-1].end_offset == BIN.stat().st_size


def test_damaged_page_time_skips_that_page_only() -> None:
    raw = BIN.read_bytes().replace(b"Page Time:2013-05-30 10:12:58:000", b"Page Time:garbage", 1)
    _, batches = read_all(GeneactivReader(), raw)
    assert sum(len(b) for b in batches) == 5031 - 300
    assert sum(b.rows_skipped for b in batches) == 1
    assert "damaged page" in " ".join(w for b in batches for w in b.warnings)


def test_non_hex_characters_skip_only_those_samples() -> None:
    raw = bytearray(BIN.read_bytes())
    hex_at = raw.index(b"Measurement Frequency:85.7\r\n", raw.index(b"Recorded Data")) + 28
    raw[hex_at + 1] = ord("Z")  # first sample's x
    _, batches = read_all(GeneactivReader(), bytes(raw))
    assert sum(len(b) for b in batches) == 5030
    assert sum(b.rows_skipped for b in batches) == 1


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not a GENEActiv"),
        (b"Device Identity\r\nno pages here\r\n", "not a GENEActiv"),
        (b"Device Identity\r\nRecorded Data\r\n", "Calibration Data"),
    ],
)
def test_unreadable_files_raise_format_error_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(FormatError, match=reason):
        read_all(GeneactivReader(), data)


def test_sniff() -> None:
    assert sniff(BIN.read_bytes()[:4096], "anything")
    assert not sniff(b"MD\xfc\x03", "x.cwa")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_after_a_real_header_never_crash(tail: bytes) -> None:
    raw = BIN.read_bytes()
    head = raw[: raw.index(b"Recorded Data")]
    read_never_crashes(GeneactivReader, head + tail)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, 65535), st.integers(0, 255)), max_size=40),
    st.integers(0, 65536),
)
def test_randomly_corrupted_real_file_never_crashes(flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(BIN.read_bytes())
    for at, value in flips:
        data[at] = value
    assert read_never_crashes(GeneactivReader, bytes(data[:cut]), target=300) <= 5031 + 300
