"""Benchmark: our .cwa reader (all checks) vs a bare np.frombuffer decode of the same blocks.

Synthesises a ~2M-sample AX3 packed .cwa with valid checksums in a temp dir, then prints
the median of 3 runs as samples/s and MB/s. Run from the repo root:
`python -m benchmarks.binary_reader`.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.common import RUNS, Table, show
from services.parser.formats.base import STANDARD_GRAVITY, ReadOptions
from services.parser.formats.cwa import BLOCK_BYTES, BLOCK_DTYPE, HEADER_BYTES, CwaReader

SAMPLES = 2_000_000
PER_BLOCK = 120


def synthesise(path: Path, n_blocks: int) -> None:
    """Write an MD header and `n_blocks` valid AX3 packed blocks at 100 Hz."""
    rng = np.random.default_rng(0)
    rec = np.zeros(n_blocks, dtype=BLOCK_DTYPE)
    raw = rec.view(np.uint8).reshape(n_blocks, BLOCK_BYTES)
    raw[:, 0:2] = np.frombuffer(b"AX", np.uint8)
    raw[:, 2:4] = np.frombuffer((508).to_bytes(2, "little"), np.uint8)
    rec["sequence"] = np.arange(n_blocks)
    seconds = np.arange(n_blocks) * PER_BLOCK // 100  # 1.2 s per block, whole seconds
    h, m, s = seconds // 3600 % 24, seconds // 60 % 60, seconds % 60
    day = 1 + seconds // 86400
    rec["stamp"] = (24 << 26) | (1 << 22) | (day << 17) | (h << 12) | (m << 6) | s
    rec["rate"], rec["layout"], rec["count"] = 0x4A, 0x30, PER_BLOCK
    rec["ts_offset"] = -((np.arange(n_blocks) * PER_BLOCK) % 100)
    xyz = rng.integers(-300, 300, size=(n_blocks, PER_BLOCK, 3)) & 0x3FF
    rec["packed"] = xyz[..., 0] | xyz[..., 1] << 10 | xyz[..., 2] << 20
    words = raw.view("<u2")
    words[:, -1] = -words[:, :-1].sum(axis=1, dtype=np.uint32) & 0xFFFF
    with path.open("wb") as f:
        f.write((b"MD" + (1020).to_bytes(2, "little")).ljust(HEADER_BYTES, b"\xff"))
        f.write(raw.tobytes())


def run_reader(path: Path) -> int:
    """Our reader with every check, in the worker's default 50k-sample batches."""
    reader = CwaReader()
    n = 0
    with path.open("rb") as f:
        reader.open(f, ReadOptions(timezone="Europe/London"), None)
        for batch in reader.batches(lambda: 50_000):
            n += len(batch)
    return n


def run_bare(path: Path) -> int:
    """Bare decode: whole file at once, packed samples to float32, no checks, no times."""
    buf = path.read_bytes()[HEADER_BYTES:]
    rec = np.frombuffer(buf, dtype=BLOCK_DTYPE)
    v = rec["packed"]
    shift = (v >> 30).astype(np.int32)
    out = np.empty((*v.shape, 3), dtype=np.float32)
    for axis in range(3):
        raw = (((v >> (10 * axis)) & 0x3FF).astype(np.int32) ^ 0x200) - 0x200
        out[..., axis] = (raw << shift).astype(np.float32) * np.float32(STANDARD_GRAVITY / 256)
    return int(out.shape[0] * out.shape[1])


def median_time(fn: Callable[[Path], int], path: Path) -> tuple[float, int]:
    """Median wall time of the runs (after one warm-up), and the samples decoded."""
    n = fn(path)
    times = []
    for _ in range(RUNS):
        t = time.perf_counter()
        fn(path)
        times.append(time.perf_counter() - t)
    return statistics.median(times), n


def run() -> list[Table]:
    """Synthesise, time both decoders side by side, return the table."""
    n_blocks = -(-SAMPLES // PER_BLOCK)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.cwa"
        synthesise(path, n_blocks)
        mb = path.stat().st_size / 1e6
        table = Table(
            f"Binary parsing: Axivity .cwa, {n_blocks:,} blocks, "
            f"{n_blocks * PER_BLOCK:,} samples ({mb:.0f} MB)",
            ["decoder", "median s", "samples/s", "MB/s"],
            notes=[f"median of {RUNS} runs after one warm-up."],
        )
        for name, fn in (("imuflow CwaReader (all checks)", run_reader),
                         ("bare np.frombuffer decode (no checks, no times)", run_bare)):  # fmt: skip
            secs, n = median_time(fn, path)
            table.rows.append([name, secs, n / secs, mb / secs])
        return show([table])


def main() -> None:
    """Measure and print."""
    run()


if __name__ == "__main__":
    main()
