"""Checkpoint cadence of one long upload through the embedded stack.

The end-to-end benchmark's 2M-sample file parses in a few seconds, too short for the batch
sizer to settle; this uploads one larger generic CSV (default 20M rows, ~2 GB) and prints
the seconds between its consecutive checkpoints. Not part of `make bench` (~1 min):

    python -m benchmarks.cadence [--rows N]
"""

from __future__ import annotations

import argparse
import asyncio

import httpx

from benchmarks.common import Table, show
from benchmarks.end_to_end import Watcher, cadence, parser_ready
from benchmarks.stack import EmbeddedStack
from benchmarks.text_reader import synthesise


async def _run(rows: int) -> list[Table]:
    async with EmbeddedStack() as stack, httpx.AsyncClient(trust_env=False, timeout=60) as client:
        await stack.start("front", services=("ingest", "progress"))
        await parser_ready(stack, tracking=True)
        path = stack.dir / "long.csv"
        await asyncio.to_thread(synthesise, path, rows)
        watcher = Watcher(stack, client)
        try:
            await asyncio.sleep(0.2)  # the stream is open before the upload
            record = await stack.upload(client, path)
            await watcher.until_done({record["id"]}, timeout=1800)
        finally:
            await watcher.close()
        return show([await cadence(stack, [record["id"]], f"{rows:,}-row generic CSV")])


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    asyncio.run(_run(parser.parse_args().rows))


if __name__ == "__main__":
    main()
