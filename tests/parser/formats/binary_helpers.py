"""Shared helpers for the binary reader tests: read a whole file, resume, fuzz."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from services.parser.formats.base import (
    FileInfo,
    FormatError,
    Reader,
    ReadOptions,
    ResumePoint,
    SampleBatch,
)

DATA = Path(__file__).resolve().parents[2] / "data"


def read_all(
    reader: Reader,
    data: bytes,
    target: int = 50_000,
    options: ReadOptions | None = None,
    resume: ResumePoint | None = None,
) -> tuple[FileInfo, list[SampleBatch]]:
    """Open `data` with `reader` and collect every batch."""
    info = reader.open(io.BytesIO(data), options or ReadOptions(), resume)
    return info, list(reader.batches(lambda: target))


def concat(batches: list[SampleBatch]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """All batches' (t_ns, values) joined."""
    if not batches:
        return np.empty(0, np.int64), np.empty((0, 9), np.float32)
    return (
        np.concatenate([b.t_ns for b in batches]),
        np.concatenate([b.values for b in batches]),
    )


def check_resume_everywhere(make: Callable[[], Reader], data: bytes, target: int) -> int:
    """Resume from every batch's end_offset; the rest must equal the uninterrupted run."""
    _, full = read_all(make(), data, target)
    t_all, v_all = concat(full)
    done = 0
    for b in full:
        done += len(b)
        rp = ResumePoint(offset=b.end_offset, samples_done=done, state=b.state)
        _, rest = read_all(make(), data, target, resume=rp)
        t_rest, v_rest = concat(rest)
        assert np.array_equal(t_rest, t_all[done:])
        assert np.array_equal(v_rest, v_all[done:], equal_nan=True)
        if rest:
            assert rest[0].sample_index[0] == done
    return len(full)


def read_never_crashes(make: Callable[[], Reader], data: bytes, target: int = 1000) -> int:
    """Read `data`; FormatError is fine, anything else fails the test. Returns samples."""
    try:
        _, batches = read_all(make(), data, target)
    except FormatError:
        return 0
    for b in batches:
        assert b.values.shape == (len(b), 9)
        assert b.t_ns.shape == (len(b),)
    return sum(len(b) for b in batches)
