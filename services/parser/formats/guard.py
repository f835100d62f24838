"""The no-sample guard, once for every reader: input consumed without a sample is bounded.

A reader ends a batch after at most `MAX_BATCH_INPUT_BYTES` of input whether or not it
found samples (text readers per block of lines), so this wrapper sees every reader's
progress through its input at least that often. When a reader has consumed
`Limits.max_bytes_without_sample` of input (its own offsets: uncompressed log.bin bytes
for .gt3x, file bytes otherwise) since its last sample, or since its start, the job fails
with a reason the user can act on instead of holding a parser slot for minutes while a
file of junk is scanned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import BinaryIO

from imuflow.filewarnings import clip
from services.parser.formats.base import FileInfo, FormatError, Reader, ReadOptions, ResumePoint, SampleBatch

MAX_UNIT_CHARS = 80


def _size(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB" if n >= 1 << 20 else f"{n:,} bytes"


class GuardedReader:
    """Wraps a reader; `batches` raises FormatError after too much input without a sample."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader
        self.format_id = reader.format_id
        self._limit = ReadOptions().limits.max_bytes_without_sample
        self._mark = 0

    def open(self, f: BinaryIO, options: ReadOptions, resume: ResumePoint | None) -> FileInfo:
        """Open the wrapped reader; the count starts at its start (or resume) offset."""
        self._limit = options.limits.max_bytes_without_sample
        self._mark = resume.offset if resume is not None else 0
        try:
            info = self._reader.open(f, options, resume)
        except FormatError as exc:  # a reason may quote the file (a 600 KB header cell)
            raise FormatError(clip(str(exc))) from exc
        # Units come from the header too: a 600 KB "unit" is stored (and shown) cut short.
        return replace(info, units={k: clip(v, MAX_UNIT_CHARS) for k, v in info.units.items()})

    def batches(self, target_samples: Callable[[], int]) -> Iterator[SampleBatch]:
        """The wrapped reader's batches, checked for input consumed without a sample."""
        try:
            yield from self._checked(target_samples)
        except FormatError as exc:
            raise FormatError(clip(str(exc))) from exc

    def _checked(self, target_samples: Callable[[], int]) -> Iterator[SampleBatch]:
        for batch in self._reader.batches(target_samples):
            if len(batch):
                self._mark = batch.end_offset
            elif batch.end_offset - self._mark > self._limit:
                raise FormatError(
                    f"read {_size(batch.end_offset - self._mark)} of the file without finding one "
                    f"IMU sample (up to byte {batch.end_offset:,}): this is not a {self.format_id} "
                    "recording we can read, or its data is damaged; check the file, or upload it "
                    "again naming its format"
                )
            yield batch
