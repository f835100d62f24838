"""ActiGraph's 12-bit packed accelerometer samples (legacy `activity.bin`, ACTIVITY records).

Samples are three 12-bit two's-complement values written most significant bit first, so
two samples (72 bits) fill exactly 9 bytes; the device writes them in y, x, z order for
ACTIVITY and `activity.bin`, x, y, z for ACTIVITY3. Layout as pygt3x documents it (read,
not copied). Counts are 1/`Acceleration Scale` g; 12-bit devices use 341 per g.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import numpy.typing as npt

from imuflow.archives import BoundedMember
from services.parser.formats.base import STANDARD_GRAVITY, SampleBatch

PAIR_BYTES = 9  # two samples of 36 bits
TWELVE_BIT_SCALE = 341.0  # counts per g of the 12-bit GT3X+ generation
TWELVE_BIT_MAX = 2047  # the largest 12-bit count: full scale
_TICKS_AT_UNIX_EPOCH = 621_355_968_000_000_000  # .NET ticks (100 ns since 0001-01-01)
_MAX_PAIRS_PER_READ = 1 << 20  # 9 MiB of activity.bin per batch at most


def unpack12(data: bytes, order: tuple[int, int, int]) -> npt.NDArray[np.int16]:
    """Whole 36-bit samples of `data` as (n, 3) int16 counts in x, y, z order."""
    n = len(data) * 8 // 36
    arr = np.frombuffer(data, np.uint8)
    if arr.size % 3:
        arr = np.concatenate((arr, np.zeros(3 - arr.size % 3, np.uint8)))
    b = arr.reshape(-1, 3).astype(np.int32)
    vals = np.empty((b.shape[0], 2), np.int32)
    vals[:, 0] = (b[:, 0] << 4) | (b[:, 1] >> 4)
    vals[:, 1] = ((b[:, 1] & 0x0F) << 8) | b[:, 2]
    flat = vals.reshape(-1)[: n * 3]
    signed = np.where(flat > 2047, flat - 4096, flat).reshape(n, 3)
    return np.ascontiguousarray(signed[:, list(order)]).astype(np.int16)


def ticks_to_unix_ns(ticks: int) -> int:
    """A .NET ticks date of info.txt as ns since the Unix epoch (same wall clock)."""
    return (ticks - _TICKS_AT_UNIX_EPOCH) * 100


class LegacyActivity:
    """Streams `activity.bin`: packed samples only, timed from info.txt's Start Date + i/rate."""

    YXZ = (1, 0, 2)  # stored y, x, z: pick x, y, z

    def __init__(self, member: BoundedMember, size: int, start_local_ns: int, rate: float, scale: float,
                 to_utc: Callable[[npt.NDArray[np.int64]], npt.NDArray[np.int64]]) -> None:  # fmt: skip
        self._f, self._size = member, size
        self._start, self._rate, self._scale, self._to_utc = start_local_ns, rate, scale, to_utc

    def batches(self, offset: int, samples_done: int, target: Callable[[], int]) -> Iterator[SampleBatch]:
        """Batches of whole sample pairs from byte `offset` (a multiple of 9) to the end."""
        while offset < self._size:
            pairs = min(_MAX_PAIRS_PER_READ, max(1, -(-target() // 2)))
            buf = self._f.read(pairs * PAIR_BYTES)
            if not buf:
                break
            raw = unpack12(buf, self.YXZ)
            n = raw.shape[0]
            values = np.full((n, 9), np.nan, np.float32)
            values[:, :3] = raw.astype(np.float32) * np.float32(STANDARD_GRAVITY / self._scale)
            index = np.arange(samples_done, samples_done + n, dtype=np.int64)
            local = self._start + np.rint(index * (1e9 / self._rate)).astype(np.int64)
            offset += len(buf)
            samples_done += n
            yield SampleBatch(
                sample_index=index,
                t_ns=self._to_utc(local),
                values=values,
                end_offset=offset,
                state={"activity_bin_offset": offset},
            )
