"""Axivity AX3/AX6 `.cwa` reader: 1024-byte `MD` header, then 512-byte `AX` data blocks.

Blocks are fixed-size and self-describing, so a batch is a run of whole blocks read
with one `f.read`, viewed through a structured dtype and decoded without a Python loop.
`end_offset` is always `1024 + 512 * k` (or the file size after a partial last block),
so resuming is a plain seek. A block whose 256 u16 words do not sum to 0 mod 65536, that
is not an `AX` block, or that has an impossible layout or timestamp, is skipped and
counted in `rows_skipped` (blocks, not samples) with a warning naming the blocks.

Times: each block carries a packed device-local timestamp for sample `timestampOffset`.
When the top bit of `deviceFractional` is set its low 15 bits are a fraction of a second
(1/32768 s), and the firmware has shifted `timestampOffset` back by the whole samples that
fraction covers (so old readers stay right); we add them back before using the fraction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

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
from services.parser.formats.localtime import fields_to_local_ns, load_zone, local_to_utc_ns

FORMAT_ID = "cwa"
HEADER_BYTES = 1024
BLOCK_BYTES = 512
_MAGIC_BLOCK = 0x5841  # "AX" read as a little-endian u16
_MAX_BLOCKS_PER_READ = 16384  # 8 MiB: keeps memory flat whatever `target_samples` says

# Layout byte (offset 25) = axes << 4 | bytes per sample; value = samples per block.
# 0x92 (AX6 with a magnetometer) holds 26 samples of gx..gz, ax..az, mx..mz in 480 bytes.
_LAYOUTS = {0x30: 120, 0x32: 80, 0x62: 40, 0x92: 26}
# Magnetometer LSB of 9-axis blocks: 16 per µT (OpenMovement's cwa_metadata.py `magUnit`).
_MAG_PER_UT = 16.0
# Gyro full scale when the block's scale bits are 0 (firmware that leaves them unset):
# 2000 dps, OpenMovement's default (cwa_metadata.py `gyroRange`); else 8000 >> code.
_DEFAULT_GYRO_DPS = 2000


def gyro_full_scale_dps(light: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Full-scale dps per block from bits 10-12 of `light`."""
    code = (light >> 10) & 7
    return np.where(code == 0, _DEFAULT_GYRO_DPS, 8000 >> code)


BLOCK_DTYPE = np.dtype(
    {
        "names": ["magic", "frac", "session", "sequence", "stamp", "light", "rate", "layout",
                  "ts_offset", "count", "packed", "i16"],
        "formats": ["<u2", "<u2", "<u4", "<u4", "<u4", "<u2", "u1", "u1", "<i2", "<u2",
                    ("<u4", 120), ("<i2", 240)],
        "offsets": [0, 4, 6, 10, 14, 18, 24, 25, 26, 28, 30, 30],
        "itemsize": BLOCK_BYTES,
    }
)  # fmt: skip


def sniff(head: bytes, filename: str) -> bool:
    """True when `head` starts like a .cwa file (MD header, first AX block if present)."""
    if head[:2] != b"MD":
        return False
    if len(head) >= HEADER_BYTES + 2:
        return head[HEADER_BYTES : HEADER_BYTES + 2] == b"AX"
    return filename.lower().endswith(".cwa") or len(head) >= 4


def _block_checksum_ok(blocks: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    words = blocks.view("<u2").reshape(-1, BLOCK_BYTES // 2)
    ok: npt.NDArray[np.bool_] = (words.sum(axis=1, dtype=np.uint32) & 0xFFFF) == 0
    return ok


def _describe_blocks(label: str, numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:10])
    more = f" and {len(numbers) - 10} more" if len(numbers) > 10 else ""
    noun = "block" if len(numbers) == 1 else "blocks"
    return f"{len(numbers)} {noun} {label} and were skipped (data blocks {shown}{more})"


def _sign10_at(v: npt.NDArray[np.uint32], low_bit: int) -> npt.NDArray[np.int32]:
    """The signed 10-bit field at `low_bit` of each word: shifted to the top, then back
    down arithmetically, so the sign comes for free (two passes instead of four)."""
    top = (v << np.uint32(22 - low_bit)).view(np.int32)
    return np.right_shift(top, 22, out=top)


def decode_block_values(
    rec: npt.NDArray[Any], layout: int, out: npt.NDArray[np.float32] | None = None
) -> npt.NDArray[np.float32]:
    """Decode same-layout blocks into (blocks, samples_per_block, 9) canonical floats.

    `out`, when given, is written in place (the batch's own values, when its blocks are
    one run of full blocks): no temporary array and no gather into the batch afterwards.
    """
    nb, spb = rec.shape[0], _LAYOUTS[layout]
    if out is None:
        out = np.empty((nb, spb, 9), dtype=np.float32)
    g = np.float32(STANDARD_GRAVITY)
    if layout == 0x30:
        out[:, :, 3:] = np.nan
        v = rec["packed"]
        # 1/256 g << exponent, as one float factor per sample: scaling by a power of two
        # is exact, so this equals converting (raw << exponent) and multiplying.
        scale = (g / 256 * np.exp2(np.arange(4, dtype=np.float32)))[v >> 30]
        for axis in range(3):  # x bits 0-9, y 10-19, z 20-29
            np.multiply(_sign10_at(v, 10 * axis), scale, out=out[:, :, axis],
                        dtype=np.float32, casting="unsafe")  # fmt: skip
    elif layout == 0x32:
        out[:, :, 3:] = np.nan
        raw = rec["i16"][:, :240].reshape(nb, spb, 3)
        np.multiply(raw, g / 256, out=out[:, :, :3], dtype=np.float32, casting="unsafe")
    else:  # 0x62 / 0x92: gx, gy, gz, ax, ay, az[, mx, my, mz], scales in the top bits of `light`
        axes = layout >> 4
        raw = rec["i16"][:, : spb * axes].reshape(nb, spb, axes).astype(np.float32)
        light = rec["light"].astype(np.int64)
        accel_lsb = np.float32(1) / (1 << (8 + ((light >> 13) & 7))).astype(np.float32)
        gyro_dps = gyro_full_scale_dps(light).astype(np.float32) / np.float32(32768)
        out[:, :, :3] = raw[:, :, 3:6] * (accel_lsb * g)[:, None, None]
        out[:, :, 3:6] = raw[:, :, :3] * (gyro_dps * np.float32(np.pi / 180))[:, None, None]
        if axes == 9:
            out[:, :, 6:9] = raw[:, :, 6:9] / np.float32(_MAG_PER_UT)
        else:
            out[:, :, 6:9] = np.nan
    return out


def _ranges(rec: npt.NDArray[Any]) -> dict[str, float] | None:
    """Full scale of the first good block: accel 16 >> (rate >> 6) g; AX6 gyro from `light`."""
    if rec.shape[0] == 0:
        return None
    accel = float((16 >> (int(rec["rate"][0]) >> 6)) * STANDARD_GRAVITY)
    out = dict.fromkeys(("ax", "ay", "az"), accel)
    if int(rec["layout"][0]) in (0x62, 0x92):
        dps = int(gyro_full_scale_dps(rec["light"][:1].astype(np.int64))[0])
        out.update(dict.fromkeys(("gx", "gy", "gz"), float(np.deg2rad(dps))))
    return out


class CwaReader:
    """Streams samples from an Axivity .cwa file in runs of whole 512-byte blocks."""

    format_id = FORMAT_ID

    def __init__(self) -> None:
        self._f: BinaryIO | None = None
        self._tz: dt.tzinfo = dt.UTC
        self._offset = HEADER_BYTES
        self._size = 0
        self._samples_done = 0
        self._spb = 120

    def open(self, f: BinaryIO, options: ReadOptions, resume: ResumePoint | None) -> FileInfo:
        """Check the MD header, learn the layout from the first block, seek to `resume`."""
        self._tz = load_zone(options.timezone)
        f.seek(0, 2)
        self._size = f.tell()
        f.seek(0)
        head = f.read(HEADER_BYTES + BLOCK_BYTES)
        if len(head) < 4 or head[:2] != b"MD":
            raise FormatError("not an Axivity .cwa file: it does not start with an 'MD' header")
        if len(head) < HEADER_BYTES:
            raise FormatError(f"the .cwa file is only {len(head)} bytes, shorter than its 1024-byte header")
        units = {c: "1/256 g" for c in ("ax", "ay", "az")}
        if len(head) == HEADER_BYTES + BLOCK_BYTES and head[HEADER_BYTES:][25] in _LAYOUTS:
            self._spb = _LAYOUTS[head[HEADER_BYTES:][25]]
            if head[HEADER_BYTES:][25] in (0x62, 0x92):
                units = {c: "AX6 accel LSB" for c in ("ax", "ay", "az")}
                units.update({c: "AX6 gyro LSB" for c in ("gx", "gy", "gz")})
            if head[HEADER_BYTES:][25] == 0x92:
                units.update({c: "1/16 uT" for c in ("mx", "my", "mz")})
        self._f = f
        self._offset, self._samples_done = HEADER_BYTES, 0
        if resume is not None:
            off = resume.offset
            aligned = off >= HEADER_BYTES and (off - HEADER_BYTES) % BLOCK_BYTES == 0
            if not (aligned or off == self._size) or off > self._size:
                raise FormatError(f"cannot resume a .cwa file at byte {off}: not a block boundary")
            self._offset, self._samples_done = off, resume.samples_done
        f.seek(self._offset)
        n_blocks = max(0, self._size - HEADER_BYTES) // BLOCK_BYTES
        warnings: tuple[str, ...] = ()
        if n_blocks == 0:
            warnings = ("the .cwa file has a header but no data blocks",)
        return FileInfo(
            format_id=FORMAT_ID,
            bytes_total=self._size,
            sample_count=None,  # only the blocks' own counts (and checksums) make it exact
            sample_count_estimate=n_blocks * self._spb,
            units=units,
            warnings=warnings,
            time_base="epoch",
        )

    def batches(self, target_samples: Callable[[], int]) -> Iterator[SampleBatch]:
        """Yield runs of whole blocks of about `target_samples()` samples each."""
        if self._f is None:
            raise RuntimeError("open() first")
        found = True
        while self._offset < self._size:
            want = -(-max(1, target_samples()) // self._spb)
            # After a batch without one good block, read the most at once: a file of junk
            # reaches the no-sample limit in a few batches, not hundreds of empty ones.
            n = min(max(1, want), _MAX_BLOCKS_PER_READ) if found else _MAX_BLOCKS_PER_READ
            start = self._offset
            buf = self._f.read(n * BLOCK_BYTES)
            if not buf:
                break
            self._offset += len(buf)
            # Peek at the next block: its timestamp fixes the real rate of our last block.
            peek = self._f.read(BLOCK_BYTES) if len(buf) % BLOCK_BYTES == 0 else b""
            self._f.seek(self._offset)
            batch = self._decode(buf, start, peek if len(peek) == BLOCK_BYTES else b"")
            found = len(batch) > 0
            yield batch

    def _decode(self, buf: bytes, start: int, peek: bytes) -> SampleBatch:
        first_block = (start - HEADER_BYTES) // BLOCK_BYTES
        whole = len(buf) // BLOCK_BYTES
        warnings: list[str] = []
        skipped = 0
        if len(buf) % BLOCK_BYTES:
            skipped += 1
            warnings.append(
                f"the file ends with a partial block of {len(buf) % BLOCK_BYTES} bytes "
                "(an interrupted download or recording?); it was skipped"
            )
        raw = np.frombuffer(buf[: whole * BLOCK_BYTES] + peek, dtype=np.uint8)
        rec = raw.view(BLOCK_DTYPE)
        ok = _block_checksum_ok(raw)
        checks: list[tuple[str, npt.NDArray[np.bool_]]] = [("failed their checksum", ~ok)]
        is_ax = rec["magic"] == _MAGIC_BLOCK
        checks.append(("are not AX data blocks", ok & ~is_ax))
        layout_ok = np.isin(rec["layout"], list(_LAYOUTS))
        checks.append(("have an unsupported sample layout", ok & is_ax & ~layout_ok))
        good = ok & is_ax & layout_ok
        spb = np.zeros(rec.shape[0], dtype=np.int64)
        for code, n in _LAYOUTS.items():
            spb[rec["layout"] == code] = n
        count = rec["count"].astype(np.int64)
        rate = 3200.0 / np.exp2(15 - (rec["rate"] & 0x0F).astype(np.float64))
        t0, t_ok = self._block_times(rec, rate)
        bad_count = good & ((count > spb) | ((rec["rate"] & 0x0F) == 0))
        checks.append(("have an impossible sample count or rate", bad_count))
        checks.append(("have an invalid timestamp", good & ~bad_count & ~t_ok))
        good &= ~bad_count & t_ok
        step = self._sample_steps(rec, good, count, t0, rate)[:whole]
        rec, good, count, t0 = rec[:whole], good[:whole], count[:whole], t0[:whole]
        for label, mask in checks:
            numbers = (np.flatnonzero(mask[:whole]) + first_block).tolist()
            if numbers:
                skipped += len(numbers)
                warnings.append(_describe_blocks(label, numbers))
        count = np.where(good, count, 0)
        total = int(count.sum())
        values = np.empty((total, 9), dtype=np.float32)
        t_ns = np.empty(total, dtype=np.int64)
        dest0 = np.cumsum(count) - count
        layouts = rec["layout"]
        for code, n in _LAYOUTS.items():
            sel = np.flatnonzero(good & (layouts == code))
            if sel.size == 0:
                continue
            j = np.arange(n)
            rel = np.rint(j[None, :] * step[sel][:, None]).astype(np.int64)
            lo, hi = int(sel[0]), int(sel[-1]) + 1
            if hi - lo == sel.size and bool((count[lo:hi] == n).all()):
                # The usual batch: one run of full blocks fills a contiguous slice, so
                # decode straight into it (a view of the blocks, no gather or scatter).
                a, b = int(dest0[lo]), int(dest0[lo]) + sel.size * n
                decode_block_values(rec[lo:hi], code, out=values[a:b].reshape(sel.size, n, 9))
                np.add(t0[lo:hi, None], rel, out=t_ns[a:b].reshape(sel.size, n))
                continue
            keep = j[None, :] < count[sel][:, None]
            dest = (dest0[sel][:, None] + j[None, :])[keep]
            values[dest] = decode_block_values(rec[sel], code)[keep]
            t_ns[dest] = (t0[sel][:, None] + rel)[keep]
        index = np.arange(self._samples_done, self._samples_done + total, dtype=np.int64)
        self._samples_done += total
        return SampleBatch(
            ranges=_ranges(rec[good]),
            sample_index=index,
            t_ns=local_to_utc_ns(t_ns, self._tz),
            values=values,
            end_offset=start + len(buf),
            rows_skipped=skipped,
            warnings=warnings,
            state={"next_block": first_block + whole + (1 if len(buf) % BLOCK_BYTES else 0)},
        )

    @staticmethod
    def _sample_steps(
        rec: npt.NDArray[Any],
        good: npt.NDArray[np.bool_],
        count: npt.NDArray[np.int64],
        t0: npt.NDArray[np.int64],
        rate: npt.NDArray[np.float64],
    ) -> npt.NDArray[np.float64]:
        """Per-block ns between samples: measured to the next block, else the nominal rate.

        Real AX3 clocks run a percent or two off their nominal rate, so spacing samples at
        the nominal rate leaves ~25 ms jumps at 100 Hz block edges. Where the next block is
        good and consecutive we spread this block's samples up to its start instead.
        """
        nominal = 1e9 / rate
        step = nominal.copy()
        if rec.shape[0] < 2:
            return step
        nxt = good[1:] & good[:-1] & (rec["sequence"][1:] == rec["sequence"][:-1] + 1)
        measured = (t0[1:] - t0[:-1]) / np.maximum(count[:-1], 1)
        plausible = nxt & (np.abs(measured - nominal[:-1]) < 0.1 * nominal[:-1])
        step[:-1] = np.where(plausible, measured, nominal[:-1])
        return step

    @staticmethod
    def _block_times(
        rec: npt.NDArray[Any], rate: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        """Local ns of each block's sample 0, and whether the packed date is valid."""
        s = rec["stamp"].astype(np.int64)
        year, month, day = ((s >> 26) & 0x3F) + 2000, (s >> 22) & 0x0F, (s >> 17) & 0x1F
        hour, minute, sec = (s >> 12) & 0x1F, (s >> 6) & 0x3F, s & 0x3F
        whole_ns, valid = fields_to_local_ns(year, month, day, hour * 3600 + minute * 60 + sec)
        valid &= (hour < 24) & (minute < 60) & (sec < 60)
        frac_raw = rec["frac"].astype(np.int64)
        has_frac = (frac_raw & 0x8000) != 0
        frac65536 = np.where(has_frac, (frac_raw & 0x7FFF) << 1, 0)
        # Undo the firmware's backwards-compatible shift of timestampOffset (see module doc).
        ts_offset = rec["ts_offset"].astype(np.int64) + np.where(
            has_frac, np.floor(frac65536 * rate / 65536).astype(np.int64), 0
        )
        frac_ns = (frac65536 * 1_000_000_000) >> 16
        back_ns = np.rint(ts_offset * (1e9 / rate)).astype(np.int64)
        return whole_ns + frac_ns - back_ns, valid
