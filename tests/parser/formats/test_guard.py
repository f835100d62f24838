"""The no-sample guard and batch boundaries every reader reaches, on hostile inputs.

Each hostile input is made here; time bounds are ~50x what the readers need today
(linear scans), and far below what the quadratic or per-cell versions took.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pytest

from services.parser.formats import axivity_wav, geneactiv
from services.parser.formats.base import (
    FileInfo,
    FormatError,
    Limits,
    ReadOptions,
    ResumePoint,
    SampleBatch,
)
from services.parser.formats.guard import GuardedReader
from services.parser.formats.registry import detect_file, make_reader
from tests.parser.formats.binary_helpers import DATA

MIB = 1 << 20


def _batch(n: int, end: int) -> SampleBatch:
    return SampleBatch(
        sample_index=np.arange(n, dtype=np.int64),
        t_ns=np.zeros(n, np.int64),
        values=np.zeros((n, 9), np.float32),
        end_offset=end,
    )


@dataclass
class _Scripted:
    """A reader yielding (samples, end_offset) batches from a script."""

    script: list[tuple[int, int]]
    format_id: str = "scripted"

    def open(self, f: BinaryIO, options: ReadOptions, resume: ResumePoint | None) -> FileInfo:
        return FileInfo(self.format_id, bytes_total=self.script[-1][1], units={"ax": "u" * 5000})

    def batches(self, target_samples: Callable[[], int]) -> Iterator[SampleBatch]:
        for n, end in self.script:
            yield _batch(n, end)


def _options(without_sample: int) -> ReadOptions:
    return ReadOptions(limits=Limits(max_bytes_without_sample=without_sample))


def _read(format_id: str, data: bytes, options: ReadOptions, target: int = 50_000) -> list[SampleBatch]:
    reader = make_reader(format_id)
    reader.open(io.BytesIO(data), options, None)
    return list(reader.batches(lambda: target))


def test_guard_fails_after_the_limit_without_a_sample_and_resets_on_samples() -> None:
    ok = GuardedReader(_Scripted([(5, 100), (0, 900), (3, 1000), (0, 1900), (0, 2000)]))
    info = ok.open(io.BytesIO(), _options(1000), None)
    assert len(info.units["ax"]) <= 80  # a header's "unit" is stored cut short
    assert sum(len(b) for b in ok.batches(lambda: 10)) == 8
    bad = GuardedReader(_Scripted([(5, 100), (0, 900), (0, 1200), (1, 1300)]))
    bad.open(io.BytesIO(), _options(1000), None)
    with pytest.raises(FormatError, match="without finding one IMU sample"):
        list(bad.batches(lambda: 10))
    resumed = GuardedReader(_Scripted([(0, 5000), (0, 5400)]))  # counts from the resume point
    resumed.open(io.BytesIO(), _options(1000), ResumePoint(4500, 10, {}))
    assert len(list(resumed.batches(lambda: 10))) == 2


def test_cwa_of_junk_blocks_fails_once_the_limit_is_read() -> None:
    head = (DATA / "ggirread_ax3_testfile.cwa").read_bytes()[:1024]
    data = head + b"\x01" * (8 * MIB)  # every block fails its checksum
    with pytest.raises(FormatError, match=r"read [0-9] MiB of the file without finding one IMU sample"):
        _read("cwa", data, _options(2 * MIB))


def test_text_rows_without_values_fail_at_the_limit_quickly() -> None:
    head = b"time,ax,ay,az\n" + b"".join(b"%d,1,2,3\n" % i for i in range(3000))
    data = head + b"a,b,c,d\n" * (3 * MIB // 8)
    t0 = time.perf_counter()
    with pytest.raises(FormatError, match="without finding one IMU sample"):
        _read("generic_csv", data, _options(MIB), target=20_000)
    assert time.perf_counter() - t0 < 10  # C++ conversion: ~0.3 s (a Python loop per cell: ~2 s)


def test_geneactiv_of_damaged_pages_reaches_batch_boundaries(monkeypatch: pytest.MonkeyPatch) -> None:
    real = (DATA / "ggirread_GENEActiv_testfile.bin").read_bytes()
    header = real[: real.find(b"Recorded Data")]
    data = header + b"Recorded Data\r\n" * 200_000  # 3 MB of pages with no time or hex line
    monkeypatch.setattr(geneactiv, "MAX_BATCH_INPUT_BYTES", 256 * 1024)
    t0 = time.perf_counter()
    batches = _read("geneactiv", data, _options(1 << 40))
    assert time.perf_counter() - t0 < 10
    assert len(batches) > 10 and all(len(b) == 0 for b in batches)
    assert batches[-1].end_offset == len(data)
    with pytest.raises(FormatError, match="without finding one IMU sample"):
        _read("geneactiv", data, _options(MIB))


def test_wav_batches_are_bounded_in_bytes_whatever_the_channel_count(monkeypatch: pytest.MonkeyPatch) -> None:
    wav = bytearray((DATA / "ggirread_ax3test.wav").read_bytes())
    monkeypatch.setattr(axivity_wav, "MAX_BATCH_INPUT_BYTES", 64 * 1024)
    batches = _read("axivity_wav", bytes(wav), _options(1 << 40))
    frame = 2 * int.from_bytes(wav[22:24], "little")
    assert max(len(b) for b in batches) * frame <= 64 * 1024
    assert sum(len(b) for b in batches) == 32_640


def test_a_600_kb_header_line_parses_with_its_unit_cut_short() -> None:
    rows = b"".join(b"%d,%d,2,3\n" % (i, i % 7) for i in range(1000))
    data = b"time (s),ax (m/s^2),ay (m/s^2),az (" + b"m" * 600_000 + b")\n" + rows
    f = io.BytesIO(data)
    fmt = detect_file(f, "long.csv")
    reader = make_reader(fmt)
    info = reader.open(f, ReadOptions(filename="long.csv"), None)
    assert sum(len(b) for b in reader.batches(lambda: 50_000)) == 1000
    assert info.units["ax"] == "m/s^2" and len(info.units["az"]) <= 80
    wide = b"time,ax,ay,az," + b",".join(b"extra%d" % i for i in range(80_000)) + b"\n" + rows
    f = io.BytesIO(wide)
    reader = make_reader(detect_file(f, "wide.csv"))
    reader.open(f, ReadOptions(filename="wide.csv"), None)
    assert sum(len(b) for b in reader.batches(lambda: 50_000)) == 1000  # extra names ignored


def test_a_header_line_past_the_head_limit_is_named_as_the_cause() -> None:
    data = b"time,ax,ay,az" + b"x" * (2 * MIB) + b"\n" + b"1,2,3,4\n" * 100
    with pytest.raises(FormatError, match="the first line is longer than") as err:
        detect_file(io.BytesIO(data), "x.csv")
    assert "empty" not in str(err.value)
    with pytest.raises(FormatError, match="the first line is longer than"):
        make_reader("generic_csv").open(io.BytesIO(data), ReadOptions(), None)
