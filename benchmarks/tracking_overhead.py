"""Benchmark: what progress tracking costs, by two methods that beat the machine's noise.

* CPU of every process: two embedded stacks side by side, one whose parser tracks
  progress (the production parser: a checkpoint, a batch log row and an outbox progress
  event per batch, relayed to Kafka and applied by the progress service) and one whose
  parser is `benchmarks.untracked_parser` (samples alone). The same 2M-sample CSV is
  uploaded to each in turn, at least 20 interleaved pairs whose order alternates; for
  each run the CPU seconds (user + system, psutil) of every process of that stack are
  summed: Postgres (postmaster and every backend), the broker, ingest, parser, progress.
  The overhead is the mean paired difference with its 95 % interval (t, n-1).
* Instructions under callgrind: the parser-side tracking code alone (building the batch's
  progress event, its batch-log row and the JSON Postgres receives), run per batch in a
  process that reads and encodes a file, against the same process without it; valgrind
  counts instructions, which do not depend on the load. The Postgres side of tracking
  (the checkpoint UPDATE, two INSERTs) is in the CPU figure above, not here.

`python -m benchmarks.tracking_overhead [pairs]`
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx

from benchmarks.common import Table, show
from benchmarks.end_to_end import SAMPLES, _one_file, parser_ready
from benchmarks.stack import EmbeddedStack
from benchmarks.text_reader import synthesise

PAIRS = 20
CALLGRIND_ROWS = 40_000  # valgrind runs Python ~50x slower: a small file, small batches
CALLGRIND_BATCH = 10_000
# two-sided 95 % t quantiles by degrees of freedom (n - 1), for the paired interval
_T95 = {9: 2.262, 14: 2.145, 19: 2.093, 24: 2.064, 29: 2.045}


def _t95(dof: int) -> float:
    return _T95.get(dof, 1.96 if dof > 29 else 2.262)


async def cpu_pairs(pairs: int) -> Table:
    """Total CPU per run, tracking on and off, on two stacks in interleaved pairs."""
    async with EmbeddedStack() as on, EmbeddedStack() as off, httpx.AsyncClient(trust_env=False) as client:
        for stack, tracking in ((on, True), (off, False)):
            await stack.start("front", services=("ingest", "progress"))
            await parser_ready(stack, tracking)
        path = on.dir / "tracking.csv"
        await asyncio.to_thread(synthesise, path, SAMPLES)
        used: dict[bool, list[float]] = {True: [], False: []}
        wall: dict[bool, list[float]] = {True: [], False: []}
        for pair in range(pairs):
            order = (True, False) if pair % 2 == 0 else (False, True)
            for tracking in order:
                seconds, final = await _one_file(on if tracking else off, client, path)
                cpu = final["cpu"]
                used[tracking].append(sum(v for k, v in cpu.items() if k != "bench client"))
                wall[tracking].append(seconds)
            print(f"pair {pair + 1}: CPU on {used[True][-1]:.2f} s, off {used[False][-1]:.2f} s", flush=True)
    diffs = [a - b for a, b in zip(used[True], used[False], strict=True)]
    mean_off = statistics.mean(used[False])
    mean = statistics.mean(diffs)
    half = _t95(len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    pct, pct_half = 100 * mean / mean_off, 100 * half / mean_off
    verdict = "below 1 %" if pct + pct_half < 1 else "not shown below 1 %"
    return Table(
        f"Progress-tracking overhead: CPU of every process, {SAMPLES:,}-sample CSV, "
        f"{pairs} interleaved pairs",
        ["progress tracking", "mean CPU s", "median CPU s", "median wall s"],
        [
            [
                "on (production parser)",
                statistics.mean(used[True]),
                statistics.median(used[True]),
                statistics.median(wall[True]),
            ],
            [
                "off (benchmarks.untracked_parser)",
                mean_off,
                statistics.median(used[False]),
                statistics.median(wall[False]),
            ],
        ],
        notes=[
            f"overhead {mean:+.3f} CPU s per file ({pct:+.2f} % +/- {pct_half:.2f} %, 95 % interval of "
            f"the paired differences): {verdict}",
            "CPU: user + system seconds of Postgres (postmaster and backends), the broker, ingest, "
            "parser and progress of the run's stack, from psutil; two stacks side by side, runs "
            "alternating between them.",
        ],
    )


def _tracking_child(mode: str, rows: int, path: Path) -> None:
    """The process valgrind counts: read + encode `path`, with the tracking code or not."""
    from services.parser import pgcopy
    from services.parser.cursor import Cursor
    from services.parser.formats import chunker
    from services.parser.formats.base import FileInfo, ReadOptions
    from services.parser.formats.registry import detect_format, make_reader
    from services.parser.job import FileJob
    from services.parser.repository import Claim, _log_row

    chunker.READ_AHEAD = False  # one thread: a repeatable count (the reads are the same)

    file_id = uuid.uuid4()
    claim = Claim(file_id, uuid.uuid4(), path.name, 1, None, None, "UTC", "file:///x", 1, 1, 1, 0,
                  0, 0, 0, {}, 0, [], None)  # fmt: skip
    info = FileInfo(format_id="generic_csv", bytes_total=path.stat().st_size)
    cursor = Cursor(0, 0, 0, [])
    started = datetime.now(UTC)
    with path.open("rb") as f:
        reader = make_reader(detect_format(f.read(65536), path.name))
        reader.open(f, ReadOptions(filename=path.name), None)
        if mode == "imports":  # start-up, imports and the header sniffing only
            return
        for batch in reader.batches(lambda: CALLGRIND_BATCH):
            pgcopy.encode_parts(file_id, batch)
            cursor = cursor.after(batch)
            if mode == "with":
                # What the parser's process does per batch for tracking: the event, its log
                # row, and the JSON the jsonb codec sends (the event and the checkpoint's).
                event = FileJob._progress_payload(None, claim, info, batch, cursor, started)  # type: ignore[arg-type]
                _log_row(event)
                json.dumps(event)
                json.dumps(batch.state)
                json.dumps(cursor.warnings)


def _instructions(mode: str, rows: int, path: Path, out: Path) -> int:
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-m",
           "benchmarks.tracking_overhead", "--child", mode, str(rows), str(path)]  # fmt: skip
    # A fixed hash seed: string hashing otherwise changes dict and set work run to run.
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    match = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no instruction total in {out}")
    return int(match.group(1))


def callgrind_table() -> Table:
    """Instructions of the tracking code per batch against reading + encoding per sample."""
    title = (
        f"Progress-tracking code alone under callgrind: {CALLGRIND_ROWS:,}-row CSV, "
        f"batches of {CALLGRIND_BATCH:,}"
    )
    if shutil.which("valgrind") is None:
        return Table(title, ["run"], notes=["valgrind is not installed (apt-get install valgrind): skipped"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "callgrind.csv"
        synthesise(path, CALLGRIND_ROWS)
        counts = {
            m: _instructions(m, CALLGRIND_ROWS, path, Path(tmp) / f"{m}.out")
            for m in ("imports", "without", "with")
        }
    batches = math.ceil(CALLGRIND_ROWS / CALLGRIND_BATCH)
    work = counts["without"] - counts["imports"]
    tracking = counts["with"] - counts["without"]
    per_batch, per_sample = tracking / batches, work / CALLGRIND_ROWS
    # The production sizer's batches of a 2M-sample file: ~6 (docs/benchmarks.md cadence).
    at_2m = 100 * 6 * per_batch / (per_sample * 2_000_000)
    return Table(
        title,
        ["run", "instructions"],
        [
            ["start-up and imports only", counts["imports"]],
            ["read + COPY-encode the file", counts["without"]],
            ["the same + the tracking code per batch", counts["with"]],
        ],
        notes=[
            f"tracking code: {per_batch:,.0f} instructions per batch; reading + encoding: "
            f"{per_sample:,.0f} per sample; this run {100 * tracking / work:.3f} % of the parse "
            f"work, and {at_2m:.4f} % for a 2M-sample file in ~6 batches",
            "valgrind --tool=callgrind, totals of the whole process; the differences isolate the "
            "parser-side tracking code (progress event, batch-log row, JSON of the event and the "
            "checkpoint). Postgres' share of tracking is in the CPU table.",
        ],
    )


def run(pairs: int = PAIRS) -> list[Table]:
    """Both methods."""
    tables = show([callgrind_table()])
    return tables + show([asyncio.run(cpu_pairs(pairs))])


def main() -> None:
    """Measure and print (or be the child process valgrind counts)."""
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _tracking_child(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
        return
    run(int(sys.argv[1]) if len(sys.argv) > 1 else PAIRS)


if __name__ == "__main__":
    main()
