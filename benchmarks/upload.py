"""Benchmark: a 2 GB streamed upload, and the ingest process's memory while it runs.

The multipart body is generated on the fly (a 1 MiB block of CSV lines, repeated), so
neither side ever holds the file. The ingest process's RSS is sampled every 20 ms from
/proc/<pid>/status during the upload; VmHWM is the kernel's own peak. Only ingest runs
(no parser), so the 2 GB file is stored but not parsed.

`python -m benchmarks.upload`
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator

import httpx

from benchmarks.common import RUNS, Table, show
from benchmarks.stack import EmbeddedStack, cancel_quietly

TOTAL = 2 * 1000**3
BLOCK = 1024 * 1024
BOUNDARY = "imuflow-bench-boundary-7f3a"


def _block() -> bytes:
    """1 MiB of whole CSV lines (padded with a comment-free last line)."""
    line = b"12345.6789,0.0123,-0.0456,0.9876,1.234,-5.678,9.012,-23.4,45.6,-12.3\n"
    data = line * (BLOCK // len(line))
    return data + b"0" * (BLOCK - len(data) - 1) + b"\n"


async def _body(size: int) -> AsyncIterator[bytes]:
    block = _block()
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="allow_duplicate"\r\n\r\ntrue\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    yield b"time,ax,ay,az,gx,gy,gz,mx,my,mz\n"
    sent = 0
    while sent < size:
        chunk = block if size - sent >= BLOCK else block[: size - sent]
        sent += len(chunk)
        yield chunk
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(field)


async def _sample_rss(pid: int, into: list[int]) -> None:
    while True:
        into.append(_status_kb(pid, "VmRSS"))
        await asyncio.sleep(0.02)


async def _one(stack: EmbeddedStack, client: httpx.AsyncClient, pid: int) -> dict[str, float]:
    rss: list[int] = []
    before = _status_kb(pid, "VmRSS")
    sampler = asyncio.create_task(_sample_rss(pid, rss), name="bench-rss")
    t0 = time.perf_counter()
    try:
        resp = await client.post(
            f"{stack.ingest_url}/api/files",
            headers={**stack.headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            content=_body(TOTAL),
            timeout=httpx.Timeout(30, read=600),
        )
    finally:
        seconds = time.perf_counter() - t0
        await cancel_quietly(sampler)
    resp.raise_for_status()
    record = resp.json()
    if record["size_bytes"] < TOTAL:
        raise RuntimeError(f"stored {record['size_bytes']} bytes, sent {TOTAL}")
    return {
        "seconds": seconds,
        "MB/s": TOTAL / 1e6 / seconds,
        "rss_before": before / 1024,
        "rss_peak": max(rss) / 1024,
        "rss_end": rss[-1] / 1024,
        "hwm": _status_kb(pid, "VmHWM") / 1024,
    }


async def _run() -> list[Table]:
    async with EmbeddedStack() as stack, httpx.AsyncClient(trust_env=False) as client:
        await stack.start("front", services=("ingest",))
        pid = stack.process("ingest").pid
        runs = [await _one(stack, client, pid) for _ in range(RUNS)]

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    return [
        Table(
            f"Streamed upload of {TOTAL / 1e9:.0f} GB (multipart, generated on the fly), "
            "ingest process memory",
            ["median s", "MB/s", "RSS before MB", "peak RSS during MB", "RSS after MB", "VmHWM MB"],
            [[med("seconds"), med("MB/s"), med("rss_before"), med("rss_peak"), med("rss_end"), med("hwm")]],
            notes=[
                "RSS sampled every 20 ms from /proc/<pid>/status; VmHWM is the kernel's peak since the "
                "process started (so it includes start-up and the earlier runs).",
                "ingest streams the body to disk while hashing it (sha256); client and server share "
                "the cores.",
            ],
        )
    ]


def run() -> list[Table]:
    """Measure on a fresh embedded stack."""
    return show(asyncio.run(_run()))


def main() -> None:
    """Measure and print."""
    run()


if __name__ == "__main__":
    main()
