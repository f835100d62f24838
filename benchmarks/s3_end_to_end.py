"""Benchmark: the 2M-sample CSV end to end with uploads on local disk and in S3 (SeaweedFS).

The same embedded stack (Postgres, Tansu, the three services) runs the file with
`IMUFLOW_STORAGE_URL` unset (local `DATA_DIR/uploads`) and set to a bucket of an embedded
SeaweedFS on localhost, interleaved (local, S3, local, S3, ...), median of 3; progress
tracking on. Upload = POST until 202 (ingest streams the body into a multipart upload);
parse+store = claim to the completed commit (the parser reads by ranged GETs).

`python -m benchmarks.s3_end_to_end` (also part of `python -m benchmarks.end_to_end`)
"""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path

import httpx

from benchmarks.common import RUNS, Table, show
from benchmarks.end_to_end import SAMPLES, _one_file, parser_ready
from benchmarks.stack import EmbeddedStack
from benchmarks.text_reader import synthesise
from imuflow.stack.objectstore import ObjectStore, start_object_store


async def _use(stack: EmbeddedStack, env: dict[str, str]) -> None:
    """Restart every service with this storage (the parser last, warmed up)."""
    for name in ("front", "parser"):
        if name in stack.supervisors:
            await stack.stop(name)
    await stack.start("front", services=("ingest", "progress"), env=env)
    await parser_ready(stack, True, env)


async def storage_beside(
    stack: EmbeddedStack, client: httpx.AsyncClient, path: Path, store: ObjectStore
) -> list[Table]:
    """Median end to end, local disk vs S3."""
    creds = store.credentials
    s3 = {
        **store.env(),  # what `imuflow up --object-store` writes; the IMUFLOW_S3_* names win
        "IMUFLOW_S3_ACCESS_KEY_ID": creds.access_key_id,
        "IMUFLOW_S3_SECRET_ACCESS_KEY": creds.secret_access_key,
    }
    kinds: dict[str, dict[str, str]] = {"local disk": {}, "S3 (SeaweedFS)": s3}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    phases: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    cpu: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    for _ in range(RUNS):
        for kind, env in kinds.items():
            await _use(stack, env)
            seconds, final = await _one_file(stack, client, path)
            times[kind].append(seconds)
            phases[kind].append(final["phases"])
            cpu[kind].append(final["cpu"])
    mb = (await asyncio.to_thread(path.stat)).st_size / 1e6
    rows = []
    for kind in kinds:
        median = statistics.median(times[kind])
        upload = statistics.median(p["upload"] for p in phases[kind])
        parse = statistics.median(p["parse+store"] for p in phases[kind])
        used = [statistics.median(c.get(name, 0.0) for c in cpu[kind]) for name in ("ingest", "parser")]
        rows.append(
            [
                kind,
                median,
                SAMPLES / median,
                upload,
                mb / upload,
                parse,
                *used,
                " / ".join(f"{t:.2f}" for t in times[kind]),
            ]
        )
    return [
        Table(
            f"End to end through S3 beside local disk: {SAMPLES:,}-sample CSV ({mb:.0f} MB)",
            [
                *("uploads in", "median s", "samples/s", "upload s", "upload MB/s", "parse+store s"),
                *("ingest CPU s", "parser CPU s", "runs (s)"),
            ],
            rows,
            notes=[
                "S3: embedded SeaweedFS (weed mini) on the same machine, so its CPU competes with the "
                "stack's; 8 MiB parts, one in flight; the parser reads 8 MiB ranged GETs with one ahead.",
                "runs interleaved (local, S3, ...); each run restarts the services with that storage.",
                "CPU s: user + system of that process in the run (median); the store's own is not counted.",
            ],
        )
    ]


async def _run() -> list[Table]:
    async with EmbeddedStack() as stack, httpx.AsyncClient(trust_env=False) as client:
        store = await start_object_store(stack.dir / "objectstore", bucket="bench")
        try:
            big = stack.dir / "e2e.csv"
            await asyncio.to_thread(synthesise, big, SAMPLES)
            return show(await storage_beside(stack, client, big, store))
        finally:
            store.stop()


def run() -> list[Table]:
    """Measure on a fresh embedded stack and SeaweedFS."""
    return asyncio.run(_run())


def main() -> None:
    """Measure and print."""
    run()


if __name__ == "__main__":
    main()
