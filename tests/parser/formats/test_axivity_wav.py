"""Axivity OMGUI WAV reader: the truncated GGIRread export, hand decode, resume, fuzz."""

from __future__ import annotations

import datetime as dt
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.parser.formats.axivity_wav import AxivityWavReader, sniff
from services.parser.formats.base import STANDARD_GRAVITY, FormatError
from tests.parser.formats.binary_helpers import (
    DATA,
    check_resume_everywhere,
    concat,
    read_all,
    read_never_crashes,
)

WAV = DATA / "ggirread_ax3test.wav"


def test_truncated_wav_gives_the_32640_frames_present_and_says_so() -> None:
    info, batches = read_all(AxivityWavReader(), WAV.read_bytes())
    assert info.sample_count == 32_640
    assert sum(len(b) for b in batches) == 32_640
    assert "cut-off export" in " ".join(info.warnings)
    t_ns, values = concat(batches)
    g = np.linalg.norm(values[:, :3], axis=1) / STANDARD_GRAVITY
    assert 0.9 < float(np.median(g)) < 1.1
    first = dt.datetime(2018, 3, 18, 17, 24, 47, 536_000, tzinfo=dt.UTC)
    assert t_ns[0] == int(first.timestamp() * 1e6) * 1000
    assert t_ns[100] - t_ns[0] == 10**9


def test_first_frames_match_a_hand_decode_with_struct() -> None:
    raw = WAV.read_bytes()
    _, batches = read_all(AxivityWavReader(), raw)
    _, values = concat(batches)
    data_at = raw.index(b"data" + struct.pack("<I", 759_972_696)) + 8  # not "Metadata:"
    for k in (0, 1, 500):
        x, y, z, _aux = struct.unpack_from("<4h", raw, data_at + 8 * k)
        expected = [v / 32768 * 8 * STANDARD_GRAVITY for v in (x, y, z)]
        assert values[k, :3] == pytest.approx(expected, rel=1e-6)


def test_resume_from_every_batch_end_gives_identical_samples() -> None:
    assert check_resume_everywhere(AxivityWavReader, WAV.read_bytes(), target=5000) == 7


@pytest.mark.parametrize(("data", "reason"), [(b"", "RIFF"), (b"RIFF\0\0\0\0WAVEfmt ", "data")])
def test_unreadable_files_raise_format_error_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(FormatError, match=reason):
        read_all(AxivityWavReader(), data)


def test_sniff() -> None:
    assert sniff(WAV.read_bytes()[:65536], "x.wav")
    assert not sniff(b"RIFF\0\0\0\0WAVEfmt ", "music.wav")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 2047), st.integers(0, 255)), max_size=30),
       st.integers(0, 4096))  # fmt: skip
def test_randomly_corrupted_header_never_crashes(flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(WAV.read_bytes()[:4096])
    for at, value in flips:
        data[at] = value
    read_never_crashes(AxivityWavReader, bytes(data[:cut]))
