"""GENEActiv `.bin` reader: CRLF text, a `key:value` header, then pages of hex samples.

Each page is a `Recorded Data` line, about eight `key:value` lines (`Page Time`,
`Measurement Frequency`, ...) and one hex line of 12 hex digits per sample: x, y, z as
12-bit two's complement, then light, button and a reserved bit (not stored). Physical
units come from the header's `Calibration Data`: g = (raw * 100 - offset) / gain.

Pages differ in length, so we read forward in 256 KiB chunks and cut pages out of a
buffer; `end_offset` is the byte after a page's hex line, so resuming re-reads the header
(for calibration) and seeks there. A hex line cut short (a truncated file) keeps its
complete samples. A page without a usable time or hex line is skipped and counted.

Time zone: the header's `Time Zone:GMT +01:00` describes the clock that stamped the
pages, so when it parses it wins over the upload's `timezone` (which is then only a
fallback); a warning says so when the two disagree.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from services.parser.formats.base import (
    MAX_BATCH_INPUT_BYTES,
    STANDARD_GRAVITY,
    FileInfo,
    FormatError,
    ReadOptions,
    ResumePoint,
    SampleBatch,
)
from services.parser.formats.localtime import load_zone, local_to_utc_ns, parse_gmt_offset

FORMAT_ID = "geneactiv"
_MARKER = b"Recorded Data"
_MAX_HEADER = 1 << 20  # real headers are ~2 KiB; more means this is not a GENEActiv file
_CHUNK = 1 << 18
_MAX_LINE = 1 << 14  # a 300-sample hex line is 3600 chars
_MAX_PAGE_LINES = 16
_SAMPLES_PER_PAGE = 300
_PAGE_BYTES = 3830  # typical bytes per 300-sample page (hex line + page header lines)

# ASCII byte -> hex nibble value, 255 for anything else.
_NIBBLE = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789ABCDEF"):
    _NIBBLE[_c] = _i
    _NIBBLE[bytes([_c]).lower()[0]] = _i

_PAGE_TIME = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2}) (\d{1,2}):(\d{2}):(\d{2}):(\d{1,3})")


def sniff(head: bytes, filename: str) -> bool:
    """True when `head` looks like a GENEActiv .bin text header."""
    start = head[:4096]
    return start.startswith(b"Device Identity") or (
        b"GENEActiv" in start and b"Device Unique Serial Code" in start
    )


def _parse_header(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.replace("\x00", "").strip()
    return fields


def _number(fields: dict[str, str], key: str) -> float:
    m = re.match(r"[-+]?\d+(?:\.\d+)?", fields.get(key, ""))
    if m is None:
        raise FormatError(f"the GENEActiv header has no usable '{key}' (Calibration Data)")
    return float(m.group())


def decode_hex_samples(
    hexes: bytes, gains: npt.NDArray[np.float64], offsets: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """Decode whole 12-hex-digit samples to (n, 3) m/s², with a mask of clean samples."""
    n = len(hexes) // 12
    nib = _NIBBLE[np.frombuffer(hexes, dtype=np.uint8, count=n * 12)].reshape(n, 12)
    ok = (nib[:, :9] != 255).all(axis=1)
    d = nib[:, :9].astype(np.int32).reshape(n, 3, 3)
    raw = (d[:, :, 0] << 8) | (d[:, :, 1] << 4) | d[:, :, 2]
    raw = (raw ^ 0x800) - 0x800  # 12-bit two's complement
    g = (raw * 100.0 - offsets) / gains
    return (g * STANDARD_GRAVITY).astype(np.float32), ok


def clip_limits(gains: npt.NDArray[np.float64], offsets: npt.NDArray[np.float64]) -> dict[str, float]:
    """Per axis, the smaller magnitude of the calibrated 12-bit extremes (-2048, 2047), m/s²:
    a sample there is at the sensor's end of scale (counted as clipped in the summary)."""
    low = np.abs((-2048 * 100.0 - offsets) / gains)
    high = np.abs((2047 * 100.0 - offsets) / gains)
    limits = np.minimum(low, high) * STANDARD_GRAVITY
    return {axis: float(v) for axis, v in zip(("ax", "ay", "az"), limits.tolist(), strict=True)}


class GeneactivReader:
    """Streams samples from a GENEActiv .bin file page by page."""

    format_id = FORMAT_ID

    def _ranges(self) -> dict[str, float]:
        return clip_limits(self._gains, self._offsets)

    def __init__(self) -> None:
        self._f: BinaryIO | None = None
        self._tz: dt.tzinfo = dt.UTC
        self._gains = np.ones(3)
        self._offsets = np.zeros(3)
        self._freq = 0.0
        self._size = 0
        self._offset = 0
        self._samples_done = 0
        self._warned_tz = False

    def open(self, f: BinaryIO, options: ReadOptions, resume: ResumePoint | None) -> FileInfo:
        """Parse the header (calibration, rate, time zone) and seek to the first page."""
        f.seek(0, 2)
        self._size = f.tell()
        f.seek(0)
        head = f.read(min(self._size, _MAX_HEADER))
        at = head.find(_MARKER)
        if not sniff(head, options.filename) or at < 0:
            raise FormatError(
                "not a GENEActiv .bin file: expected a 'Device Identity' text header "
                "followed by 'Recorded Data' pages"
            )
        fields = _parse_header(head[:at].decode("latin-1"))
        self._gains = np.array([_number(fields, f"{a} gain") for a in "xyz"])
        self._offsets = np.array([_number(fields, f"{a} offset") for a in "xyz"])
        if not (self._gains != 0).all():
            raise FormatError("the GENEActiv header has a zero calibration gain")
        freq = re.match(r"\d+(?:\.\d+)?", fields.get("Measurement Frequency", ""))
        self._freq = float(freq.group()) if freq else 0.0
        warnings: list[str] = []
        user_tz = load_zone(options.timezone)
        file_tz = parse_gmt_offset(fields.get("Time Zone", ""))
        self._tz = user_tz
        if file_tz is not None:
            self._tz = file_tz
            st = _PAGE_TIME.fullmatch(fields.get("Start Time", ""))
            y, mo, d = (int(v) for v in st.groups()[:3]) if st else (2000, 7, 1)
            try:
                at_start = dt.datetime(y, mo, d)
            except ValueError:  # a damaged Start Time: compare at a summer date instead
                at_start = dt.datetime(2000, 7, 1)
            if options.timezone not in ("UTC", "") and (
                at_start.replace(tzinfo=user_tz).utcoffset() != at_start.replace(tzinfo=file_tz).utcoffset()
            ):
                warnings.append(
                    f"the file's own time zone ({fields['Time Zone']}) was used instead of "
                    f"the upload's {options.timezone}"
                )
        self._f, self._offset, self._samples_done = f, at, 0
        if resume is not None:
            if not at <= resume.offset <= self._size:
                raise FormatError(f"cannot resume a GENEActiv file at byte {resume.offset}")
            self._offset, self._samples_done = resume.offset, resume.samples_done
        f.seek(self._offset)
        units = {c: "g (calibrated raw)" for c in ("ax", "ay", "az")}
        return FileInfo(
            format_id=FORMAT_ID,
            bytes_total=self._size,
            # The header's page count is what the device allocated, not what was written
            # (the test file claims 222,048 pages and holds 17), so estimate from bytes.
            sample_count_estimate=(self._size - at) * _SAMPLES_PER_PAGE // _PAGE_BYTES,
            units=units,
            warnings=tuple(warnings),
            time_base="epoch",
        )

    def batches(self, target_samples: Callable[[], int]) -> Iterator[SampleBatch]:
        """Yield whole pages, about `target_samples()` samples per batch."""
        if self._f is None:
            raise RuntimeError("open() first")
        buf, base = b"", self._offset  # buf[0] is at file offset `base`
        eof = finished = False
        while not finished:
            want = max(1, -(-max(1, target_samples()) // _SAMPLES_PER_PAGE))
            pages: list[tuple[int, bytes, float]] = []
            skipped, pos, warnings = 0, self._offset - base, []
            batch_start = self._offset
            # A batch also ends after MAX_BATCH_INPUT_BYTES without pages (junk, damage).
            while len(pages) < want and base + pos - batch_start < MAX_BATCH_INPUT_BYTES:
                page, status, nxt = self._next_page(buf, pos, eof)
                if status == "more":
                    buf, base, pos = buf[pos:], base + pos, 0
                    chunk = self._f.read(_CHUNK)
                    eof = not chunk
                    buf += chunk
                    continue
                if status == "end":
                    pos, finished = nxt, True
                    break
                pos = nxt
                if page is None:
                    skipped += 1
                else:
                    pages.append(page)
            self._offset = base + pos
            if finished and not pages and not skipped:
                return
            if skipped:
                noun = "page was" if skipped == 1 else "pages were"
                warnings.append(
                    f"{skipped} damaged {noun} skipped (no page time, rate or hex line) "
                    f"before byte {self._offset}"
                )
            yield self._make_batch(pages, skipped, warnings)

    def _next_page(self, buf: bytes, pos: int, eof: bool) -> tuple[tuple[int, bytes, float] | None, str, int]:
        """Cut one page from `buf` at `pos`: (page or None if damaged, status, next pos)."""
        at = buf.find(_MARKER, pos)
        if at < 0:
            # Drop junk we have searched already so a marker-less file cannot grow `buf`.
            keep_from = len(buf) if eof else max(pos, len(buf) - len(_MARKER))
            return None, ("end" if eof else "more"), keep_from
        meta: dict[str, str] = {}
        line_start = at
        for _ in range(_MAX_PAGE_LINES):
            end = buf.find(b"\n", line_start)
            if end < 0 and not eof:
                if len(buf) - line_start > _MAX_LINE:
                    return None, "page", at + len(_MARKER)
                return None, "more", pos
            line = buf[line_start : len(buf) if end < 0 else end].rstrip(b"\r")
            nxt = len(buf) if end < 0 else end + 1
            if line_start > at and b":" not in line and line.strip():
                return self._page(meta, line.strip()), "page", nxt
            key, _, value = line.decode("latin-1").partition(":")
            meta[key.strip()] = value.strip()
            if end < 0:
                return None, "page", nxt
            line_start = nxt
        return None, "page", line_start

    def _page(self, meta: dict[str, str], hexes: bytes) -> tuple[int, bytes, float] | None:
        m = _PAGE_TIME.fullmatch(meta.get("Page Time", ""))
        if m is None:
            return None
        y, mo, d, h, mi, s, ms = (int(v) for v in m.groups())
        if not 1970 <= y <= 2200:  # outside int64 ns (or before the epoch): a damaged page
            return None
        try:
            wall = dt.datetime(y, mo, d, h, mi, s, int(ms) * 1000)
        except ValueError:
            return None
        freq = re.match(r"\d+(?:\.\d+)?", meta.get("Measurement Frequency", ""))
        fs = float(freq.group()) if freq else self._freq
        if not 0.01 <= fs <= 100_000:
            return None
        local_ns = (wall - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1) * 1000
        return local_ns, hexes, fs

    def _make_batch(
        self, pages: list[tuple[int, bytes, float]], skipped: int, warnings: list[str]
    ) -> SampleBatch:
        """Decode pages all at once; times are page time + i / fs."""
        hexes = b"".join(h[: len(h) - len(h) % 12] for _, h, _ in pages)
        values3, ok = decode_hex_samples(hexes, self._gains, self._offsets)
        per_page = np.array([len(h) // 12 for _, h, _ in pages], dtype=np.int64)
        page_t0 = np.repeat(np.array([p[0] for p in pages], dtype=np.int64), per_page)
        page_fs = np.repeat(np.array([p[2] for p in pages]), per_page)
        first = np.repeat(np.cumsum(per_page) - per_page, per_page)
        i = np.arange(per_page.sum()) - first
        local = page_t0 + np.rint(i * (1e9 / page_fs)).astype(np.int64)
        bad = int((~ok).sum())
        if bad:
            skipped += bad
            warnings.append(f"{bad} samples with non-hex characters were skipped")
        total = int(ok.sum())
        values = np.full((total, 9), np.nan, dtype=np.float32)
        values[:, :3] = values3[ok]
        index = np.arange(self._samples_done, self._samples_done + total, dtype=np.int64)
        self._samples_done += total
        return SampleBatch(
            ranges=self._ranges(),
            sample_index=index,
            t_ns=local_to_utc_ns(local[ok], self._tz),
            values=values,
            end_offset=self._offset,
            rows_skipped=skipped,
            warnings=warnings,
            state={},
        )
