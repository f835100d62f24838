"""Benchmark: `imuflow upload` of a 2M-row CSV against `psql \\copy` of the same file (issue 18).

The peer is what a user who only wants the samples in Postgres would run: a plain table
with the file's 7 columns (time as double precision, six values as real), no index, and
`psql -c "\\copy t FROM file CSV HEADER"`. imuflow is timed as a whole process: the
`imuflow upload FILE` console script from start until it exits 0 on `completed` (the
upload, ingest's hashing, the Kafka hop, parsing, COPY into imu_samples with checkpoints,
the progress events and the SSE hop to the CLI). Both run on the same embedded Postgres,
in interleaved pairs whose order alternates; each pair gets its own file (distinct
content, so ingest's duplicate check never short-circuits a run). CPU seconds of every
process (Postgres and the broker included) are summed per side from psutil.

`python -m benchmarks.psql_peer [pairs]`
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.csv as pacsv

from benchmarks.common import Table, show
from benchmarks.end_to_end import parser_ready
from benchmarks.stack import EmbeddedStack

ROWS = 2_000_000
PAIRS = 5
TARGET = 0.8  # issue 18: imuflow <= 0.8x psql's time
HEADER = (
    "Time (s),Accelerometer X (g),Accelerometer Y (g),Accelerometer Z (g),"
    "Gyroscope X (deg/s),Gyroscope Y (deg/s),Gyroscope Z (deg/s)\n"
)
PEER_TABLE = (
    "CREATE TABLE IF NOT EXISTS peer_samples (t double precision, ax real, ay real, az real, "
    "gx real, gy real, gz real)"
)
IMUFLOW = Path(sys.executable).with_name("imuflow")


def synthesise7(path: Path, seed: int, rows: int = ROWS) -> None:
    """A 100 Hz recording of time + accelerometer + gyroscope; `seed` makes it distinct.

    Written by pyarrow's CSV writer (float32 values in their shortest form), ~10x faster
    than np.savetxt, so a 20M-row file takes seconds."""
    rng = np.random.default_rng(seed)
    with path.open("wb") as out:
        out.write(HEADER.encode())
        for start in range(0, rows, 1_000_000):
            n = min(1_000_000, rows - start)
            columns = [pa.array((start + np.arange(n)) / 100.0)]
            columns += [pa.array(rng.normal(0, 1, n).astype(np.float32)) for _ in range(3)]
            columns += [pa.array(rng.normal(0, 30, n).astype(np.float32)) for _ in range(3)]
            table = pa.Table.from_arrays(columns, names=[f"c{i}" for i in range(7)])
            pacsv.write_csv(table, out, pacsv.WriteOptions(include_header=False))


def _stack_cpu(stack: EmbeddedStack) -> float:
    """CPU seconds so far of every server and service process (not this client)."""
    used = stack.cpu_seconds()
    return sum(v for k, v in used.items() if k != "bench client")


def _timed(cmd: list[str], env: dict[str, str], stack: EmbeddedStack) -> tuple[float, float]:
    """Wall seconds of `cmd` and CPU seconds of it plus every stack process meanwhile."""
    before = _stack_cpu(stack)
    t0 = time.perf_counter()
    proc = psutil.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = proc.communicate()
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {err.decode()[-500:]}")
    return seconds, _stack_cpu(stack) - before + _children_cpu()


_last_children = 0.0


def _children_cpu() -> float:
    """CPU seconds of the child that just exited (RUSAGE_CHILDREN grows by it)."""
    global _last_children
    ru = os.times()
    total = ru.children_user + ru.children_system
    delta, _last_children = total - _last_children, total
    return delta


async def _pairs(stack: EmbeddedStack, pairs: int) -> list[Table]:
    assert stack.pg is not None
    await parser_ready(stack, True)
    url = stack.pg.url
    await asyncio.to_thread(subprocess.run, ["psql", url, "-qc", PEER_TABLE], check=True, capture_output=True)
    env = {
        **os.environ,
        "IMUFLOW_INGEST_URL": stack.ingest_url,
        "IMUFLOW_PROGRESS_URL": stack.progress_url,
        "IMUFLOW_TOKEN": stack.token,
    }
    _children_cpu()
    wall: dict[str, list[float]] = {"imuflow": [], "psql": []}
    cpu: dict[str, list[float]] = {"imuflow": [], "psql": []}
    ratios: list[float] = []
    mb = 0.0
    load_before = os.getloadavg()[0]
    for pair in range(pairs):
        path = stack.dir / f"peer-{pair}.csv"
        await asyncio.to_thread(synthesise7, path, 1000 + pair)
        mb = path.stat().st_size / 1e6
        sides = {
            "imuflow": [str(IMUFLOW), "upload", str(path)],
            "psql": ["psql", url, "-qc", f"\\copy peer_samples FROM '{path}' CSV HEADER"],
        }
        order = ["imuflow", "psql"] if pair % 2 == 0 else ["psql", "imuflow"]
        got: dict[str, float] = {}
        for side in order:
            seconds, used = await asyncio.to_thread(_timed, sides[side], env, stack)
            wall[side].append(seconds)
            cpu[side].append(used)
            got[side] = seconds
        ratios.append(got["imuflow"] / got["psql"])
        print(
            f"pair {pair + 1}: imuflow {got['imuflow']:.2f} s, psql {got['psql']:.2f} s, "
            f"ratio {ratios[-1]:.2f}",
            flush=True,
        )
        path.unlink()
    ratio = statistics.median(ratios)
    met = "met" if ratio <= TARGET else "missed"
    rows = [
        [
            side,
            statistics.median(wall[side]),
            ROWS / statistics.median(wall[side]),
            statistics.median(cpu[side]),
            " / ".join(f"{t:.2f}" for t in wall[side]),
        ]
        for side in ("imuflow", "psql")
    ]
    return [
        Table(
            f"imuflow upload vs psql \\copy: {ROWS:,}-row CSV ({mb:.0f} MB, 7 columns), "
            f"{pairs} interleaved pairs",
            ["side", "median s", "rows/s", "CPU s (all processes)", "runs (s)"],
            rows,
            notes=[
                f"target imuflow <= {TARGET}x psql: median of the pairs' ratios "
                f"{ratio:.2f}x ({met}); ratios " + " / ".join(f"{r:.2f}" for r in ratios),
                "imuflow: the `imuflow upload FILE` process until it exits on `completed` (samples "
                "committed with their checkpoints, progress shown); psql: `\\copy` into a plain "
                "7-column table (double precision + 6 real), no index, on the same Postgres.",
                "CPU s: the side's own process plus every stack process (Postgres, broker, ingest, "
                "parser, progress) while it ran.",
                f"load average {load_before:.2f} before the pairs, {os.getloadavg()[0]:.2f} after (2 cores).",
            ],
        )
    ]


async def _run(pairs: int) -> list[Table]:
    async with EmbeddedStack() as stack:
        await stack.start("front", services=("ingest", "progress"))
        return show(await _pairs(stack, pairs))


def run(pairs: int = PAIRS) -> list[Table]:
    """Measure on a fresh embedded stack."""
    return asyncio.run(_run(pairs))


def main() -> None:
    """Measure and print."""
    run(int(sys.argv[1]) if len(sys.argv) > 1 else PAIRS)


if __name__ == "__main__":
    main()
