"""Record real batch-timing traces of the parser under changing speed, for the ETA harness.

Runs the production text reader with the adaptive BatchSizer on a synthesised generic CSV
and stores every batch in Postgres the way the parser does (a checkpoint UPDATE plus a
binary COPY in one transaction), timing each batch as services/parser/job.py does. A
scenario disturbs the run part-way through with something real and, like what a user
meets, lasting: a second parse of the same file that runs on to the end, busy-loop
processes on every core that keep running, reads throttled from then on (a slow disk), a
table lock held by another connection (a stall, the one transient), busy loops that stop
half-way (a speed-up). Record on a quiet machine, so that the only disturbance in a trace
is its scenario's (the header keeps the load average at the start). Each run writes one JSON line per batch to
benchmarks/eta/traces/<scenario>[-<tag>].jsonl, after a header line describing the run.

    python -m benchmarks.eta.record [--rows N] [--tag 2] [--out DIR] [--churn SEED]
                                    [--database-url URL] [SCENARIO ...]

`--churn SEED` adds a background load that comes and goes (busy loops on a random number
of cores, changing every few seconds): a shared server, as in the noisy-machine set.

The URL defaults to IMUFLOW_DATABASE_URL, else postgresql://postgres@127.0.0.1:5432/postgres;
the traces go to a database `imuflow_eta_traces` on that server. The stored traces are
20M rows (~2 GB, the default), 40-100 s per run on a quiet 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

import asyncpg

from benchmarks.text_reader import synthesise
from services.parser import pgcopy
from services.parser.batching import BatchSizer
from services.parser.formats.base import ReadOptions
from services.parser.formats.registry import detect_format, make_reader
from tests.servers import with_database

TRACES = Path(__file__).parent / "traces"
DB_NAME = "imuflow_eta_traces"
SCENARIOS = ("steady", "second_job", "cpu_contention", "slow_disk", "stall", "speedup")
DDL = """
CREATE TABLE IF NOT EXISTS eta_samples (
    file_id uuid NOT NULL, sample_index bigint NOT NULL, t_ns bigint,
    ax real, ay real, az real, gx real, gy real, gz real, mx real, my real, mz real, sensor text);
CREATE INDEX IF NOT EXISTS eta_samples_file_idx ON eta_samples (file_id, sample_index);
CREATE TABLE IF NOT EXISTS eta_checkpoints (file_id uuid PRIMARY KEY, batch int, samples bigint);
"""
Hook = Callable[[float, float], Awaitable[None]]


class Throttled:
    """A file whose reads sleep to a byte rate while `limit` (bytes/s) is set: a slow disk."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.limit: float | None = None

    def read(self, n: int = -1) -> bytes:
        """Read, then sleep as long as the throttled disk would have taken."""
        data = self._f.read(n)
        if self.limit:
            time.sleep(len(data) / self.limit)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        """Delegate to the real file."""
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        """Delegate to the real file."""
        return self._f.tell()


async def parse(
    path: Path, url: str, hook: Hook | None = None, throttle: Throttled | None = None
) -> list[dict[str, Any]]:
    """Parse `path` into Postgres batch by batch; `hook(fraction, elapsed)` runs after each batch."""
    conn = await asyncpg.connect(url)
    file_id = uuid.uuid4()
    await conn.execute("INSERT INTO eta_checkpoints VALUES ($1, 0, 0)", file_id)
    raw = path.open("rb")
    reader = make_reader(detect_format(raw.read(65536), path.name))
    raw.seek(0)
    source = throttle if throttle is not None else raw
    if throttle is not None:
        throttle._f = raw
    info = reader.open(cast(BinaryIO, source), ReadOptions(filename=path.name), None)
    sizer = BatchSizer(50_000)
    batches = reader.batches(sizer)
    rows: list[dict[str, Any]] = []
    done = 0
    start = time.perf_counter()
    try:
        while True:
            t0 = time.perf_counter()
            batch = await asyncio.to_thread(next, batches, None)
            if batch is None:
                break
            done += len(batch)
            async with conn.transaction():
                await conn.execute(
                    "UPDATE eta_checkpoints SET batch = batch + 1, samples = $2 WHERE file_id = $1",
                    file_id,
                    done,
                )
                await conn.copy_to_table(
                    "eta_samples",
                    source=io.BytesIO(pgcopy.encode(file_id, batch)),
                    columns=list(pgcopy.COLUMNS),
                    format="binary",
                )
            seconds = time.perf_counter() - t0
            sizer.observe(len(batch), seconds)
            now = time.perf_counter() - start
            rows.append(
                {
                    "t": round(now, 4),
                    "batch_seconds": round(seconds, 4),
                    "samples": len(batch),
                    "bytes": batch.end_offset,
                }
            )
            if hook is not None:
                await hook(batch.end_offset / info.bytes_total, now)
    finally:
        raw.close()
        await conn.close()
    return rows


def _busy() -> None:
    while True:
        pass


def _second_job(path: str, url: str) -> None:
    asyncio.run(parse(Path(path), url))


class Disturbance:
    """What a scenario does to the run, driven by the fraction of bytes parsed."""

    def __init__(self, scenario: str, path: Path, url: str, throttle: Throttled) -> None:
        self.scenario, self.path, self.url, self.throttle = scenario, path, url, throttle
        self.procs: list[multiprocessing.Process] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.started = False
        self.events: list[dict[str, Any]] = []

    def _note(self, what: str, elapsed: float) -> None:
        self.events.append({"at": round(elapsed, 3), "what": what})

    def _busy_loops(self) -> None:
        for _ in range(os.cpu_count() or 2):
            p = multiprocessing.Process(target=_busy, daemon=True)
            p.start()
            self.procs.append(p)

    def _stop_procs(self) -> None:
        for p in self.procs:
            p.kill()
            p.join()
        self.procs.clear()

    async def begin(self) -> None:
        """Disturbances that start with the run."""
        if self.scenario == "speedup":
            self._busy_loops()
            self._note("busy loops on every core", 0.0)

    async def __call__(self, fraction: float, elapsed: float) -> None:
        """Run after every batch."""
        s = self.scenario
        if s == "second_job" and not self.started and fraction >= 0.25:
            p = multiprocessing.Process(target=_second_job, args=(str(self.path), self.url), daemon=True)
            p.start()
            self.procs.append(p)
            self._note("second parse of the file starts", elapsed)
        elif s == "cpu_contention" and not self.started and fraction >= 0.2:
            # Another CPU-bound program starts and keeps running to the end.
            self._busy_loops()
            self._note("busy loops on every core, to the end", elapsed)
        elif s == "slow_disk" and not self.started and fraction >= 0.3:
            # Reads slow down for good (a degraded or contended disk), not just for a while.
            self.throttle.limit = 0.4 * (fraction * self.path.stat().st_size / elapsed)
            self._note(f"reads throttled to {self.throttle.limit / 1e6:.1f} MB/s, to the end", elapsed)
        elif s == "stall" and not self.started and fraction >= 0.4:
            self.tasks.append(asyncio.create_task(self._lock(6.0)))
            self._note("another connection locks the table for 6 s", elapsed)
        elif s == "speedup" and self.procs and fraction >= 0.5:
            self._stop_procs()
            self._note("busy loops stopped", elapsed)
        self.started = self.started or bool(self.events)

    async def _lock(self, seconds: float) -> None:
        conn = await asyncpg.connect(self.url)
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE eta_samples IN ACCESS EXCLUSIVE MODE")
                await asyncio.sleep(seconds)
        finally:
            await conn.close()

    async def end(self) -> None:
        """Stop whatever is still running."""
        self._stop_procs()
        for task in self.tasks:
            await task


class Churn:
    """A shared, busy machine: busy loops on a random number of cores, changing every few seconds.

    Stands in for other people's work on the same server (the noisy-machine traces), so that
    such a set can be recorded again on demand; seeded, so a run can be repeated.
    """

    MEAN_HOLD = 5.0  # seconds between changes, on average (exponential)

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.procs: list[multiprocessing.Process] = []
        self.next_change = 0.0

    def __call__(self, elapsed: float) -> None:
        """Run after every batch: change the load once its hold time is over."""
        if elapsed < self.next_change:
            return
        self.stop()
        for _ in range(self.rng.randint(0, os.cpu_count() or 2)):
            p = multiprocessing.Process(target=_busy, daemon=True)
            p.start()
            self.procs.append(p)
        self.next_change = elapsed + min(self.rng.expovariate(1 / self.MEAN_HOLD), 4 * self.MEAN_HOLD)

    def stop(self) -> None:
        """Kill the busy loops."""
        for p in self.procs:
            p.kill()
            p.join()
        self.procs.clear()


async def record(
    scenario: str,
    path: Path,
    url: str,
    rows: int,
    tag: str = "",
    out_dir: Path = TRACES,
    churn_seed: int | None = None,
) -> Path:
    """Run one scenario and write its trace."""
    admin = await asyncpg.connect(url)
    await admin.execute("TRUNCATE eta_samples, eta_checkpoints")
    await admin.execute("CHECKPOINT")
    await admin.close()
    load = os.getloadavg()[0]
    throttle = Throttled(cast(BinaryIO, None))
    disturb = Disturbance(scenario, path, url, throttle)
    churn = Churn(churn_seed) if churn_seed is not None else None

    async def after_batch(fraction: float, elapsed: float) -> None:
        if churn is not None:
            churn(elapsed)
        await disturb(fraction, elapsed)

    await disturb.begin()
    try:
        trace = await parse(path, url, after_batch, throttle)
    finally:
        await disturb.end()
        if churn is not None:
            churn.stop()
    trace_bytes = await asyncio.to_thread(lambda: path.stat().st_size)
    header = {
        "scenario": scenario,
        "rows": rows,
        "bytes_total": trace_bytes,
        "cores": os.cpu_count(),
        "load_average_at_start": round(load, 2),
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "events": disturb.events,
    }
    if churn is not None:
        header["background"] = (
            f"churn: busy loops on 0-{os.cpu_count()} cores, "
            f"changing every ~{churn.MEAN_HOLD:.0f} s (seed {churn.seed})"
        )
    out = out_dir / f"{scenario}{'-' + tag if tag else ''}.jsonl"
    out.write_text("".join(json.dumps(line) + "\n" for line in [header, *trace]))
    return out


async def main() -> None:
    """Record the scenarios named on the command line (default: all)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", help=f"any of {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--tag", default="", help="appended to the trace names, to keep several runs")
    parser.add_argument("--out", type=Path, default=TRACES, help="directory for the traces")
    parser.add_argument(
        "--churn",
        type=int,
        metavar="SEED",
        help="also load the machine with busy loops that come and go (a shared server), seeded",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("IMUFLOW_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    args = parser.parse_args()
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    admin = await asyncpg.connect(args.database_url)
    if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DB_NAME):
        await admin.execute(f"CREATE DATABASE {DB_NAME}")
    await admin.close()
    url = with_database(args.database_url, DB_NAME)
    conn = await asyncpg.connect(url)
    await conn.execute(DDL)
    await conn.close()
    path = Path("/tmp") / f"imuflow-eta-{args.rows}.csv"
    if not path.exists():
        synthesise(path, args.rows)
    for scenario in args.scenarios or SCENARIOS:
        seed = None if args.churn is None else args.churn + SCENARIOS.index(scenario)
        out = await record(scenario, path, url, args.rows, args.tag, args.out, seed)
        print(f"{scenario}: {out}")


if __name__ == "__main__":
    asyncio.run(main())
