"""Axivity OMGUI WAV export: RIFF/WAVE, int16 frames at the IMU rate, metadata in LIST/INFO.

Channels 1-3 are accelerometer x, y, z as value / 32768 * `Scale-N` g (the scale is in
the INFO comment); further channels (light, temperature) are not stored. The first
sample's device-local time is the comment's `Time:` (else the `ICRD` date); samples are
`1 / rate` apart. OMGUI writes the `data` size up front, so a cut-off export claims more
bytes than it holds: we read what is there, whole frames only, and say so.
`end_offset` is always `data_start + k * frame_bytes`.
"""

from __future__ import annotations

import datetime as dt
import re
import struct
from collections.abc import Callable, Iterator
from typing import BinaryIO

import numpy as np

from services.parser.formats.base import (
    MAX_BATCH_INPUT_BYTES,
    STANDARD_GRAVITY,
    FileInfo,
    FormatError,
    ReadOptions,
    ResumePoint,
    SampleBatch,
)
from services.parser.formats.localtime import load_zone, local_to_utc_ns

FORMAT_ID = "axivity_wav"
_MAX_CHUNKS = 64
_MAX_META = 1 << 16
_MAX_FRAMES_PER_READ = 1 << 20
_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?")


def sniff(head: bytes, filename: str) -> bool:
    """True for a RIFF/WAVE file whose INFO metadata names Axivity accelerometer channels."""
    return head[:4] == b"RIFF" and head[8:12] == b"WAVE" and b"Accel-X" in head[:_MAX_META]


class AxivityWavReader:
    """Streams accelerometer samples from an OMGUI WAV export in whole frames."""

    format_id = FORMAT_ID

    def __init__(self) -> None:
        self._f: BinaryIO | None = None
        self._frame = 8
        self._channels = 4
        self._rate = 100.0
        self._scale = np.ones(3, dtype=np.float32)
        self._t0 = 0
        self._tz: dt.tzinfo = dt.UTC
        self._data_start = 0
        self._data_end = 0
        self._offset = 0
        self._samples_done = 0

    def open(self, f: BinaryIO, options: ReadOptions, resume: ResumePoint | None) -> FileInfo:
        """Walk the RIFF chunks up to `data`, read fmt and INFO, seek to `resume`."""
        self._tz = load_zone(options.timezone)
        f.seek(0, 2)
        size = f.tell()
        f.seek(0)
        if f.read(12)[8:12] != b"WAVE":
            raise FormatError("not a WAV file: no RIFF/WAVE header")
        meta, fmt, claimed = b"", b"", 0
        for _ in range(_MAX_CHUNKS):
            head = f.read(8)
            if len(head) < 8:
                raise FormatError("the WAV file has no 'data' chunk (truncated header?)")
            cid, clen = head[:4], struct.unpack("<I", head[4:])[0]
            if cid == b"data":
                claimed = clen
                break
            body = f.read(min(clen, _MAX_META))
            f.seek(f.tell() + clen - len(body) + (clen & 1))  # chunks are word-aligned
            if cid == b"fmt ":
                fmt = body
            elif cid == b"LIST":
                meta += body
        else:
            raise FormatError("the WAV file has no 'data' chunk among its first 64 chunks")
        if len(fmt) < 16:
            raise FormatError("the WAV file has no usable 'fmt ' chunk")
        channels, rate, _, frame, bits = struct.unpack("<HIIHH", fmt[2:16])
        if bits != 16 or channels < 3 or frame != 2 * channels or rate == 0:
            raise FormatError(
                f"unsupported WAV layout ({channels} channels, {bits}-bit): "
                "expected an Axivity OMGUI export (int16, at least 3 channels)"
            )
        text = meta.decode("latin-1")
        scales = [re.search(rf"Scale-{i}:\s*(\d+(?:\.\d+)?)", text) for i in (1, 2, 3)]
        self._scale = np.array([float(m.group(1)) if m else 8.0 for m in scales], np.float32)
        stamp = re.search(r"Time:\s*" + _TIME.pattern, text) or _TIME.search(text)
        if stamp is None:
            raise FormatError("the WAV metadata has no start time ('Time:' in its comment)")
        y, mo, d, h, mi, s = (int(v) for v in stamp.groups()[:6])
        micro = int((stamp.group(7) or "0").ljust(6, "0"))
        try:
            if not 1970 <= y <= 2200:  # beyond int64 ns
                raise ValueError(y)
            wall = dt.datetime(y, mo, d, h, mi, s, micro)
        except ValueError as exc:
            raise FormatError(f"the WAV start time is not a date: {stamp.group(0)}") from exc
        self._t0 = (wall - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1) * 1000
        self._channels, self._rate, self._frame = channels, float(rate), frame
        self._data_start = f.tell()
        available = size - self._data_start
        self._data_end = self._data_start + min(claimed, available) // frame * frame
        warnings: tuple[str, ...] = ()
        if claimed > available:
            warnings = (
                f"the WAV header promises {claimed:,} bytes of samples but the file holds "
                f"{available:,} (a cut-off export); the samples present were read",
            )
        self._f, self._offset, self._samples_done = f, self._data_start, 0
        if resume is not None:
            rel = resume.offset - self._data_start
            if rel < 0 or rel % frame or resume.offset > self._data_end:
                raise FormatError(f"cannot resume this WAV at byte {resume.offset}")
            self._offset, self._samples_done = resume.offset, resume.samples_done
        f.seek(self._offset)
        return FileInfo(
            format_id=FORMAT_ID,
            bytes_total=size,
            sample_count=(self._data_end - self._data_start) // frame,
            units={c: f"1/32768 of ±{s:g} g" for c, s in zip(("ax", "ay", "az"), self._scale, strict=True)},
            warnings=warnings,
            time_base="epoch",
        )

    def batches(self, target_samples: Callable[[], int]) -> Iterator[SampleBatch]:
        """Yield about `target_samples()` whole frames per batch."""
        if self._f is None:
            raise RuntimeError("open() first")
        while self._offset < self._data_end:
            # Bounded in bytes too: a header may claim thousands of channels per frame.
            per_read = max(1, min(_MAX_FRAMES_PER_READ, MAX_BATCH_INPUT_BYTES // self._frame))
            n = min(max(1, target_samples()), per_read)
            n = min(n, (self._data_end - self._offset) // self._frame)
            buf = self._f.read(n * self._frame)
            n = len(buf) // self._frame
            if n == 0:
                return
            raw = np.frombuffer(buf, "<i2", n * self._channels).reshape(n, self._channels)
            values = np.full((n, 9), np.nan, dtype=np.float32)
            values[:, :3] = raw[:, :3] * (self._scale * np.float32(STANDARD_GRAVITY / 32768))
            i = np.arange(self._samples_done, self._samples_done + n, dtype=np.int64)
            local = self._t0 + np.rint(i * (1e9 / self._rate)).astype(np.int64)
            self._offset += n * self._frame
            self._samples_done += n
            yield SampleBatch(
                sample_index=i,
                t_ns=local_to_utc_ns(local, self._tz),
                values=values,
                end_offset=self._offset,
                state={},
            )
