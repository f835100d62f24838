"""Property tests: batching never changes the samples; arbitrary bytes never crash or hang."""

from __future__ import annotations

import io
import random

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.parser.formats.base import FormatError, ReadOptions
from services.parser.formats.registry import detect_format, make_reader
from tests.parser.formats.text_helpers import DATA, euroc, read_bytes

XIO = (DATA / "xio_fusion_sensor_data.csv").read_bytes()[:60_000]
APDM = (DATA / "opensim_imuData01.csv").read_bytes()[:120_000]
FILES = [XIO, APDM, euroc(rows=300, damaged=True)]
WHOLE = [read_bytes(d, "f.csv", target=10**6) for d in FILES]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, len(FILES) - 1), seed=st.integers(0, 2**32 - 1))
def test_random_batch_sizes_give_the_same_samples(which: int, seed: int) -> None:
    rng = random.Random(seed)
    r = read_bytes(FILES[which], "f.csv", target=lambda: rng.randint(1, 400))
    whole = WHOLE[which]
    np.testing.assert_array_equal(r.values, whole.values)
    np.testing.assert_array_equal(r.t_ns, whole.t_ns)
    np.testing.assert_array_equal(r.sample_index, whole.sample_index)
    np.testing.assert_array_equal(r.sensor, whole.sensor)
    assert r.rows_skipped == whole.rows_skipped
    offsets = [b.end_offset for b in r.batches]
    assert offsets == sorted(offsets) and offsets[-1] == len(FILES[which])


def _read_any(data: bytes) -> int:
    try:
        reader = make_reader(detect_format(data[:65536], "upload.csv"))
        reader.open(io.BytesIO(data), ReadOptions(filename="upload.csv"), None)
        return sum(len(b) for b in reader.batches(lambda: 7))
    except FormatError:
        return -1


@settings(max_examples=300, deadline=2000)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_only_raise_format_error(data: bytes) -> None:
    _read_any(data)


_cells = st.sampled_from(["1", "-2.5", "", "NaN", "x", "1e5", '"', "\r", "\x00", "9" * 25, ";", " "])


@settings(max_examples=300, deadline=2000)
@given(
    header=st.sampled_from(["time,ax,ay,az", "t;gx;gy;gz", "Time (s)\tX (m/s^2)\tY (m/s^2)"]),
    rows=st.lists(st.lists(_cells, min_size=1, max_size=6), max_size=30),
    sep=st.sampled_from([",", ";", "\t", " "]),
)
def test_damaged_csv_like_input_never_crashes(header: str, rows: list[list[str]], sep: str) -> None:
    body = "\n".join(sep.join(r) for r in rows)
    good = "\n".join(f"{i},1,2,3" for i in range(3))
    n = _read_any(f"{header}\n{good}\n{body}".encode())
    assert n == -1 or n >= 0
