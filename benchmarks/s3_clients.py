"""Benchmark: obstore vs aiobotocore on the embedded SeaweedFS, for what ingest and the parser do.

* streaming multipart write: a 128 MiB upload fed in 64 KiB chunks (as the request body
  arrives), 8 MiB parts, as many in flight as ingest keeps (`IN_FLIGHT`); MB/s and the
  process's peak RSS growth;
* sequential ranged reads: the object read in 8 MiB ranged GETs, one after another
  (obstore `get_range_async`, aiobotocore `get_object(Range=)`), and through
  `imuflow.storage.RangedReader` from a worker thread (aiobotocore, one block read-ahead);
* small ranged GETs (64 KiB at random offsets: a ZIP directory, a `.gt3x` seek): median ms;
* a write that fails after 3 parts: how many multipart uploads are left behind.

Each case runs in its own process so peak RSS is its own. `python -m benchmarks.s3_clients`
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Table, show
from imuflow.stack.objectstore import REGION, start_object_store
from imuflow.storage.s3 import IN_FLIGHT

MIB = 1024 * 1024
SIZE = 128 * MIB
CHUNK = 64 * 1024
PART = 8 * MIB
CASES = ("obstore", "aiobotocore")


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _payload() -> bytes:
    return os.urandom(CHUNK)


async def _obstore_case(env: dict[str, str]) -> dict[str, Any]:
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        env["bucket"],
        endpoint=env["endpoint"],
        region=REGION,
        access_key_id=env["key"],
        secret_access_key=env["secret"],
        client_options={"allow_http": True},
    )
    chunk = _payload()
    base = _rss_mib()
    t0 = time.perf_counter()
    writer = obstore.open_writer_async(store, "bench/obstore", buffer_size=PART, max_concurrency=IN_FLIGHT)
    async with writer as w:
        for _ in range(SIZE // CHUNK):
            await w.write(chunk)
    write_s = time.perf_counter() - t0
    rss = _rss_mib() - base
    t0 = time.perf_counter()
    for start in range(0, SIZE, PART):
        await obstore.get_range_async(store, "bench/obstore", start=start, end=start + PART)
    read_s = time.perf_counter() - t0
    small = []
    for _ in range(40):
        at = random.randrange(0, SIZE - CHUNK)
        t0 = time.perf_counter()
        await obstore.get_range_async(store, "bench/obstore", start=at, end=at + CHUNK)
        small.append(time.perf_counter() - t0)
    try:
        failing = obstore.open_writer_async(store, "bench/fail", buffer_size=PART, max_concurrency=IN_FLIGHT)
        async with failing as w:
            for _ in range(3 * PART // CHUNK + 1):
                await w.write(chunk)
            raise RuntimeError("client went away")
    except RuntimeError:
        pass
    return {"write_s": write_s, "rss": rss, "read_s": read_s, "small_ms": statistics.median(small) * 1000}


async def _aiobotocore_case(env: dict[str, str]) -> dict[str, Any]:
    from imuflow.storage import S3Storage

    s3 = S3Storage(
        f"s3://{env['bucket']}",
        endpoint_url=env["endpoint"],
        region=REGION,
        access_key_id=env["key"],
        secret_access_key=env["secret"],
    )
    client = await s3.client()
    chunk = _payload()
    base = _rss_mib()
    t0 = time.perf_counter()
    writer = await s3.create("bench-aiobotocore")
    for _ in range(SIZE // CHUNK):
        await writer.write(chunk)
    await writer.commit()
    write_s = time.perf_counter() - t0
    rss = _rss_mib() - base
    key = s3.key("bench-aiobotocore")
    t0 = time.perf_counter()
    for start in range(0, SIZE, PART):
        answer = await client.get_object(Bucket=s3.bucket, Key=key, Range=f"bytes={start}-{start + PART - 1}")
        async with answer["Body"] as body:
            await body.read()
    read_s = time.perf_counter() - t0
    reader = await s3.open(s3.uri("bench-aiobotocore"))
    done = asyncio.get_running_loop().create_future()
    seconds: list[float] = []

    def consume() -> None:  # what a parser thread does: 1 MiB reads, with work between them
        t = time.perf_counter()
        while reader.read(MIB):
            time.sleep(0.002)
        seconds.append(time.perf_counter() - t)
        done.get_loop().call_soon_threadsafe(done.set_result, None)

    threading.Thread(target=consume).start()
    await done
    small = []
    for _ in range(40):
        at = random.randrange(0, SIZE - CHUNK)
        t0 = time.perf_counter()
        answer = await client.get_object(Bucket=s3.bucket, Key=key, Range=f"bytes={at}-{at + CHUNK - 1}")
        async with answer["Body"] as body:
            await body.read()
        small.append(time.perf_counter() - t0)
    writer = await s3.create("bench-aiobotocore-fail")
    for _ in range(3 * PART // CHUNK + 1):
        await writer.write(chunk)
    await writer.abort()
    await s3.close()
    return {
        "write_s": write_s,
        "rss": rss,
        "read_s": read_s,
        "reader_s": seconds[0],
        "small_ms": statistics.median(small) * 1000,
    }


def _leftover_uploads(env: dict[str, str]) -> list[str]:
    import botocore.session

    client = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=env["endpoint"],
        region_name=REGION,
        aws_access_key_id=env["key"],
        aws_secret_access_key=env["secret"],
    )
    uploads = client.list_multipart_uploads(Bucket=env["bucket"]).get("Uploads", [])
    return [u["Key"] for u in uploads]


def _child(case: str) -> None:
    env = json.loads(os.environ["S3BENCH"])
    runner = _obstore_case if case == "obstore" else _aiobotocore_case
    print(json.dumps(asyncio.run(runner(env))))


def run() -> list[Table]:
    """Start a SeaweedFS, run each client in its own process, tabulate."""
    with tempfile.TemporaryDirectory(prefix="s3bench-") as tmp:
        store = asyncio.run(start_object_store(Path(tmp), bucket="bench"))
        try:
            env = {
                "bucket": "bench",
                "endpoint": store.endpoint_url,
                "key": store.credentials.access_key_id,
                "secret": store.credentials.secret_access_key,
            }
            results = {}
            for case in CASES:
                out = subprocess.run(
                    [sys.executable, "-m", "benchmarks.s3_clients", "--case", case],
                    env={**os.environ, "S3BENCH": json.dumps(env)},
                    capture_output=True,
                    text=True,
                )
                if out.returncode != 0:
                    raise RuntimeError(f"{case} failed: {out.stderr[-3000:]}")
                results[case] = json.loads(out.stdout.strip().splitlines()[-1])
            left = _leftover_uploads(env)
        finally:
            store.stop()
    mb = SIZE / MIB
    table = Table(
        "S3 clients on SeaweedFS (weed mini, localhost): 128 MiB object, 8 MiB parts/ranges",
        [
            "client",
            "multipart write MB/s",
            "peak RSS growth MiB",
            "8 MiB ranged GETs MB/s",
            "RangedReader MB/s",
            "64 KiB GET ms",
            "uploads left",
        ],
    )
    for case in CASES:
        r = results[case]
        reader = f"{mb / r['reader_s']:.0f}" if "reader_s" in r else "-"
        mine = sum(
            1 for k in left if ("fail" in k) and (case in k or (case == "obstore" and k == "bench/fail"))
        )
        table.rows.append(
            [case, f"{mb / r['write_s']:.0f}", f"{r['rss']:.0f}", f"{mb / r['read_s']:.0f}", reader,
             f"{r['small_ms']:.1f}", str(mine)]
        )  # fmt: skip
    table.notes.append(
        f"write fed in 64 KiB chunks, {IN_FLIGHT} parts in flight; 'uploads left' after a write "
        "failed at part 4"
    )
    table.notes.append(
        "RangedReader: 1 MiB reads from a worker thread, 2 ms of work each, one block read-ahead"
    )
    return [table]


def main() -> None:
    """Print the table."""
    if len(sys.argv) == 3 and sys.argv[1] == "--case":
        _child(sys.argv[2])
        return
    show(run())


if __name__ == "__main__":
    main()
