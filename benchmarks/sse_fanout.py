"""Benchmark: SSE fan-out to 1,000 and 10,000 connected clients at one event per second,
straight from the progress process and through the Pushpin SSE edge, side by side.

Only the progress service runs (restarted per row: with the edge it also publishes to
it). A ticker updates one file of the bench user once a second
(`last_checkpoint_at = clock_timestamp()`) and appends its event (`record_file_event`),
exactly what the progress applier does per batch; every client follows `/api/events`, so
each receives one event per second. Clients are raw asyncio sockets in 2 processes (the
load generator shares the 2 cores with the server), reading the stream and taking, per
event, receive time minus the record's `last_checkpoint_at` (same clock). Server CPU is
the progress process's CPU seconds over the measured window (plus, through the edge, every
Pushpin process's: runner, condure, zurl, proxy, handler); memory their RSS. The edge row
is skipped, with an install hint, where Pushpin is not installed.

`python -m benchmarks.sse_fanout`
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import resource
import time
import uuid
from collections.abc import Callable, Coroutine
from datetime import datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import asyncpg
import psutil

from benchmarks.common import Table, percentile, show
from benchmarks.stack import EmbeddedStack
from imuflow.stack.edge import INSTALL_HINT, EdgeConfig, local_edge, pushpin_binary, running_edge

CLIENTS = (1_000, 10_000)
TARGET = "p99 ≤ 250 ms, 100 %"  # issue 17, at 10,000 clients
CONNECT_ATTEMPTS = 20
SETTLE_SECONDS = 3.0
PROCESSES = 2
WINDOW = 20.0  # seconds of 1 event/s measured (>= 3 x 3 runs' worth of events per client)
MARKER = b'"last_checkpoint_at":"'


def raise_nofile() -> None:
    """Allow as many sockets as the hard limit (inherited by the services we start)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def open_events(host: str, port: int, token: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw socket that has asked for `/api/events` as the bearer of `token`."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"GET /api/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    return reader, writer


async def connect_all(
    clients: list[Coroutine[Any, Any, None]], readies: list[asyncio.Event]
) -> list[asyncio.Task[None]]:
    """Start the clients 200 at a time (to stay inside the listen backlog); return once each
    has set its `ready` event (had its snapshot)."""
    tasks = []
    for i, client in enumerate(clients):
        tasks.append(asyncio.create_task(client))
        if i % 200 == 199:
            await asyncio.sleep(0.05)
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 300)
    return tasks


async def start_client_processes(
    target: Callable[[str, int, str, int, Connection], None], stack: EmbeddedStack, n: int, port: int = 0
) -> tuple[list[Connection], list[BaseProcess]]:
    """`n` clients of the progress service (or of whatever listens on `port`) split over
    PROCESSES spawned processes, each running `target(host, port, token, its share, pipe)`;
    return once all said "connected"."""
    host, port = "127.0.0.1", port or stack.settings.progress_port
    ctx = mp.get_context("spawn")
    pipes, procs = [], []
    for k in range(PROCESSES):
        mine = n // PROCESSES + (1 if k < n % PROCESSES else 0)
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=target, args=(host, port, stack.token, mine, child), daemon=True)
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    loop = asyncio.get_running_loop()
    for pipe in pipes:
        if await loop.run_in_executor(None, pipe.recv) != "connected":
            raise RuntimeError("clients did not connect")
    return pipes, procs


class StartRefused(ConnectionError):
    """The stream did not start: reset, or answered with another status than 200."""


async def _client(
    host: str, port: int, token: str, delays: list[float], ready: asyncio.Event, retried: list[int]
) -> None:
    # Until its first event a client retries (counted in `retried`, shown in the table): of
    # 10,000 connections opened within seconds, a server just started on a loaded machine
    # resets some, and Pushpin answers 502 for a few whose request to it was reset.
    for attempt in range(CONNECT_ATTEMPTS):
        try:
            await _follow(host, port, token, delays, ready)
            return
        except (ConnectionError, TimeoutError):  # reset, refused, or the connect timed out
            if ready.is_set() or attempt == CONNECT_ATTEMPTS - 1:
                raise
            retried[0] += 1
            await asyncio.sleep(0.5)


async def _follow(host: str, port: int, token: str, delays: list[float], ready: asyncio.Event) -> None:
    reader, writer = await open_events(host, port, token)
    first = True
    try:
        status = await reader.readline()
        if not status.startswith(b"HTTP/1.1 200"):
            raise StartRefused(status.decode(errors="replace").strip() or "closed")
        while True:
            line = await reader.readline()
            if not line:
                return
            if not line.startswith(b"data:"):
                continue
            if first:  # the current-state snapshot: connected
                first = False
                ready.set()
                continue
            received = time.time()
            start = line.find(MARKER)
            if start >= 0:
                start += len(MARKER)
                stamp = line[start : line.index(b'"', start)].decode()
                delays.append(received - datetime.fromisoformat(stamp).timestamp())
    finally:
        writer.close()


async def _clients(host: str, port: int, token: str, n: int, pipe: Connection) -> None:
    delays: list[float] = []
    readies = [asyncio.Event() for _ in range(n)]
    retried = [0]
    tasks = await connect_all([_client(host, port, token, delays, r, retried) for r in readies], readies)
    pipe.send("connected")
    await asyncio.get_running_loop().run_in_executor(None, pipe.recv)  # "start"
    delays.clear()
    await asyncio.get_running_loop().run_in_executor(None, pipe.recv)  # "stop"
    pipe.send((delays, retried[0]))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _client_process(host: str, port: int, token: str, n: int, pipe: Connection) -> None:
    raise_nofile()
    asyncio.run(_clients(host, port, token, n, pipe))


async def _ticker(url: str, file_id: uuid.UUID, stop: asyncio.Event) -> int:
    conn = await asyncpg.connect(url)
    ticks = 0
    try:
        while not stop.is_set():
            async with conn.transaction():
                await conn.execute(
                    "UPDATE imu_data_files SET last_checkpoint_at = clock_timestamp(), "
                    "samples_processed = samples_processed + 1, status = 'parsing' WHERE id = $1",
                    file_id,
                )
                await conn.execute("SELECT record_file_event($1)", file_id)
            ticks += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        await conn.close()
    return ticks


def _tree(root: psutil.Process) -> list[psutil.Process]:
    """A process and all its descendants (Pushpin's runner starts four programs)."""
    return [root, *root.children(recursive=True)]


def _cpu(processes: list[psutil.Process]) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in processes)


async def _measure(
    stack: EmbeddedStack, url: str, file_id: uuid.UUID, n: int, edge: tuple[EdgeConfig, int] | None
) -> list[object]:
    port = int(edge[0].listen.rpartition(":")[2]) if edge else 0
    pipes, procs = await start_client_processes(_client_process, stack, n, port)
    loop = asyncio.get_running_loop()
    servers = [stack.process("progress"), *(_tree(psutil.Process(edge[1])) if edge else [])]
    for pipe in pipes:
        pipe.send("start")
    cpu0, edge0, t0 = _cpu(servers), _cpu(servers[1:]), time.perf_counter()
    stop = asyncio.Event()
    ticker = asyncio.create_task(_ticker(url, file_id, stop))
    await asyncio.sleep(WINDOW)
    stop.set()
    ticks = await ticker
    # The last event reaches everyone (p99 is seconds at 10,000 clients on a loaded machine).
    await asyncio.sleep(SETTLE_SECONDS)
    edge_cpu = _cpu(servers[1:]) - edge0
    cpu_seconds = _cpu(servers) - cpu0
    cpu = cpu_seconds / (time.perf_counter() - t0)
    rss = sum(p.memory_info().rss for p in servers) / 1024**2
    delays: list[float] = []
    retries = 0
    for pipe in pipes:
        pipe.send("stop")
    for pipe in pipes:
        got, retried = await loop.run_in_executor(None, pipe.recv)
        delays += got
        retries += retried
    for proc in procs:
        proc.join(10)
    ms = [d * 1000 for d in delays]
    expected = ticks * n
    # Per delivered event: all of it, and (through the edge) Pushpin's part of it.
    per_event = f"{1e6 * cpu_seconds / len(ms):.0f}" if ms else "-"
    if edge and ms:
        per_event += f" ({1e6 * edge_cpu / len(ms):.0f} Pushpin)"
    delivered = f"{100 * len(ms) / max(expected, 1):.1f} %"
    path = "Pushpin edge" if edge else "direct"
    target = TARGET if n >= 10_000 else ""
    p50, p99, top = percentile(ms, 50), percentile(ms, 99), max(ms)
    return [n, path, retries, len(ms), delivered, p50, p99, top, f"{100 * cpu:.0f} %", per_event, rss, target]


async def _row(
    stack: EmbeddedStack, url: str, file_id: uuid.UUID, n: int, through_edge: bool
) -> list[object]:
    """One measurement on a freshly started progress service (publishing to an edge, or not)."""
    # Every client is the one bench user: lift the per-user stream limit (50) for them.
    env = {"IMUFLOW_MAX_STREAMS_PER_USER": "20000"}
    if not through_edge:
        await stack.start("front", services=("progress",), env=env)
        try:
            return await _measure(stack, url, file_id, n, None)
        finally:
            await stack.stop("front")
    binary = pushpin_binary()
    assert binary is not None
    config = local_edge(stack.dir / f"edge-{n}", [f"127.0.0.1:{stack.settings.progress_port}"], binary)
    env |= {"IMUFLOW_SSE_EDGE_KEY": config.sig_key, "IMUFLOW_SSE_EDGE_PUBLISH_URL": config.publish_url}
    with running_edge(config) as pushpin:
        await stack.start("front", services=("progress",), env=env)
        try:
            return await _measure(stack, url, file_id, n, (config, pushpin.pid))
        finally:
            await stack.stop("front")


async def _run() -> list[Table]:
    raise_nofile()
    edge = pushpin_binary() is not None
    async with EmbeddedStack() as stack:
        assert stack.pg is not None
        url = stack.pg.url
        conn = await asyncpg.connect(url)
        try:
            user_id = await conn.fetchval("SELECT id FROM users WHERE name = 'bench'")
            file_id = uuid.uuid4()
            await conn.execute(
                "INSERT INTO imu_data_files (id, user_id, filename, size_bytes, sha256, storage_uri) "
                "VALUES ($1, $2, 'fanout.csv', 1, 'x', 'file:///dev/null')",
                file_id,
                user_id,
            )
        finally:
            await conn.close()
        table = Table(
            f"SSE fan-out: one event per second to every client, {WINDOW:.0f} s measured, "
            "direct and through the edge",
            [
                "clients",
                "path",
                "starts retried",
                "events received",
                "of expected",
                "p50 ms",
                "p99 ms",
                "max ms",
                "server CPU",
                "CPU µs/event",
                "RSS MB",
                "target",
            ],
            notes=[
                f"clients: raw asyncio sockets in {PROCESSES} processes on the same 2 cores as the server; "
                "latency = receive time - the record's last_checkpoint_at (set in the event's transaction); "
                "a client whose stream did not start (reset, not 200) retries after 0.5 s: starts retried.",
                f"nofile limit: {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}; "
                "server CPU is % of one core, CPU µs/event its CPU time per delivered event, RSS its "
                "memory: the progress process's, plus through the edge every Pushpin process's.",
                "Pushpin edge: the same progress service publishes each event once to Pushpin, which holds "
                "the clients' connections (services/progress/grip.py)."
                if edge
                else f"Pushpin edge rows skipped: pushpin not found; {INSTALL_HINT}.",
            ],
        )
        for n in CLIENTS:
            for through_edge in (False, True) if edge else (False,):
                table.rows.append(await _row(stack, url, file_id, n, through_edge))
                print(f"  {n} clients: {table.cells()[-1]}", flush=True)
                await asyncio.sleep(2)
        return show([table])


def run() -> list[Table]:
    """Measure on a fresh embedded stack."""
    return asyncio.run(_run())


def main() -> None:
    """Measure and print."""
    run()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
