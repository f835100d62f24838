"""Benchmark: a 2M-sample CSV through the whole embedded stack, and what progress costs.

* End to end: upload through the ingest API until the `completed` SSE event arrives
  (samples stored in Postgres), median of 3, with progress tracking on (checkpoint per
  batch + progress event per batch) and off (the parser run as `benchmarks.untracked_parser`), the
  parser restarted between the two and the runs interleaved (on, off, on, off, ...).
* Checkpoint cadence: for the tracking-on runs, the seconds between consecutive batch
  checkpoints (`streaming_processing_logs.completed_at`), which the adaptive batch sizer
  aims at about 0.75 s (docs/eta.md).
* Uploads in S3 beside local disk (benchmarks/s3_end_to_end.py): the same file with
  `IMUFLOW_STORAGE_URL` on an embedded SeaweedFS, interleaved with local runs.
* Batch committed -> SSE received: 10 files processing at once; for every progress event
  a client receives, its `last_checkpoint_at` (the parser's batch-completed time) against
  the receive time on the same clock.

`python -m benchmarks.end_to_end`
"""

from __future__ import annotations

import asyncio
import itertools
import os
import statistics
import sys
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import RUNS, Table, percentile, show
from benchmarks.stack import EmbeddedStack, cancel_quietly, sse_events
from benchmarks.text_reader import synthesise
from imuflow import db
from imuflow.stack.objectstore import start_object_store

SAMPLES = 2_000_000
UNTRACKED_PARSER = (sys.executable, "-m", "benchmarks.untracked_parser")  # tracking off
LATENCY_FILES = 10
LATENCY_SAMPLES = 400_000


class Watcher:
    """Every event of the bench user's `/api/events` stream, by file id."""

    def __init__(self, stack: EmbeddedStack, client: httpx.AsyncClient) -> None:
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self.changed = asyncio.Condition()
        self._task = asyncio.create_task(self._read(stack, client), name="bench-sse")

    async def _read(self, stack: EmbeddedStack, client: httpx.AsyncClient) -> None:
        async for event in sse_events(client, f"{stack.progress_url}/api/events", stack.headers):
            async with self.changed:
                self.events.append(event)
                self.changed.notify_all()

    async def until_done(self, file_ids: set[str], timeout: float = 600) -> None:
        """Wait until every file has had its terminal event; raise if one failed."""

        def done() -> bool:
            if self._task.done():
                self._task.result()
            finished = {r["id"] for _, kind, r in self.events if kind in ("completed", "failed", "cancelled")}
            return file_ids <= finished

        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(done), timeout)
        for _, kind, record in self.events:
            if record["id"] in file_ids and kind in ("failed", "cancelled"):
                raise RuntimeError(f"job {record['id']} ended {kind}: {record.get('error_message')}")

    async def close(self) -> None:
        """Stop reading."""
        await cancel_quietly(self._task)


async def parser_ready(stack: EmbeddedStack, tracking: bool, extra: Mapping[str, str] | None = None) -> None:
    """(Re)start the parser with progress tracking on or off; return once it takes jobs."""
    if "parser" in stack.supervisors:
        await stack.stop("parser")
    argv = None if tracking else {"parser": UNTRACKED_PARSER}
    await stack.start("parser", services=("parser",), env=extra, argv=argv)
    # Healthy is not yet in the consumer group (Tansu takes seconds for a first join):
    # one small job first, so the measured runs see a parser that is ready.
    warmup = stack.dir / "warmup.csv"
    if not warmup.exists():
        await asyncio.to_thread(synthesise, warmup, 1_000)
    async with httpx.AsyncClient(trust_env=False) as client:
        watcher = Watcher(stack, client)
        try:
            await asyncio.sleep(0.2)
            record = await stack.upload(client, warmup)
            await watcher.until_done({record["id"]})
        finally:
            await watcher.close()


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


async def _one_file(
    stack: EmbeddedStack, client: httpx.AsyncClient, path: Path
) -> tuple[float, dict[str, Any]]:
    """Seconds from upload start to the `completed` event, and the final record with phases."""
    watcher = Watcher(stack, client)
    try:
        await asyncio.sleep(0.2)  # the stream is open before the upload
        cpu_before = stack.cpu_seconds()
        began, t0 = time.time(), time.perf_counter()
        record = await stack.upload(client, path)
        uploaded = time.time()
        await watcher.until_done({record["id"]})
        seconds = time.perf_counter() - t0
        cpu_after = stack.cpu_seconds()
        received, _, final = next(
            e for e in watcher.events if e[1] == "completed" and e[2]["id"] == record["id"]
        )
    finally:
        await watcher.close()
    if final["samples_processed"] != SAMPLES:
        raise RuntimeError(f"expected {SAMPLES} samples, got {final['samples_processed']}")
    started, completed = _ts(final["processing_started_at"]), _ts(final["completed_at"])
    final["phases"] = {
        "upload": uploaded - began,
        "to parser": started - uploaded,
        "parse+store": completed - started,
        "to browser": received - completed,
    }
    final["cpu"] = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
    return seconds, final


async def end_to_end(stack: EmbeddedStack, client: httpx.AsyncClient, path: Path) -> list[Table]:
    """Median end-to-end time with tracking on and off, interleaved."""
    times: dict[bool, list[float]] = {True: [], False: []}
    batches: dict[bool, list[int]] = {True: [], False: []}
    phases: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    cpu: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    tracked: list[str] = []  # file ids of the tracking-on runs, for the cadence table
    for _ in range(RUNS):
        for tracking in (True, False):
            await parser_ready(stack, tracking)
            seconds, final = await _one_file(stack, client, path)
            times[tracking].append(seconds)
            batches[tracking].append(final["batch_number"])
            phases[tracking].append(final["phases"])
            cpu[tracking].append(final["cpu"])
            if tracking:
                tracked.append(final["id"])
    on, off = statistics.median(times[True]), statistics.median(times[False])
    mb = (await asyncio.to_thread(path.stat)).st_size / 1e6
    e2e = Table(
        f"End to end: {SAMPLES:,}-sample CSV ({mb:.0f} MB), upload -> `completed` SSE event",
        ["progress tracking", "median s", "samples/s", "runs (s)", "batches"],
        [
            ["on (default)", on, SAMPLES / on, _runs(times[True]), batches[True][-1]],
            ["off", off, SAMPLES / off, _runs(times[False]), "-"],
        ],
        notes=[
            f"progress-tracking overhead: {100 * (on - off) / off:+.1f} % of the end-to-end time "
            "(median on vs median off; the runs were interleaved)",
            "includes the upload (ingest streams and hashes it), the Kafka hop, parsing, COPY into "
            "imu_samples, the completion and the SSE hop.",
        ],
    )
    names = list(phases[True][0])
    split = Table(
        "End to end, where the time goes (medians, seconds)",
        ["progress tracking", *names],
        [
            [label, *(statistics.median(p[name] for p in phases[tracking]) for name in names)]
            for label, tracking in (("on", True), ("off", False))
        ],
        notes=[
            "upload: POST until ingest answered 202; to parser: until the parser claimed the job "
            "(outbox relay, Kafka); parse+store: claim to the completed commit; to browser: "
            "completed commit to the SSE event on the client."
        ],
    )
    parts = list(cpu[True][0])
    used = Table(
        "End to end, CPU seconds used by each process (medians)",
        ["progress tracking", *parts, "total"],
        [
            [
                label,
                *(statistics.median(c[name] for c in cpu[tracking]) for name in parts),
                statistics.median(sum(c.values()) for c in cpu[tracking]),
            ]
            for label, tracking in (("on", True), ("off", False))
        ],
        notes=[
            "CPU time is what each part did, whatever the other engineers' load on the shared "
            "cores; wall time above also includes waiting for a core. The machine has "
            f"{len(os.sched_getaffinity(0))} cores: total / cores is the floor of the wall time.",
            f"tracking overhead in CPU: {_overhead(cpu)}",
        ],
    )
    return [e2e, split, used, await cadence(stack, tracked, f"{SAMPLES:,}-sample CSV")]


async def cadence(stack: EmbeddedStack, file_ids: list[str], what: str) -> Table:
    """Seconds between consecutive checkpoints of each tracked run."""
    assert stack.pg is not None
    conn = await db.connect(stack.pg.url)
    try:
        rows = []
        for n, file_id in enumerate(file_ids, 1):
            times = await conn.fetch(
                "SELECT extract(epoch FROM completed_at)::float8 AS t, samples_in_batch AS n "
                "FROM streaming_processing_logs WHERE file_id = $1 ORDER BY run, batch_number",
                file_id,
            )
            gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(times)]
            if not gaps:
                continue
            # The ramp: batches before the sizer first reaches half the target interval.
            ramp = next((i for i, g in enumerate(gaps) if g >= 0.5), len(gaps))
            steady = gaps[ramp:]
            rows.append(
                [
                    f"run {n}",
                    len(times),
                    statistics.median(gaps),
                    percentile(gaps, 90),
                    max(gaps),
                    ramp,
                    f"{sum(0.5 <= g <= 1.0 for g in steady)} of {len(steady)}",
                    " ".join(f"{g:.2f}" for g in gaps),
                    " ".join(f"{b['n'] // 1000}k" for b in times),
                ]
            )
    finally:
        await conn.close()
    return Table(
        f"Checkpoint cadence: {what}, tracking on (adaptive batch size)",
        [
            "run",
            "batches",
            "median s",
            "p90 s",
            "max s",
            "ramp batches",
            "after the ramp in 0.5-1 s",
            "intervals s",
            "batch sizes",
        ],
        rows,
        notes=[
            "seconds between consecutive batch checkpoints (streaming_processing_logs.completed_at); "
            "the sizer starts at IMUFLOW_BATCH_SIZE and aims at 0.75 s; the last batch is partial.",
        ],
    )


def _runs(times: list[float]) -> str:
    return " / ".join(f"{t:.2f}" for t in times)


def _overhead(cpu: dict[bool, list[dict[str, float]]]) -> str:
    on = statistics.median(sum(c.values()) for c in cpu[True])
    off = statistics.median(sum(c.values()) for c in cpu[False])
    return f"{on - off:+.2f} CPU s ({100 * (on - off) / off:+.1f} % of all processes' CPU)"


async def latency(stack: EmbeddedStack, client: httpx.AsyncClient, path: Path) -> list[Table]:
    """Batch committed -> SSE received, with 10 files processing at once."""
    await parser_ready(stack, True)
    watcher = Watcher(stack, client)
    try:
        await asyncio.sleep(0.2)
        records = await asyncio.gather(*(stack.upload(client, path) for _ in range(LATENCY_FILES)))
        ids = {r["id"] for r in records}
        await watcher.until_done(ids)
    finally:
        await watcher.close()
    delays = [
        (received - datetime.fromisoformat(record["last_checkpoint_at"]).timestamp()) * 1000
        for received, kind, record in watcher.events
        if kind == "progress" and record["id"] in ids and record.get("last_checkpoint_at")
    ]
    return [
        Table(
            f"Batch committed -> SSE event received, {LATENCY_FILES} files of "
            f"{LATENCY_SAMPLES:,} samples at once",
            ["events", "p50 ms", "p99 ms", "max ms"],
            [[len(delays), percentile(delays, 50), percentile(delays, 99), max(delays)]],
            notes=[
                "last_checkpoint_at is the parser's batch-completed time (taken inside the batch's "
                "transaction); received is the client's clock; same machine, same clock.",
                "a progress event a slow client never saw (coalesced) is not counted.",
            ],
        )
    ]


async def _run() -> list[Table]:
    async with EmbeddedStack() as stack, httpx.AsyncClient(trust_env=False) as client:
        await stack.start("front", services=("ingest", "progress"))
        big = stack.dir / "e2e.csv"
        small = stack.dir / "latency.csv"
        await asyncio.to_thread(synthesise, big, SAMPLES)
        await asyncio.to_thread(synthesise, small, LATENCY_SAMPLES)
        tables = show(await end_to_end(stack, client, big))
        tables += show(await latency(stack, client, small))
        from benchmarks.s3_end_to_end import storage_beside  # it imports this module

        store = await start_object_store(stack.dir / "objectstore", bucket="bench")
        try:
            tables += show(await storage_beside(stack, client, big, store))
        finally:
            store.stop()
        return tables


def run() -> list[Table]:
    """Measure on a fresh embedded stack (and, for the S3 table, an embedded SeaweedFS)."""
    return asyncio.run(_run())


def main() -> None:
    """Measure and print."""
    run()


if __name__ == "__main__":
    main()
