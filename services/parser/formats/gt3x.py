"""ActiGraph `.gt3x` reader: a ZIP holding `info.txt` and a `log.bin` record stream.

The upload is a seekable file on disk, so `zipfile` reads the central directory at the
end and we stream `log.bin` forward in 256 KiB chunks. Offsets (`end_offset`,
`FileInfo.bytes_total`) are positions inside the *uncompressed* `log.bin`, not in the
.gt3x file: they are what resuming needs (seek the member stream there) and they grow
monotonically to `bytes_total`, which is what progress needs.

A record is `0x1E, type u8, timestamp u32 (Unix seconds, device local), size u16,
payload, checksum u8` where the checksum is the one's complement of the XOR of every byte
before it. ACTIVITY2 (0x1A) payloads are int16 x, y, z per sample in units of
1/`Acceleration Scale` g, spaced 1/`Sample Rate` s from the record's second. Idle-sleep
gaps are simply missing seconds. 12-bit ACTIVITY (0x00, y,x,z) and ACTIVITY3 (0x1B)
records, and the legacy `activity.bin` member (packed samples, no records, timed from
`Start Date`), are decoded by `gt3x_packed.py`; a 1-byte ACTIVITY record is a docking
marker, not a sample. Time zone: `info.txt`'s `TimeZone` wins over the upload's, as for
GENEActiv.

Bounds (SPEC §7): the ZIP's directory is checked before zipfile reads it, the members'
declared sizes and inflate ratios before they are read, and log.bin's real inflated
bytes while it streams (`imuflow/archives.py`); a refusal fails the job with its reason.
The record scan is linear in log.bin whatever its bytes (`_Scan`), and a batch ends
after `MAX_BATCH_INPUT_BYTES` of log.bin even without a sample.
"""

from __future__ import annotations

import datetime as dt
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from imuflow.archives import ArchiveRefused, BoundedMember, check_directory, check_member
from services.parser.formats.base import (
    MAX_BATCH_INPUT_BYTES,
    STANDARD_GRAVITY,
    FileInfo,
    FormatError,
    ReadOptions,
    ResumePoint,
    SampleBatch,
)
from services.parser.formats.gt3x_packed import (
    PAIR_BYTES,
    TWELVE_BIT_MAX,
    TWELVE_BIT_SCALE,
    LegacyActivity,
    ticks_to_unix_ns,
    unpack12,
)
from services.parser.formats.localtime import load_zone, local_to_utc_ns, parse_gmt_offset

FORMAT_ID = "gt3x"
_SEP = 0x1E
_ACTIVITY, _ACTIVITY2, _ACTIVITY3 = 0x00, 0x1A, 0x1B
_HEAD = 8  # separator, type, u32 timestamp, u16 size
_CHUNK = 1 << 18
_TICKS_PER_S = 10_000_000  # .NET ticks in info.txt dates
_MAX_INFO = 1 << 20
# A .gt3x holds a handful of members; its directory is checked before zipfile reads it.
_MAX_MEMBERS = 64
_MAX_DIRECTORY = 64 * 1024


def sniff(head: bytes, filename: str) -> bool:
    """True for a ZIP that looks like a .gt3x (by name, or info.txt + log.bin members)."""
    if not head.startswith(b"PK\x03\x04"):
        return False
    return filename.lower().endswith(".gt3x") or (b"info.txt" in head and b"log.bin" in head)


def _info_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


# Kinds of byte positions in a scanned buffer (see `_Scan`).
_OTHER, _VALID, _TRUSTED, _UNTRUSTED, _INCOMPLETE, _END = range(6)


class _Scan:
    """One buffer of log.bin with every possible record start classified at once.

    A record start is a separator whose checksum (one's complement of the XOR of the
    record's bytes, taken from a prefix-XOR array, so O(1) per candidate) matches:
    `_VALID`. One that fails is `_TRUSTED` when a separator follows where its size says
    it ends (a damaged payload: skip the record whole), else `_UNTRUSTED` (resync at the
    next byte); `_INCOMPLETE` when the buffer does not hold the record and the byte after
    it. `next_stop(p)` is the first position >= p that is not garbage or untrusted, so the
    walk in `batches` jumps over any stretch of junk in one step: work is linear in the
    buffer however the bytes are arranged (a byte-by-byte resync that re-read a claimed
    64 KiB record at every separator was quadratic).
    """

    def __init__(self, buf: bytes, eof: bool) -> None:
        self.buf, self.eof = buf, eof
        n = len(buf)
        arr = np.frombuffer(buf, np.uint8)
        px = np.zeros(n + 1, np.uint8)
        if n:
            np.bitwise_xor.accumulate(arr, out=px[1:])
        is_sep = arr == _SEP
        cand = np.flatnonzero(is_sep)
        self.kind = np.full(n + 1, _OTHER, np.uint8)
        self.kind[cand] = _INCOMPLETE
        self.kind[n] = _END
        self.end = np.zeros(n + 1, np.int32)
        c = cand[cand + _HEAD <= n]
        size = arr[np.minimum(c + 6, n - 1)].astype(np.int64) | (
            arr[np.minimum(c + 7, n - 1)].astype(np.int64) << 8
        )
        e = c + _HEAD + size  # index of the checksum byte
        complete = (e + 1 < n) | (eof & (e < n))
        ec, nxt = np.minimum(e, max(n - 1, 0)), np.minimum(e + 1, max(n - 1, 0))
        valid = complete & ((px[ec] ^ px[c] ^ np.uint8(0xFF)) == arr[ec])
        # A record that fails but ends where another starts, or where log.bin ends.
        trusted = complete & ~valid & (((e + 1 < n) & (arr[nxt] == _SEP)) | (eof & (e + 1 == n)))
        kinds = np.select([~complete, valid, trusted], [_INCOMPLETE, _VALID, _TRUSTED], _UNTRUSTED)
        self.kind[c] = kinds.astype(np.uint8)
        self.end[c] = e
        stop = self.kind != _OTHER
        stop[c] = kinds != _UNTRUSTED
        self._stops = np.flatnonzero(stop)  # always ends with n (`_END`)
        self._untrusted = c[kinds == _UNTRUSTED]
        self._is_sep = is_sep
        self._run_starts = np.flatnonzero(~is_sep & np.concatenate(([True], is_sep[:-1]))) if n else c

    def next_stop(self, pos: int) -> tuple[int, int]:
        """(position, kind) of the first position >= `pos` the walk must look at."""
        kind = int(self.kind[pos])
        if kind != _OTHER and kind != _UNTRUSTED:
            return pos, kind
        stop = int(self._stops[np.searchsorted(self._stops, pos)])
        return stop, int(self.kind[stop])

    def untrusted_between(self, a: int, b: int) -> int:
        """Separators in [a, b) that failed their checksum with no record after them."""
        return int(np.searchsorted(self._untrusted, b) - np.searchsorted(self._untrusted, a))

    def garbage_between(self, a: int, b: int) -> int:
        """Stretches of non-separator bytes in [a, b) (one that starts before `a` counts)."""
        runs = int(np.searchsorted(self._run_starts, b) - np.searchsorted(self._run_starts, a))
        if a < b and a > 0 and not self._is_sep[a] and not self._is_sep[a - 1]:
            runs += 1  # `a` is inside a stretch whose start lies before it
        return runs


class Gt3xReader:
    """Streams ACTIVITY2 samples from an ActiGraph .gt3x file, record by record."""

    format_id = FORMAT_ID

    def __init__(self) -> None:
        self._log: BoundedMember | None = None
        self._tz: dt.tzinfo = dt.UTC
        self._rate = 0.0
        self._scale = 256.0
        self._offset = 0
        self._size = 0
        self._samples_done = 0
        self._zip_error = ""
        self._warned: set[str] = set()
        self._legacy: LegacyActivity | None = None
        self._ranges: dict[str, float] | None = None

    def open(self, f: BinaryIO, options: ReadOptions, resume: ResumePoint | None) -> FileInfo:
        """Read info.txt (rate, scale, time zone) and open log.bin at `resume.offset`."""
        limits = options.limits
        try:
            check_directory(f, _MAX_MEMBERS, _MAX_DIRECTORY)
            zf = zipfile.ZipFile(f)
            names = set(zf.namelist())
            stream = "log.bin" if "log.bin" in names else "activity.bin"
            if stream not in names:
                raise FormatError(
                    "not an ActiGraph .gt3x: the ZIP has no log.bin (nor a legacy activity.bin)"
                )
            if "info.txt" not in names:
                raise FormatError("not an ActiGraph .gt3x: the ZIP has no info.txt")
            # Everything the container unpacks to counts against the upload limit.
            budget = limits.max_content_bytes
            for member in zf.infolist():
                check_member(member.filename, member.file_size, member.compress_size, budget,
                             limits.max_inflate_ratio)  # fmt: skip
                budget -= member.file_size
            info_member = zf.getinfo("info.txt")
            with zf.open(info_member) as fh:
                info_bytes = BoundedMember(
                    fh, "info.txt", info_member.compress_size, _MAX_INFO, limits.max_inflate_ratio
                ).read(_MAX_INFO)
            info = _info_fields(info_bytes.decode("utf-8-sig", "replace"))
            log_info = zf.getinfo(stream)
            log = BoundedMember(
                zf.open(log_info), stream, log_info.compress_size,
                limits.max_content_bytes - info_member.file_size, limits.max_inflate_ratio,
            )  # fmt: skip
            if resume is not None:
                aligned = (
                    stream == "log.bin"
                    or resume.offset % PAIR_BYTES == 0
                    or resume.offset == log_info.file_size
                )
                if not (0 <= resume.offset <= log_info.file_size and aligned):
                    raise FormatError(f"cannot resume this .gt3x at {stream} byte {resume.offset}")
                log.seek(resume.offset)
        except ArchiveRefused as exc:
            raise FormatError(f"this .gt3x was refused: {exc}") from exc
        except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError,
                ValueError) as exc:  # fmt: skip
            raise FormatError(f"not a readable .gt3x (ZIP) file: {exc}") from exc
        except (NotImplementedError, RuntimeError) as exc:  # compression method, encryption
            raise FormatError(f"this .gt3x uses a ZIP feature we cannot read: {exc}") from exc
        rate = re.match(r"\d+(?:\.\d+)?", info.get("Sample Rate", ""))
        if rate is None or float(rate.group()) <= 0:
            raise FormatError("the .gt3x info.txt has no usable 'Sample Rate'")
        self._rate = float(rate.group())
        warnings: list[str] = []
        scale = re.match(r"\d+(?:\.\d+)?", info.get("Acceleration Scale", ""))
        self._scale = float(scale.group()) if scale and float(scale.group()) > 0 else 0.0
        if not self._scale and stream == "log.bin":
            # ACTIVITY2 devices write 256 counts per g, the 12-bit generation 341. Legacy
            # activity.bin files never say (they are all 12-bit, 341): no warning for them.
            warnings.append("info.txt gives no 'Acceleration Scale'; assumed 256 counts per g "
                            "(341 for 12-bit samples)")  # fmt: skip
        peak = re.match(r"\d+(?:\.\d+)?", info.get("Acceleration Max", ""))
        g_max = float(peak.group()) if peak and float(peak.group()) > 0 else None
        if g_max is None and stream == "activity.bin":
            # Legacy files never say, but their 12-bit counts end at 2047: the full scale
            # (~6 g at 341 per g, the GT3X+ / NEO range) is the encoding's.
            g_max = TWELVE_BIT_MAX / (self._scale or TWELVE_BIT_SCALE)
        self._ranges = dict.fromkeys(("ax", "ay", "az"), g_max * STANDARD_GRAVITY) if g_max else None
        file_tz = parse_gmt_offset(info.get("TimeZone", ""))
        self._tz = file_tz if file_tz is not None else load_zone(options.timezone)
        self._log, self._size = log, log_info.file_size
        self._legacy = None
        if stream == "activity.bin":
            try:
                start = ticks_to_unix_ns(int(info["Start Date"]))
            except (KeyError, ValueError) as exc:
                raise FormatError("the legacy .gt3x info.txt has no usable 'Start Date'") from exc
            tz = self._tz
            self._legacy = LegacyActivity(log, self._size, start, self._rate, self._scale or TWELVE_BIT_SCALE,
                                          lambda t: local_to_utc_ns(t, tz))  # fmt: skip
        self._offset, self._samples_done = (0, 0) if resume is None else (
            resume.offset, resume.samples_done)  # fmt: skip
        return FileInfo(
            format_id=FORMAT_ID,
            bytes_total=self._size,  # of the uncompressed log.bin, like every offset here
            # activity.bin is nothing but 36-bit samples: its size gives the exact count.
            sample_count=self._size * 8 // 36 if self._legacy else None,
            sample_count_estimate=self._estimate(info),
            units={
                c: f"1/{self._scale or (TWELVE_BIT_SCALE if self._legacy else 256):g} g"
                for c in ("ax", "ay", "az")
            },
            warnings=tuple(warnings),
            time_base="epoch",
        )

    def _estimate(self, info: dict[str, str]) -> int | None:
        """Samples between Start Date and Last Sample Time (idle sleep makes it an upper bound)."""
        try:
            span = int(info["Last Sample Time"]) - int(info["Start Date"])
        except (KeyError, ValueError):
            return None
        return max(0, round(span / _TICKS_PER_S * self._rate)) if span > 0 else None

    def batches(self, target_samples: Callable[[], int]) -> Iterator[SampleBatch]:
        """Yield whole records, about `target_samples()` samples (or 16 MiB of log.bin) per batch."""
        if self._log is None:
            raise RuntimeError("open() first")
        if self._legacy is not None:
            for batch in self._legacy.batches(self._offset, self._samples_done, target_samples):
                batch.ranges = self._ranges
                yield batch
            return
        scan, base, pos = _Scan(b"", eof=False), self._offset, 0  # scan.buf[0] is log.bin `base`
        finished = False
        while not finished:
            target, batch_start = max(1, target_samples()), base + pos
            parts: list[tuple[int, npt.NDArray[np.float32]]] = []
            counts = dict.fromkeys(("bad checksum", "garbage", "truncated", "zip damage"), 0)
            n = 0
            while n < target and base + pos - batch_start < MAX_BATCH_INPUT_BYTES:
                stop, kind = scan.next_stop(pos)
                if stop > pos:  # garbage and records that fail their checksum, skipped at once
                    counts["bad checksum"] += scan.untrusted_between(pos, stop)
                    counts["garbage"] += scan.garbage_between(pos, stop)
                    pos = stop
                if kind == _VALID:
                    pos, part = self._record(scan.buf, pos, int(scan.end[pos]), counts)
                    if part is not None and len(part[1]):
                        parts.append(part)
                        n += len(part[1])
                elif kind == _TRUSTED:  # framing intact, payload damaged: skip the record whole
                    counts["bad checksum"] += 1
                    pos = int(scan.end[pos]) + 1
                elif scan.eof:  # an incomplete record at the end of log.bin, or the end itself
                    if kind == _INCOMPLETE:
                        counts["truncated"] += 1
                    pos, finished = len(scan.buf), True
                    break
                else:  # the record runs past the buffer: read on and classify again
                    rest = scan.buf[pos:]
                    base += pos
                    chunk = self._read_chunk(base + len(rest), counts)
                    scan, pos = _Scan(rest + chunk, eof=not chunk), 0
            self._offset = base + pos
            if finished and not parts and not any(counts.values()):
                return
            yield self._make_batch(parts, counts)

    def _read_chunk(self, at: int, counts: dict[str, int]) -> bytes:
        """Read on in log.bin; a broken ZIP stream ends the data, reported, not fatal."""
        assert self._log is not None
        try:
            return self._log.read(_CHUNK)
        except ArchiveRefused as exc:  # inflating past a limit is fatal: the job fails with it
            raise FormatError(str(exc)) from exc
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, RuntimeError) as e:
            counts["zip damage"] += 1
            self._zip_error = f"log.bin is damaged after byte {at} ({e}); the rest was skipped"
            return b""

    def _record(
        self, buf: bytes, pos: int, end: int, counts: dict[str, int]
    ) -> tuple[int, tuple[int, npt.NDArray[np.float32]] | None]:
        """Decode the checksum-valid record at `pos` (checksum byte at `end`) to m/s²."""
        rtype, ts = buf[pos + 1], int.from_bytes(buf[pos + 2 : pos + 6], "little")
        if rtype == _ACTIVITY2:
            n = (end - pos - _HEAD) // 6
            raw = np.frombuffer(buf, "<i2", n * 3, pos + _HEAD).reshape(n, 3)
            return end + 1, (ts, raw.astype(np.float32) * np.float32(STANDARD_GRAVITY / (self._scale or 256)))
        # A 1-byte ACTIVITY payload marks docking (no samples).
        if rtype in (_ACTIVITY, _ACTIVITY3) and end > pos + _HEAD + 1:
            order = (1, 0, 2) if rtype == _ACTIVITY else (0, 1, 2)
            raw = unpack12(buf[pos + _HEAD : end], order)
            g = np.float32(STANDARD_GRAVITY / (self._scale or TWELVE_BIT_SCALE))
            return end + 1, (ts, raw.astype(np.float32) * g)
        return end + 1, None

    def _make_batch(
        self, parts: list[tuple[int, npt.NDArray[np.float32]]], counts: dict[str, int]
    ) -> SampleBatch:
        total = sum(len(p[1]) for p in parts)
        values = np.full((total, 9), np.nan, dtype=np.float32)
        t_local = np.empty(total, dtype=np.int64)
        if parts:
            values[:, :3] = np.concatenate([p[1] for p in parts])
            per = np.array([len(p[1]) for p in parts], dtype=np.int64)
            sec = np.repeat(np.array([p[0] for p in parts], dtype=np.int64), per)
            i = np.arange(total) - np.repeat(np.cumsum(per) - per, per)
            t_local = sec * 1_000_000_000 + np.rint(i * (1e9 / self._rate)).astype(np.int64)
        labels = {
            "bad checksum": "records failed their checksum and were skipped",
            "garbage": "stretches of bytes between records were skipped",
            "truncated": "record at the end of log.bin is incomplete (truncated file)",
        }
        # Each kind is described once per file (where it first happened); later ones are
        # only counted in rows_skipped, so a damaged file cannot flood the warnings.
        warnings = []
        for kind, n in counts.items():
            if n and kind in labels and kind not in self._warned:
                self._warned.add(kind)
                warnings.append(
                    f"{n} {labels[kind]} by log.bin byte {self._offset:,} (any later ones are "
                    "counted in rows skipped, not described again)"
                )
        if counts["zip damage"]:
            warnings.append(self._zip_error)
        index = np.arange(self._samples_done, self._samples_done + total, dtype=np.int64)
        self._samples_done += total
        return SampleBatch(
            ranges=self._ranges,
            sample_index=index,
            t_ns=local_to_utc_ns(t_local, self._tz),
            values=values,
            end_offset=self._offset,
            rows_skipped=sum(counts.values()),
            warnings=warnings,
            state={"log_bin_offset": self._offset},
        )
