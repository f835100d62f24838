"""The contract between the parser worker and every format reader.

A reader turns a seekable binary file into a stream of `SampleBatch`es. It never
holds the whole file: it reads forward in chunks, and every batch ends on a record
boundary whose byte offset (`end_offset`) is a valid resume point. The worker stores
that offset and the reader's `state` in the same transaction as the batch's samples,
so a restarted job calls `open(..., resume=ResumePoint(...))` and continues exactly
after the last committed record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

import numpy as np
import numpy.typing as npt

# Column order of `SampleBatch.values`, the canonical units of SPEC §4:
# accelerometer m/s², gyroscope rad/s, magnetometer µT.
VALUE_COLUMNS: tuple[str, ...] = ("ax", "ay", "az", "gx", "gy", "gz", "mx", "my", "mz")

# `t_ns` holds int64 nanoseconds; this sentinel means NULL (no time base at all).
NULL_TIME = np.iinfo(np.int64).min

# Standard gravity, used to convert g to m/s².
STANDARD_GRAVITY = 9.80665

# A record reader ends a batch after this much input even when it found no sample, so
# the job reaches a batch boundary (cancel, stop, the no-sample guard) within seconds
# whatever the file holds.
MAX_BATCH_INPUT_BYTES = 16 * 1024 * 1024


class FormatError(Exception):
    """The file cannot be read as this format; the message is shown to the user."""


@dataclass(frozen=True)
class Limits:
    """Bounds on the work one file may cause (SPEC §7 "Limits and fairness")."""

    max_content_bytes: int = 4 * 1024**3  # MAX_UPLOAD_BYTES: also what a container unpacks to
    max_inflate_ratio: float = 100.0  # MAX_INFLATE_RATIO of a container's members
    max_bytes_without_sample: int = 64 * 1024**2  # MAX_BYTES_WITHOUT_SAMPLE (see guard.py)


@dataclass(frozen=True)
class ReadOptions:
    """What the upload told us about the file, and the limits to read it within."""

    filename: str = ""
    sensor: str | None = None  # the upload's `sensor` field, overrides name-based guesses
    timezone: str = "UTC"  # IANA name used to convert device-local times to UTC
    limits: Limits = Limits()


@dataclass(frozen=True)
class ResumePoint:
    """Where a previous attempt committed its last batch."""

    offset: int  # byte offset just after the last committed record
    samples_done: int  # samples committed so far (the next batch starts its index here)
    state: Mapping[str, Any]  # the `state` of the last committed batch


@dataclass
class SampleBatch:
    """One batch of canonical samples, ending on a record boundary."""

    sample_index: npt.NDArray[np.int64]  # 0-based position (per sensor where several)
    t_ns: npt.NDArray[np.int64]  # ns, UTC epoch or since recording start; NULL_TIME = NULL
    values: npt.NDArray[np.float32]  # shape (n, 9) in VALUE_COLUMNS order; NaN = NULL
    end_offset: int  # byte offset after the last record consumed (a resume point)
    sensor: npt.NDArray[np.int16] | None = None  # codes into `sensors`, None if one sensor
    sensors: tuple[str, ...] = ()
    rows_skipped: int = 0  # rows/blocks skipped in this batch (bad time and values, checksum)
    warnings: list[str] = field(default_factory=list)  # new, user-readable, deduplicated
    state: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable, to resume here
    # The device's full scale per canonical column in stored units, where the reader knows
    # it (.cwa, .gt3x, GENEActiv): samples at it are counted as clipped in the summary.
    ranges: dict[str, float] | None = None

    def __len__(self) -> int:
        return int(self.sample_index.shape[0])


@dataclass(frozen=True)
class FileInfo:
    """What a reader learned from the file's header, before the first batch."""

    format_id: str  # a preset id such as "generic_csv", "euroc", "cwa"
    bytes_total: int
    sample_count: int | None = None  # exact when the header says so (else estimated later)
    # a reader's own guess when `sample_count` is unknown (e.g. .cwa: blocks x samples per
    # block from the file size); the worker may prefer it to a bytes-based estimate
    sample_count_estimate: int | None = None
    units: Mapping[str, str] = field(default_factory=dict)  # source unit per canonical column
    warnings: tuple[str, ...] = ()
    time_base: str = "relative"  # "epoch", "relative" or "none"


class Reader(Protocol):
    """A format reader; one instance reads one file once."""

    format_id: str

    def open(self, f: BinaryIO, options: ReadOptions, resume: ResumePoint | None) -> FileInfo:
        """Read the header (and seek to `resume.offset` when given); raise FormatError."""
        ...

    def batches(self, target_samples: Callable[[], int]) -> Iterator[SampleBatch]:
        """Yield batches of about `target_samples()` samples each until the end of the file.

        The target is asked for again before every batch, because the worker adapts it
        (adaptive batching) so that checkpoints arrive at a steady cadence.
        """
        ...
