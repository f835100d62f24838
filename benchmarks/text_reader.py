"""Benchmark: our text reader (all checks) vs pyarrow.csv and pandas on a 2M-row CSV.

Synthesises a generic CSV (time + 9 IMU columns, units in the header) once in a temp dir,
then prints the median of 3 runs as samples/s and MB/s. pyarrow runs single-threaded, as
our reader does. Run from the repo root: `python -m benchmarks.text_reader`.
"""

from __future__ import annotations

import importlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv

from benchmarks.common import RUNS, Table, show
from services.parser.formats.base import ReadOptions
from services.parser.formats.registry import detect_format, make_reader

ROWS = 2_000_000
BATCH = 50_000
HEADER = (
    "Time (s),Gyroscope X (deg/s),Gyroscope Y (deg/s),Gyroscope Z (deg/s),"
    "Accelerometer X (g),Accelerometer Y (g),Accelerometer Z (g),"
    "Magnetometer X (uT),Magnetometer Y (uT),Magnetometer Z (uT)\n"
)


def synthesise(path: Path, rows: int = ROWS) -> None:
    """Write `rows` rows at 100 Hz with realistic magnitudes, in slices to bound memory."""
    rng = np.random.default_rng(0)
    with path.open("w") as out:
        out.write(HEADER)
        for start in range(0, rows, 200_000):
            n = min(200_000, rows - start)
            block = np.empty((n, 10))
            block[:, 0] = (start + np.arange(n)) / 100.0
            block[:, 1:4] = rng.normal(0, 30, (n, 3))
            block[:, 4:7] = rng.normal(0, 1, (n, 3))
            block[:, 7:10] = rng.normal(0, 40, (n, 3))
            np.savetxt(out, block, fmt=["%.4f"] + ["%.7g"] * 9, delimiter=",")


def ours(path: Path) -> int:
    """Read every batch with the production reader."""
    with path.open("rb") as f:
        reader = make_reader(detect_format(f.read(65536), path.name))
        reader.open(f, ReadOptions(filename=path.name), None)
        return sum(len(b) for b in reader.batches(lambda: BATCH))


def arrow(path: Path) -> int:
    """pyarrow.csv.read_csv, one thread."""
    opts = pacsv.ReadOptions(use_threads=False)
    return int(pacsv.read_csv(path, read_options=opts).num_rows)


def pandas_csv(path: Path) -> int:
    """pandas.read_csv with its default C engine."""
    pd = importlib.import_module("pandas")  # optional, so not a typed import
    return len(pd.read_csv(path))


def measure(fn: Callable[[Path], int], path: Path) -> tuple[float, int]:
    """Median wall time of the runs and the row count."""
    times, rows = [], 0
    for _ in range(RUNS):
        t0 = time.perf_counter()
        rows = fn(path)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), rows


def run() -> list[Table]:
    """Synthesise the file, time each reader side by side, return the table."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "generic.csv"
        synthesise(path)
        mb = path.stat().st_size / 1e6
        table = Table(
            f"Text parsing: {ROWS:,}-row generic CSV ({mb:.0f} MB, 9 IMU columns), one thread each",
            ["reader", "median s", "samples/s", "MB/s"],
            notes=[f"median of {RUNS} runs; ours reads batches of {BATCH:,} with every check on."],
        )
        runs: list[tuple[str, Callable[[Path], int]]] = [
            ("imuflow text reader (all checks)", ours),
            ("pyarrow.csv.read_csv (1 thread)", arrow),
        ]
        try:
            importlib.import_module("pandas")
        except ImportError:
            table.notes.append("pandas is not installed: its row is skipped (pip install -e '.[dev]').")
        else:
            runs.append(("pandas.read_csv (C engine)", pandas_csv))
        for name, fn in runs:
            secs, rows = measure(fn, path)
            assert rows == ROWS, (name, rows)
            table.rows.append([name, secs, rows / secs, mb / secs])
        return show([table])


def main() -> None:
    """Measure and print."""
    run()


if __name__ == "__main__":
    main()
