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
gaps are simply missing seconds. Legacy 12-bit ACTIVITY (0x00) records and the older
`activity.bin` layout are not decoded (their bit packing is unverified); they are
counted and reported. Time zone: `info.txt`'s `TimeZone` wins over the upload's, as for
GENEActiv.
"""

from __future__ import annotations

import datetime as dt
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator
from typing import IO, BinaryIO

import numpy as np
import numpy.typing as npt

from services.parser.formats.base import (
    STANDARD_GRAVITY,
    FileInfo,
    FormatError,
    ReadOptions,
    ResumePoint,
    SampleBatch,
)
from services.parser.formats.localtime import load_zone, local_to_utc_ns, parse_gmt_offset

FORMAT_ID = "gt3x"
_SEP = 0x1E
_ACTIVITY, _ACTIVITY2 = 0x00, 0x1A
_HEAD = 8  # separator, type, u32 timestamp, u16 size
_CHUNK = 1 << 18
_TICKS_PER_S = 10_000_000  # .NET ticks in info.txt dates
_MAX_INFO = 1 << 20


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


class Gt3xReader:
    """Streams ACTIVITY2 samples from an ActiGraph .gt3x file, record by record."""

    format_id = FORMAT_ID

    def __init__(self) -> None:
        self._log: IO[bytes] | None = None
        self._tz: dt.tzinfo = dt.UTC
        self._rate = 0.0
        self._scale = 256.0
        self._offset = 0
        self._size = 0
        self._samples_done = 0
        self._zip_error = ""

    def open(self, f: BinaryIO, options: ReadOptions, resume: ResumePoint | None) -> FileInfo:
        """Read info.txt (rate, scale, time zone) and open log.bin at `resume.offset`."""
        try:
            zf = zipfile.ZipFile(f)
            names = set(zf.namelist())
            if "log.bin" not in names:
                if "activity.bin" in names:
                    raise FormatError(
                        "this is a legacy .gt3x (activity.bin), which is not supported yet: "
                        "export a RAW CSV from ActiLife and upload that"
                    )
                raise FormatError("not an ActiGraph .gt3x: the ZIP has no log.bin")
            if "info.txt" not in names:
                raise FormatError("not an ActiGraph .gt3x: the ZIP has no info.txt")
            with zf.open("info.txt") as fh:
                info = _info_fields(fh.read(_MAX_INFO).decode("utf-8-sig", "replace"))
            log_info = zf.getinfo("log.bin")
            log = zf.open(log_info)
            if resume is not None:
                if not 0 <= resume.offset <= log_info.file_size:
                    raise FormatError(f"cannot resume this .gt3x at log.bin byte {resume.offset}")
                log.seek(resume.offset)
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
        self._scale = float(scale.group()) if scale and float(scale.group()) > 0 else 256.0
        if scale is None:
            warnings.append("info.txt gives no 'Acceleration Scale'; assumed 256 counts per g")
        file_tz = parse_gmt_offset(info.get("TimeZone", ""))
        self._tz = file_tz if file_tz is not None else load_zone(options.timezone)
        self._log, self._size = log, log_info.file_size
        self._offset, self._samples_done = (0, 0) if resume is None else (
            resume.offset, resume.samples_done)  # fmt: skip
        return FileInfo(
            format_id=FORMAT_ID,
            bytes_total=self._size,  # of the uncompressed log.bin, like every offset here
            sample_count_estimate=self._estimate(info),
            units={c: f"1/{self._scale:g} g" for c in ("ax", "ay", "az")},
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
        """Yield whole records, about `target_samples()` samples per batch."""
        if self._log is None:
            raise RuntimeError("open() first")
        buf, base, eof = b"", self._offset, False  # buf[0] is log.bin offset `base`
        while True:
            target = max(1, target_samples())
            pos, n = self._offset - base, 0
            parts: list[tuple[int, npt.NDArray[np.int16]]] = []
            counts = {"bad checksum": 0, "garbage": 0, "legacy": 0, "truncated": 0}
            counts["zip damage"] = 0
            while n < target:
                if len(buf) - pos < _HEAD + 1 or (
                    buf[pos] == _SEP and len(buf) - pos < _HEAD + self._size_at(buf, pos) + 1
                ):
                    if eof:
                        if pos < len(buf):
                            counts["truncated"] += 1
                            pos = len(buf)
                        break
                    buf, base, pos = buf[pos:], base + pos, 0
                    chunk = self._read_chunk(base + len(buf), counts)
                    eof = not chunk
                    buf += chunk
                    continue
                pos, part = self._record(buf, pos, counts)
                if part is not None:
                    parts.append(part)
                    n += len(part[1])
            self._offset = base + pos
            skipped = sum(counts.values())
            if not parts and not skipped:
                return
            yield self._make_batch(parts, counts)

    def _read_chunk(self, at: int, counts: dict[str, int]) -> bytes:
        """Read on in log.bin; a broken ZIP stream ends the data, reported, not fatal."""
        assert self._log is not None
        try:
            return self._log.read(_CHUNK)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, RuntimeError) as e:
            counts["zip damage"] += 1
            self._zip_error = f"log.bin is damaged after byte {at} ({e}); the rest was skipped"
            return b""

    @staticmethod
    def _size_at(buf: bytes, pos: int) -> int:
        return int.from_bytes(buf[pos + 6 : pos + 8], "little")

    def _record(
        self, buf: bytes, pos: int, counts: dict[str, int]
    ) -> tuple[int, tuple[int, npt.NDArray[np.int16]] | None]:
        """Parse the record at `pos`: (next pos, (timestamp, samples) or None)."""
        if buf[pos] != _SEP:
            nxt = buf.find(bytes([_SEP]), pos + 1)
            counts["garbage"] += 1
            return (len(buf) if nxt < 0 else nxt), None
        size = self._size_at(buf, pos)
        end = pos + _HEAD + size
        xor = int(np.bitwise_xor.reduce(np.frombuffer(buf, np.uint8, end - pos, pos)))
        if (~xor & 0xFF) != buf[end]:
            counts["bad checksum"] += 1
            # Trust the size only if a record separator follows; else resync byte by byte.
            ok_next = end + 1 < len(buf) and buf[end + 1] == _SEP
            return (end + 1 if ok_next else pos + 1), None
        rtype, ts = buf[pos + 1], int.from_bytes(buf[pos + 2 : pos + 6], "little")
        if rtype == _ACTIVITY2:
            n = size // 6
            raw = np.frombuffer(buf, "<i2", n * 3, pos + _HEAD).reshape(n, 3)
            return end + 1, (ts, raw)
        if rtype == _ACTIVITY and size:
            counts["legacy"] += 1
        return end + 1, None

    def _make_batch(
        self, parts: list[tuple[int, npt.NDArray[np.int16]]], counts: dict[str, int]
    ) -> SampleBatch:
        total = sum(len(p[1]) for p in parts)
        values = np.full((total, 9), np.nan, dtype=np.float32)
        t_local = np.empty(total, dtype=np.int64)
        if parts:
            raw = np.concatenate([p[1] for p in parts])
            values[:, :3] = raw.astype(np.float32) * np.float32(STANDARD_GRAVITY / self._scale)
            per = np.array([len(p[1]) for p in parts], dtype=np.int64)
            sec = np.repeat(np.array([p[0] for p in parts], dtype=np.int64), per)
            i = np.arange(total) - np.repeat(np.cumsum(per) - per, per)
            t_local = sec * 1_000_000_000 + np.rint(i * (1e9 / self._rate)).astype(np.int64)
        labels = {
            "bad checksum": "records failed their checksum and were skipped",
            "garbage": "stretches of bytes between records were skipped",
            "legacy": "legacy 12-bit ACTIVITY records were not decoded",
            "truncated": "record at the end of log.bin is incomplete (truncated file)",
        }
        warnings = [f"{n} {labels[k]}" for k, n in counts.items() if n and k in labels]
        if counts["zip damage"]:
            warnings.append(self._zip_error)
        index = np.arange(self._samples_done, self._samples_done + total, dtype=np.int64)
        self._samples_done += total
        return SampleBatch(
            sample_index=index,
            t_ns=local_to_utc_ns(t_local, self._tz),
            values=values,
            end_offset=self._offset,
            rows_skipped=sum(counts.values()),
            warnings=warnings,
            state={"log_bin_offset": self._offset},
        )
