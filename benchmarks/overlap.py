"""Benchmark: a large CSV sent slowly, completed how long after its upload ends (issue 18).

A CSV of about 230 MB is sent at a throttled 25 MB/s (a client on a fast link) through
`POST /api/files` (fields before the file part as the docs ask) and through tus with the
CLI's own client (`imuflow upload --limit-rate`). Measured from the
first byte: when the last byte was sent, and when the record was `completed` (polled
every 50 ms). With the overlap on (IMUFLOW_OVERLAP_MIN_BYTES 16 MiB, the default) the
parser reads the file while it is received; off (0), parsing starts after the last
byte. The two run interleaved on the same stack (services restarted between them),
each file deleted after its run so `imu_samples` stays the same size. Target: completed
within 1.2x the upload's time. Each run starts with a 1 MB file through the fresh
services (below the threshold), so the parser has joined its consumer group: a first job
would otherwise wait for that (~1.5 s), which the overlap-off run hides behind its upload.

`python -m benchmarks.overlap` (230 MB), `--small` (40 MB, cheap enough for a shared box);
`--s3` stores the uploads in an embedded SeaweedFS instead of the local disk (the parser
then reads a POST body, stored as segments, as they arrive: imuflow/storage/segments.py;
a tus upload on S3 is parsed after its last byte, so its two rows measure the same path).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import RUNS, Table, show
from benchmarks.stack import EmbeddedStack
from imuflow.cli.client import StackClient
from imuflow.cli.resumable import ResumableUpload
from imuflow.stack.objectstore import start_object_store

FULL_MB = 230
SMALL_MB = 40
RATE = 25e6  # bytes per second the client sends
CHUNK = 256 * 1024
TARGET = 1.2
BOUNDARY = "imuflow-overlap-bench"
# mode: (IMUFLOW_OVERLAP_MIN_BYTES, way in)
MODES = {
    "POST, overlap on": ("16777216", "post"),
    "POST, overlap off": ("0", "post"),
    "tus (CLI client), overlap on": ("16777216", "tus"),
    "tus (CLI client), overlap off": ("0", "tus"),
}


def _write_csv(path: Path, megabytes: int) -> int:
    """A CSV of distinct rows (10 columns, 100 Hz) of about `megabytes` MB; its size."""
    target = megabytes * 1_000_000
    with path.open("wb") as f:
        f.write(b"time,ax,ay,az,gx,gy,gz,mx,my,mz\n")
        written, i = 0, 0
        while written < target:
            rows = b"".join(
                b"%.2f,0.%04d,-0.0456,0.9876,1.234,-5.678,9.012,-23.4,45.6,-12.3\n"
                % ((i + k) / 100, (i + k) % 9973)
                for k in range(10_000)
            )
            f.write(rows)
            written += len(rows)
            i += 10_000
    return path.stat().st_size


async def _throttled(path: Path, sent_at: dict[str, float]) -> AsyncIterator[bytes]:
    """The multipart body at RATE bytes/s; records when its last byte was handed over."""
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="allow_duplicate"\r\n\r\ntrue\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="walk.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    t0, sent = time.perf_counter(), 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            sent += len(chunk)
            yield chunk
            ahead = sent / RATE - (time.perf_counter() - t0)
            if ahead > 0:
                await asyncio.sleep(ahead)
    yield f"\r\n--{BOUNDARY}--\r\n".encode()
    sent_at["last byte"] = time.perf_counter()


def _length(path: Path) -> int:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="allow_duplicate"\r\n\r\ntrue\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="walk.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    )
    return len(head.encode()) + path.stat().st_size + len(f"\r\n--{BOUNDARY}--\r\n")


async def _until_completed(stack: EmbeddedStack, client: httpx.AsyncClient, file_id: str) -> dict[str, Any]:
    """The record once it ended (polled every 50 ms), deleted after; raise unless completed."""
    record: dict[str, Any] = {}
    while record.get("status") not in ("completed", "failed", "cancelled"):
        await asyncio.sleep(0.05)
        record = (await client.get(f"{stack.progress_url}/api/files/{file_id}", headers=stack.headers)).json()
    if record["status"] != "completed":
        raise RuntimeError(f"the upload ended {record['status']}: {record.get('error_message')}")
    return record


async def _warm_up(stack: EmbeddedStack, client: httpx.AsyncClient, small: Path) -> None:
    """One small file through the fresh services: the parser has joined its group after it."""
    record = await _until_completed(stack, client, (await stack.upload(client, small))["id"])
    (
        await client.delete(f"{stack.progress_url}/api/files/{record['id']}", headers=stack.headers)
    ).raise_for_status()


def _tus_upload(stack: EmbeddedStack, path: Path, sent_at: dict[str, float]) -> str:
    """`imuflow upload`'s own client (tus, 8 MiB PATCHes) throttled to RATE; the file id."""
    size = path.stat().st_size

    def progress(done: int) -> None:
        if done >= size and "last byte" not in sent_at:
            sent_at["last byte"] = time.perf_counter()

    settings = stack.settings.model_copy(update={"ingest_url": stack.ingest_url})
    upload = ResumableUpload(
        StackClient(settings, token=stack.token), path, {"allow_duplicate": "true"}, limit_rate=RATE
    )
    return upload.run(progress).file_id


async def _one(stack: EmbeddedStack, client: httpx.AsyncClient, path: Path, way: str) -> dict[str, float]:
    sent_at: dict[str, float] = {}
    headers = {
        **stack.headers,
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        "Content-Length": str(_length(path)),
    }
    t0 = time.perf_counter()
    if way == "tus":
        file_id = await asyncio.to_thread(_tus_upload, stack, path, sent_at)
    else:
        resp = await client.post(
            f"{stack.ingest_url}/api/files",
            headers=headers,
            content=_throttled(path, sent_at),
            timeout=httpx.Timeout(30, read=600),
        )
        resp.raise_for_status()
        file_id = resp.json()["id"]
    answered = time.perf_counter()
    record = await _until_completed(stack, client, file_id)
    completed = time.perf_counter()
    samples = record["samples_processed"]
    (
        await client.delete(f"{stack.progress_url}/api/files/{file_id}", headers=stack.headers)
    ).raise_for_status()
    upload = sent_at["last byte"] - t0
    return {
        "upload": upload,
        "answered": answered - t0,
        "completed": completed - t0,
        "ratio": (completed - t0) / upload,
        "samples": samples,
    }


async def _run(megabytes: int, s3: bool = False) -> list[Table]:
    load = os.getloadavg()[0]
    # Deleting a file of millions of samples takes seconds: a generous timeout.
    async with EmbeddedStack() as stack, httpx.AsyncClient(trust_env=False, timeout=300) as client:
        storage: dict[str, str] = {}
        store = await start_object_store(stack.dir / "objectstore", bucket="overlap") if s3 else None
        if store is not None:
            creds = store.credentials
            storage = store.env() | {
                "IMUFLOW_S3_ACCESS_KEY_ID": creds.access_key_id,
                "IMUFLOW_S3_SECRET_ACCESS_KEY": creds.secret_access_key,
            }
        try:
            size, runs = await _runs(stack, client, megabytes, storage)
        finally:
            if store is not None:
                store.stop()
    load = max(load, os.getloadavg()[0])
    return _table(size, runs, load, s3)


async def _runs(
    stack: EmbeddedStack, client: httpx.AsyncClient, megabytes: int, storage: dict[str, str]
) -> tuple[int, dict[str, list[dict[str, float]]]]:
    """The file's size, and each mode's runs (interleaved: each mode once per round)."""
    path = stack.dir / "walk.csv"
    size = await asyncio.to_thread(_write_csv, path, megabytes)
    small = stack.dir / "warm.csv"
    await asyncio.to_thread(_write_csv, small, 1)
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for _ in range(RUNS):
        for mode, (min_bytes, way) in MODES.items():  # interleaved: each mode once per round
            await stack.start("services", env=storage | {"IMUFLOW_OVERLAP_MIN_BYTES": min_bytes})
            try:
                await _warm_up(stack, client, small)
                runs[mode].append(await _one(stack, client, path, way))
            finally:
                await stack.stop("services")
    return size, runs


def _table(size: int, runs: dict[str, list[dict[str, float]]], load: float, s3: bool) -> list[Table]:
    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[mode])

    rows: list[Sequence[Any]] = [
        [
            mode,
            med(mode, "upload"),
            med(mode, "answered"),
            med(mode, "completed"),
            med(mode, "ratio"),
            TARGET,
            "met" if med(mode, "ratio") <= TARGET else "missed",
        ]
        for mode in MODES
    ]
    samples = {int(r["samples"]) for mode in MODES for r in runs[mode]}
    if len(samples) != 1:
        raise RuntimeError(f"the runs stored different sample counts: {sorted(samples)}")
    return [
        Table(
            f"A {size / 1e6:.0f} MB CSV ({samples.pop():,} samples) sent at {RATE / 1e6:.0f} MB/s through "
            f"POST /api/files and tus{' into S3 (SeaweedFS)' if s3 else ''}: time to completed vs time "
            f"to upload end "
            f"(median of {RUNS}, interleaved)",
            ["mode", "upload s", "answered s", "completed s", "completed / upload", "target", ""],
            rows,
            notes=[
                "upload s: the client's last byte; answered s: ingest's 202 (POST) or the CLI client's "
                "return after the last PATCH (tus; after ingest's last transaction); "
                "completed s: the record's status seen completed (polled every 50 ms). All from the first "
                "byte.",
                "overlap off is IMUFLOW_OVERLAP_MIN_BYTES=0 (parsing starts after the last byte, as before).",
                "tus: imuflow/cli/resumable.py (what `imuflow upload --limit-rate` runs), 8 MiB PATCHes.",
                f"load average (1 min, highest of start and end): {load:.2f} on {os.cpu_count()} cores.",
            ],
        )
    ]


def run() -> list[Table]:
    """Measure the full-size file on a fresh embedded stack."""
    return show(asyncio.run(_run(FULL_MB)))


def main() -> None:
    """Measure and print (`--small`: a 40 MB file; `--s3`: uploads in SeaweedFS)."""
    args = sys.argv[1:]
    show(asyncio.run(_run(SMALL_MB if "--small" in args else FULL_MB, s3="--s3" in args)))


if __name__ == "__main__":
    main()
