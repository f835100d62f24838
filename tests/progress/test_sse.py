"""SSE ids and replay (SPEC §4 "SSE"): distinct, resumable ids on a new connection's snapshot,
coalesced replay, the full state for a Last-Event-ID the log does not know, and pruning of
the event log. Files and events are made straight in Postgres; the progress service that
streams them is the real one."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import httpx
import pytest

from imuflow.settings import Settings
from imuflow.stack.procs import free_port
from tests.e2e.helpers import bearer, make_token
from tests.progress.sse_helpers import (
    NEW_FILE,
    as_int,
    finish,
    new_file,
    progress,
    read_events,
    record_ids,
    summary,
)
from tests.stack import StartStack
from tests.waiting import until

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(180)]


async def test_a_client_dropped_mid_snapshot_resumes_without_losing_a_file(
    test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    stack = await service_stack(test_settings, services=("progress",))
    token = await make_token(database_url, "alice")
    await make_token(database_url, "bob")
    conn = await asyncpg.connect(database_url)
    try:
        files = [await new_file(conn, "alice", f"f{i}.csv") for i in range(6)]
        await new_file(conn, "bob", "not-yours.csv")
        await progress(conn, files[0], 10)  # the first file changed last: it comes last
        # A row made by hand has no event at all: it still shows, first.
        by_hand = uuid.uuid4()
        await conn.execute(NEW_FILE, by_hand, "alice", "by-hand.csv")
        files.append(str(by_hand))
    finally:
        await conn.close()
    url = f"{stack.progress_url}/api/events"

    snapshot = await read_events(url, bearer(token), count=len(files))
    assert sorted(record_ids(snapshot)) == sorted(files)
    ids = as_int(snapshot)
    assert len(set(ids)) == len(ids), f"snapshot rows share ids: {ids}"
    assert ids == sorted(ids), "snapshot ids must grow so that any one of them can be resumed from"
    assert record_ids(snapshot)[-1] == files[0]
    assert record_ids(snapshot)[0] == str(by_hand)

    # Drop after each row in turn: the resumed stream brings exactly the rest.
    for cut in range(1, len(files)):
        head = await read_events(url, bearer(token), count=cut)
        rest = await read_events(url, {**bearer(token), "Last-Event-ID": head[-1].id}, seconds=2.0)
        assert record_ids(head) + record_ids(rest) == record_ids(snapshot), (
            cut,
            summary(head),
            summary(rest),
        )


async def test_replay_is_coalesced_to_state_changes_and_the_latest_progress(
    test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    stack = await service_stack(test_settings, services=("progress",))
    token = await make_token(database_url, "alice")
    conn = await asyncpg.connect(database_url)
    try:
        job, other, steady = [
            await new_file(conn, "alice", n) for n in ("job.csv", "other.csv", "steady.csv")
        ]
        mark = await progress(conn, steady, 1)
        for n in range(1, 6):
            await progress(conn, job, n * 100)
        failed = await finish(conn, job, "failed")
        for n in range(1, 4):  # retried: parsing again, then completed
            await progress(conn, job, 600 + n * 100)
        await progress(conn, other, 50)
        latest_other = await progress(conn, other, 70)
        completed = await finish(conn, job, "completed")
    finally:
        await conn.close()

    replay = await read_events(
        f"{stack.progress_url}/api/events", {**bearer(token), "Last-Event-ID": str(mark)}, seconds=2.0
    )
    assert [(e.type, int(e.id)) for e in replay] == [
        ("failed", failed),
        ("progress", latest_other),
        ("completed", completed),
    ], summary(replay)
    assert replay[1].record["samples_processed"] == 70

    # The single-file stream replays the same way.
    one = await read_events(
        f"{stack.progress_url}/api/files/{job}/events",
        {**bearer(token), "Last-Event-ID": str(mark)},
        seconds=2.0,
    )
    assert [e.type for e in one] == ["failed", "completed"], summary(one)


async def test_a_last_event_id_the_log_does_not_know_gets_the_full_state(
    test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    stack = await service_stack(test_settings, services=("progress",))
    token = await make_token(database_url, "alice")
    conn = await asyncpg.connect(database_url)
    try:
        files = [await new_file(conn, "alice", f"f{i}.csv") for i in range(3)]
        await finish(conn, files[1], "completed")
        newest = int(await conn.fetchval("SELECT max(id) FROM file_events"))
    finally:
        await conn.close()
    url = f"{stack.progress_url}/api/events"
    # From another stack (ahead of this log), garbage, too long, negative; and zero, the start.
    for unknown in (str(newest + 1000), "garbage", "9" * 25, "-1", "0"):
        got = await read_events(url, {**bearer(token), "Last-Event-ID": unknown}, count=len(files))
        assert sorted(record_ids(got)) == sorted(files), (unknown, summary(got))
        assert {e.type for e in got if e.record["id"] == files[1]} == {"completed"}


async def test_finished_files_events_are_pruned_and_resuming_past_them_gets_the_state(
    test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    # A retention of 60 s prunes every 6 s; the events are made old by moving their clocks.
    # No replay window: this replica's memory would still hold the pruned events (and replay
    # them, rightly); here the Postgres replay's pruned-through check is what is tested.
    env = {"IMUFLOW_EVENT_RETENTION": "60", "IMUFLOW_SSE_REPLAY_WINDOW": "0"}
    stack = await service_stack(test_settings, env, services=("progress",))
    token = await make_token(database_url, "alice")
    conn = await asyncpg.connect(database_url)
    try:
        done, running, fresh = [
            await new_file(conn, "alice", n) for n in ("done.csv", "running.csv", "fresh.csv")
        ]
        first_done = await progress(conn, done, 10)
        await progress(conn, done, 20)
        last_done = await finish(conn, done, "completed")
        running_ids = [await progress(conn, running, n) for n in (10, 20, 30)]
        await progress(conn, fresh, 10)
        await finish(conn, fresh, "completed")  # finished, but younger than the retention
        await conn.execute(
            "UPDATE file_events SET created_at = now() - interval '1 hour' WHERE file_id = ANY($1::uuid[])",
            [done, running],
        )

        async def pruned() -> bool:
            return bool(
                await conn.fetchval("SELECT count(*) FROM file_events WHERE file_id = $1::uuid", done) <= 1
            )

        await until(pruned, "the event log was pruned", within=30, every=0.3)
        kept = {
            str(r["file_id"]): r["ids"]
            for r in await conn.fetch(
                "SELECT file_id, array_agg(id ORDER BY id) AS ids FROM file_events GROUP BY file_id"
            )
        }
        mark = await conn.fetchval("SELECT pruned_through FROM file_events_retention")
    finally:
        await conn.close()
    assert kept[done] == [last_done], "a finished file keeps exactly its newest event"
    assert running_ids == kept[running][-3:], "an unfinished file keeps every event"
    assert len(kept[fresh]) == 3, "events younger than the retention are kept"
    assert first_done <= mark < last_done
    assert len(kept[running]) == 4

    # Resuming from a pruned id may have missed a state change: the full state instead.
    url = f"{stack.progress_url}/api/events"
    got = await read_events(url, {**bearer(token), "Last-Event-ID": str(first_done)}, count=3)
    assert sorted(record_ids(got)) == sorted([done, running, fresh]), summary(got)
    # Resuming from an id after the pruned ones is still a replay of what came after it.
    after = await read_events(url, {**bearer(token), "Last-Event-ID": str(running_ids[-1])}, seconds=2.0)
    assert record_ids(after) == [fresh], summary(after)


async def test_a_replay_from_memory_equals_the_replay_from_postgres(
    test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    # Half of the log exists before the replica with the window starts (loaded with one
    # query), half comes through its fan-out; the other replica replays from Postgres only.
    token = await make_token(database_url, "alice")
    other = await make_token(database_url, "bob")
    conn = await asyncpg.connect(database_url)
    try:
        files = [await new_file(conn, "alice", f"a{i}.csv") for i in range(3)]
        bobs = await new_file(conn, "bob", "b.csv")
        for n in range(1, 4):
            for f in files:
                await progress(conn, f, n * 100)
        await finish(conn, files[0], "failed")
        memory = await service_stack(test_settings, services=("progress",))
        postgres = await service_stack(
            test_settings.model_copy(update={"progress_port": free_port()}),
            {"IMUFLOW_SSE_REPLAY_WINDOW": "0"},
            services=("progress",),
        )
        for n in range(4, 7):
            for f in files[1:]:
                await progress(conn, f, n * 100)
        await progress(conn, files[0], 700)  # retried
        await progress(conn, bobs, 10)
        await finish(conn, files[1], "cancelled")
        await finish(conn, files[0], "completed")
        ids = [int(r["id"]) for r in await conn.fetch("SELECT id FROM file_events ORDER BY id")]
    finally:
        await conn.close()
    newest = ids[-1]

    async def replay(base: str, path: str, after: int) -> list[tuple[str, str, int]]:
        headers = {**bearer(token), "Last-Event-ID": str(after)}
        got = await read_events(f"{base}{path}", headers, count=newest - after, seconds=1.0)
        return [(e.type, e.id, e.record["samples_processed"]) for e in got]

    for after in [ids[0], ids[2], ids[len(ids) // 2], ids[-3], newest]:
        for path in ("/api/events", f"/api/files/{files[0]}/events"):
            want = await replay(postgres.progress_url, path, after)
            assert await replay(memory.progress_url, path, after) == want, (after, path, want)
    assert await replay(memory.progress_url, "/api/events", ids[0]), "a replay at all"
    bob = await read_events(
        f"{memory.progress_url}/api/events", {**bearer(other), "Last-Event-ID": str(ids[0])}, seconds=1.0
    )
    assert record_ids(bob) == [bobs], summary(bob)


async def test_keep_alive_comments_come_every_ping_interval_on_quiet_and_busy_streams(
    test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    # The stream writes its own keep-alive comments (sse-starlette's ping task is off):
    # at least every IMUFLOW_SSE_PING_SECONDS whether events flow or not, as SPEC §4 says.
    ping, quiet, busy = 0.4, 1.6, 1.6
    stack = await service_stack(
        test_settings, {"IMUFLOW_SSE_PING_SECONDS": str(ping)}, services=("progress",)
    )
    token = await make_token(database_url, "pinged")
    conn = await asyncpg.connect(database_url)
    try:
        file_id = await new_file(conn, "pinged", "pinged.csv")
        loop = asyncio.get_running_loop()
        pings: list[float] = []
        data: list[float] = []

        async def keep_busy() -> None:
            await asyncio.sleep(quiet)
            for n in range(int(busy / 0.1)):
                await progress(conn, file_id, 1000 + n)
                await asyncio.sleep(0.1)

        async with (
            httpx.AsyncClient(timeout=10) as client,
            client.stream("GET", f"{stack.progress_url}/api/events", headers=bearer(token)) as response,
        ):
            assert response.status_code == 200
            began = loop.time()
            writer = asyncio.create_task(keep_busy())
            try:
                async for line in response.aiter_lines():
                    at = loop.time() - began
                    if line.startswith(": ping"):
                        pings.append(at)
                    elif line.startswith("data:"):
                        data.append(at)
                    if at > quiet + busy:
                        break
            finally:
                await writer
    finally:
        await conn.close()
    assert len([t for t in data if t > quiet]) >= 5, data  # the busy half was busy
    slack = 0.6  # a shared machine's scheduling
    gaps = [b - a for a, b in zip([0.0, *pings], [*pings, quiet + busy], strict=True)]
    assert max(gaps) <= ping + slack, (pings, gaps)
    assert any(t > quiet + ping for t in pings), pings  # pings went on while events flowed
