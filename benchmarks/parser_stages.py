"""Benchmark: where a 2M-row CSV's parse+store time goes, stage by stage (issue 18).

Runs the parser's own pieces in sequence (no pipelining, so each stage is timed alone)
on the 7-column file of `benchmarks.psql_peer`, against a fresh embedded Postgres:
read (the chunker's file reads and line cuts), parse (pyarrow + time base + checks),
COPY encode (`pgcopy.encode_parts`), preview encode (`preview_blocks.encode`), COPY
send (`copy_to_table` of the samples), preview send, checkpoint, commit. Beside them, the
preview rows as they were sent before issue 18 (Python tuples through
`copy_records_to_table`, in a savepoint rolled back). Every figure is the median of 3
whole-file runs.

`python -m benchmarks.parser_stages`
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections import defaultdict
from pathlib import Path

import asyncpg
import psutil

from benchmarks.common import RUNS, Table, show
from benchmarks.psql_peer import ROWS, synthesise7
from benchmarks.stack import EmbeddedStack
from services.parser import pgcopy, preview_blocks
from services.parser.formats import chunker
from services.parser.formats.base import ReadOptions
from services.parser.formats.registry import detect_format, make_reader
from services.parser.repository import _chunks

BATCH = 400_000  # about what the adaptive sizer settles on for this file
# The preview rows as the parser built them before issue 18 (Python tuples through
# copy_records_to_table), measured beside the binary payload and left out of the total.
OLD_ROWS, OLD_SEND = "preview rows (old: Python tuples)", "preview send (old: copy_records_to_table)"


class _Clock:
    """CPU seconds of this thread plus the Postgres backend's, lap by lap (wall time on a
    shared, loaded machine mostly measures the wait for a core)."""

    def __init__(self, backend: psutil.Process, server: dict[str, float]) -> None:
        self.backend = backend
        self.server = server  # per stage, the backend's share of it
        self.last = self._now()

    def _now(self) -> tuple[float, float]:
        server = self.backend.cpu_times()
        return time.thread_time(), server.user + server.system

    def lap(self, stage: str = "") -> float:
        """Both CPU seconds since the last lap; the server's also kept under `stage`."""
        now = self._now()
        ours, theirs = now[0] - self.last[0], now[1] - self.last[1]
        self.last = now
        if stage:
            self.server[stage] = self.server.get(stage, 0.0) + theirs
        return ours + theirs


class _TimedFile:
    """A file whose reads are timed (the chunker's share of a batch is its reads)."""

    def __init__(self, path: Path) -> None:
        self.f = path.open("rb")
        self.seconds = 0.0

    def read(self, n: int = -1) -> bytes:
        t0 = time.thread_time()
        data = self.f.read(n)
        self.seconds += time.thread_time() - t0
        return data

    def readinto(self, buffer: memoryview) -> int:
        """The chunker reads straight into its block's buffer (timed like `read`)."""
        t0 = time.thread_time()
        got = self.f.readinto(buffer)
        self.seconds += time.thread_time() - t0
        return got

    def __getattr__(self, name: str) -> object:
        return getattr(self.f, name)


async def one_file(stack: EmbeddedStack, path: Path, server: dict[str, float]) -> dict[str, float]:
    """CPU seconds per stage for one whole file: this thread's plus the Postgres backend's."""
    assert stack.pg is not None
    conn = await asyncpg.connect(stack.pg.url)
    backend = psutil.Process(await conn.fetchval("SELECT pg_backend_pid()"))
    spent: dict[str, float] = defaultdict(float)
    clock = _Clock(backend, server)
    file_id = uuid.uuid4()
    user = await conn.fetchval("SELECT id FROM users LIMIT 1")
    await conn.execute(
        "INSERT INTO imu_data_files (id, user_id, filename, size_bytes, storage_uri, sha256, status) "
        "VALUES ($1, $2, 'stages.csv', 1, 'file:///x', $3, 'parsing')",
        file_id,
        user,
        uuid.uuid4().hex,
    )
    f = _TimedFile(path)
    try:
        reader = make_reader(detect_format(path.open("rb").read(65536), path.name))
        reader.open(f, ReadOptions(filename=path.name), None)  # type: ignore[arg-type]
        batches = reader.batches(lambda: BATCH)
        while True:
            before_reads = f.seconds
            clock.lap()
            batch = next(batches, None)
            if batch is None:
                break
            parse = clock.lap()
            spent["read (file reads)"] += f.seconds - before_reads
            spent["parse (chunk, pyarrow, checks)"] += parse - (f.seconds - before_reads)
            payload = pgcopy.encode_parts(file_id, batch)
            spent["COPY encode"] += clock.lap()
            preview = preview_blocks.encode(file_id, batch)
            spent["preview encode (numpy, binary)"] += clock.lap()
            rows = preview_blocks.block_rows(file_id, batch)
            spent[OLD_ROWS] += clock.lap()
            tx = conn.transaction()
            await tx.start()
            await conn.execute(
                "UPDATE imu_data_files SET resume_batch_number = resume_batch_number + 1, "
                "resume_offset = $2, resume_samples = resume_samples + $3 WHERE id = $1",
                file_id,
                batch.end_offset,
                len(batch),
            )
            spent["checkpoint"] += clock.lap("checkpoint")
            await conn.copy_to_table(
                "imu_samples", source=_chunks(payload), columns=list(pgcopy.COLUMNS), format="binary"
            )
            spent["COPY send (samples)"] += clock.lap("COPY send (samples)")
            # The old way, into the same table in a savepoint rolled back: same indexes.
            savepoint = conn.transaction()
            await savepoint.start()
            await conn.copy_records_to_table(
                "imu_preview_blocks", records=rows, columns=list(preview_blocks.COLUMNS)
            )
            spent[OLD_SEND] += clock.lap(OLD_SEND)
            await savepoint.rollback()
            clock.lap()
            await conn.copy_to_table(
                "imu_preview_blocks",
                source=_chunks([memoryview(preview.payload)]),
                columns=list(preview_blocks.COLUMNS),
                format="binary",
            )
            spent["preview send (binary COPY)"] += clock.lap("preview send (binary COPY)")
            await tx.commit()
            spent["commit"] += clock.lap("commit")
    finally:
        f.f.close()
        await conn.execute("DELETE FROM imu_samples WHERE file_id = $1", file_id)
        await conn.close()
    return spent


async def _run() -> list[Table]:
    # Each stage alone: the file reads on this thread, not overlapping the parse.
    chunker.READ_AHEAD = False
    async with EmbeddedStack() as stack:
        path = stack.dir / "stages.csv"
        await asyncio.to_thread(synthesise7, path, 7)
        servers: list[dict[str, float]] = [{} for _ in range(RUNS)]
        runs = [await one_file(stack, path, servers[i]) for i in range(RUNS)]
    stages = list(runs[0])
    medians = {s: statistics.median(r[s] for r in runs) for s in stages}
    on_server = {s: statistics.median(r.get(s, 0.0) for r in servers) for s in stages}
    old = [OLD_ROWS, OLD_SEND]
    total = sum(v for s, v in medians.items() if s not in old)
    return show(
        [
            Table(
                f"Parse+store of a {ROWS:,}-row 7-column CSV, stage by stage (batches of {BATCH:,})",
                ["stage", "median CPU s", "of which Postgres", "share"],
                [
                    [s, medians[s], on_server[s], f"{100 * medians[s] / total:.0f} %"]
                    for s in stages
                    if s not in old
                ]
                + [
                    [
                        "total (stages in sequence)",
                        total,
                        sum(v for s, v in on_server.items() if s not in old),
                        "100 %",
                    ]
                ]
                + [[s, medians[s], on_server[s], "not in total"] for s in old],
                notes=[
                    f"median of {RUNS} whole-file runs, each stage alone (the parser overlaps "
                    "read+parse+encode of batch N+1 with the Postgres stages of batch N).",
                    "CPU seconds of the benchmark's thread plus its Postgres backend's (psutil), so "
                    "the other sessions' load on the shared cores does not count.",
                ],
            )
        ]
    )


def run() -> list[Table]:
    """Measure on a fresh embedded Postgres."""
    return asyncio.run(_run())


if __name__ == "__main__":
    run()
