"""Benchmark: our text reader (all checks) vs pyarrow.csv and pandas on a 2M-row CSV.

Synthesises a generic CSV (time + 9 IMU columns, units in the header) once in a temp dir,
then prints the median of 5 interleaved rounds as samples/s and MB/s, wall and CPU time
against pyarrow's in the same run, and the load average. pyarrow parses on one thread (it
still reads ahead on an I/O thread), as our reader does (its chunker reads ahead too).
Run from the repo root: `python -m benchmarks.text_reader`.
"""

from __future__ import annotations

import importlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv

from benchmarks.common import Table, show
from services.parser.formats.base import ReadOptions
from services.parser.formats.registry import detect_format, make_reader

ROWS = 2_000_000
BATCH = 50_000
ROUNDS = 5
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


def measure(fn: Callable[[Path], int], path: Path) -> tuple[float, float, int]:
    """Wall and CPU seconds of one run and the row count."""
    t0, c0 = time.perf_counter(), time.process_time()
    rows = fn(path)
    return time.perf_counter() - t0, time.process_time() - c0, rows


def run() -> list[Table]:
    """Synthesise the file, time each reader in interleaved rounds, return the table."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "generic.csv"
        synthesise(path)
        mb = path.stat().st_size / 1e6
        table = Table(
            f"Text parsing: {ROWS:,}-row generic CSV ({mb:.0f} MB, 9 IMU columns), one thread each",
            [
                "reader",
                "median s",
                "median CPU s",
                "samples/s",
                "MB/s",
                "vs pyarrow (wall)",
                "vs pyarrow (CPU)",
            ],
            notes=[
                f"{ROUNDS} interleaved rounds (each reader once per round, one warm-up round first); "
                f"ours reads batches of {BATCH:,} with every check on. CPU s is this process's "
                "(user + system): steadier than wall time on the shared machine."
            ],
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
        load_before = os.getloadavg()[0]
        walls: dict[str, list[float]] = {name: [] for name, _ in runs}
        cpus: dict[str, list[float]] = {name: [] for name, _ in runs}
        for round_ in range(ROUNDS + 1):
            for name, fn in runs:
                wall, cpu, rows = measure(fn, path)
                assert rows == ROWS, (name, rows)
                if round_:  # the first round warms caches and imports
                    walls[name].append(wall)
                    cpus[name].append(cpu)
        arrow_wall, arrow_cpu = statistics.median(walls[runs[1][0]]), statistics.median(cpus[runs[1][0]])
        for name, _ in runs:
            secs, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
            table.rows.append(
                [
                    name,
                    secs,
                    cpu,
                    ROWS / secs,
                    mb / secs,
                    f"{arrow_wall / secs:.2f}x",
                    f"{arrow_cpu / cpu:.2f}x",
                ]
            )
        table.notes.append(
            f"load average {load_before:.2f} before the rounds, {os.getloadavg()[0]:.2f} after (2 cores); "
            "wall time counts our read-ahead thread's overlap, CPU time counts both threads."
        )
        return show([table])


def main() -> None:
    """Measure and print."""
    run()


if __name__ == "__main__":
    main()
