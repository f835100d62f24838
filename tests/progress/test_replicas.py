"""Progress replicas (SPEC §7 "Paging, replicas, operators"): two progress processes, each a
page origin, share the work of applying progress events (one Kafka consumer group) and the
fan-out (file_events rows and NOTIFY in Postgres), so a client of either replica gets every
event of its files whichever replica applied it. The services are the real ones."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from imuflow.auth import SESSION_COOKIE
from imuflow.settings import Settings
from tests.e2e.helpers import TERMINAL, Event, bearer, events, make_token, upload
from tests.ops.receiver import WebhookReceiver
from tests.progress.sse_helpers import finish, new_file
from tests.servers import SettingsFactory
from tests.stack import StartStack
from tests.waiting import until

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(240)]
FILES = 4
ROWS = 6_000  # 12 batches of 500 each


def _csv(path: Path, seed: int) -> Path:
    rows = "".join(f"{t},{seed},{t % 7},{t % 11}\n" for t in range(ROWS))
    path.write_text("time,ax,ay,az\n" + rows)
    return path


async def _follow(url: str, token: str, got: list[Event]) -> None:
    """Read a stream until FILES files have ended (their terminal event)."""
    ended: set[str] = set()
    stream = events(url, token, timeout=120)
    try:
        async for event in stream:
            got.append(event)
            if event.record["status"] in TERMINAL:
                ended.add(event.record["id"])
            if len(ended) == FILES:
                return
    finally:
        await stream.aclose()  # type: ignore[attr-defined]  # an async generator


def _sample(text: str, name: str, **labels: str) -> float:
    """The sum of a metric family's samples with these labels in a /metrics page."""
    for family in text_string_to_metric_families(text):
        if family.name == name:
            return sum(s.value for s in family.samples if labels.items() <= s.labels.items())
    return 0.0


async def _metric(url: str, name: str, **labels: str) -> float:
    async with httpx.AsyncClient(timeout=10) as client:
        return _sample((await client.get(f"{url}/metrics")).text, name, **labels)


async def test_a_client_of_either_replica_gets_every_event_whichever_replica_applied_it(
    test_settings: Settings, service_stack: StartStack, database_url: str, tmp_path: Path
) -> None:
    stack = await service_stack(
        test_settings,
        {"IMUFLOW_BATCH_SIZE": "500", "IMUFLOW_ADAPTIVE_BATCHING": "false"},
        progress_replicas=2,
    )
    assert len(stack.progress_urls) == 2 and stack.progress_urls[0] == stack.progress_url
    token = await make_token(database_url, "alice")

    # One client per replica follows all of alice's files from before the first upload.
    got: dict[str, list[Event]] = {url: [] for url in stack.progress_urls}
    wanted: set[str] = set()
    followers = {url: asyncio.create_task(_follow(f"{url}/api/events", token, got[url])) for url in got}
    for url in stack.progress_urls:  # both subscribed (the snapshot of no file is empty)
        await until(partial(_metric, url, "imuflow_sse_clients"), f"a client of {url}", within=15)
    for n in range(FILES):
        response = await upload(stack.ingest_url, token, _csv(tmp_path / f"f{n}.csv", n))
        assert response.status_code == 202, response.text
        wanted.add(response.json()["id"])
    try:
        await asyncio.wait_for(asyncio.gather(*followers.values()), 120)
    finally:
        for task in followers.values():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    conn = await asyncpg.connect(database_url)
    try:
        log = await conn.fetch("SELECT id, file_id::text, event_type FROM file_events ORDER BY id")
    finally:
        await conn.close()
    changes = {(str(r["id"]), r["file_id"]) for r in log if r["event_type"] != "progress"}
    assert {f for _, f in changes} == wanted, "every file ended with a state change"
    logged = {str(r["id"]) for r in log}
    applied = [
        await _metric(url, "imuflow_progress_events", outcome="applied") for url in stack.progress_urls
    ]
    assert sum(applied) > 0, applied
    for url, seen in got.items():
        ids = [int(e.id) for e in seen]
        assert ids == sorted(ids) and len(ids) == len(set(ids)), (url, ids)
        assert {e.id for e in seen} <= logged, "an event that is not in the log"
        mine = {(e.id, e.record["id"]) for e in seen if e.type != "progress"}
        assert mine == changes, f"{url} (applied {applied}) missed state changes: {changes - mine}"
        per_file: dict[str, list[float]] = defaultdict(list)
        for e in seen:
            per_file[e.record["id"]].append(e.record["percent"] or 0)
        for file_id, percents in per_file.items():
            assert percents == sorted(percents), (url, file_id, percents)
            assert percents[-1] == 100, (url, file_id, percents)


async def test_each_replica_is_a_page_origin_and_foreign_origins_stay_refused(
    test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    stack = await service_stack(test_settings, services=("ingest", "progress"), progress_replicas=2)
    token = await make_token(database_url, "alice")
    host = stack.progress_url.rsplit(":", 1)[0]
    made = iter(range(1_000))

    def csv() -> dict[str, tuple[str, bytes]]:  # new content each time: no duplicate upload
        return {"file": ("o.csv", f"time,ax,ay,az\n0,1,2,{next(made)}\n".encode())}

    async with httpx.AsyncClient(timeout=30) as client:
        for page in stack.progress_urls:
            signed = await client.post(f"{page}/api/session", headers={"Origin": page}, json={"token": token})
            assert signed.status_code == 204, (page, signed.text)
            jar = {"Cookie": f"{SESSION_COOKIE}={signed.cookies[SESSION_COOKIE]}"}
            for other in stack.progress_urls:  # a page of any replica may call every service
                ok = await client.post(
                    f"{stack.ingest_url}/api/files", headers={**jar, "Origin": other}, files=csv()
                )
                assert ok.status_code == 202, (page, other, ok.text)
                assert ok.headers["access-control-allow-origin"] == other
                preflight = await client.options(
                    f"{stack.ingest_url}/api/files",
                    headers={"Origin": other, "Access-Control-Request-Method": "POST"},
                )
                assert preflight.status_code == 200, (other, preflight.text)
                file_id = ok.json()["id"]
                cancel = await client.post(
                    f"{page}/api/files/{file_id}/cancel", headers={**jar, "Origin": other}
                )
                assert cancel.status_code in (200, 409), (page, other, cancel.text)
            foreign = {"Origin": f"{host}:1"}  # same host, a port no replica is on
            refused = await client.post(
                f"{stack.ingest_url}/api/files", headers={**jar, **foreign}, files=csv()
            )
            assert refused.status_code == 403, refused.text
            assert "access-control-allow-origin" not in refused.headers
            cross = await client.delete(f"{page}/api/session", headers={**jar, **foreign})
            assert cross.status_code == 403, cross.text
            bad = await client.options(
                f"{stack.ingest_url}/api/files",
                headers={**foreign, "Access-Control-Request-Method": "POST"},
            )
            assert bad.status_code == 400
        # A bearer token is unaffected by origin, on every replica.
        for page in stack.progress_urls:
            listed = await client.get(f"{page}/api/files", headers={**bearer(token), "Origin": f"{host}:1"})
            assert listed.status_code == 200


async def test_two_replicas_alert_each_failed_job_once(
    settings_factory: SettingsFactory, service_stack: StartStack, database_url: str
) -> None:
    # The watchdog, which also sends the failure alerts, runs on both replicas every second;
    # only the one holding the advisory lock acts, and the alert cursor is in Postgres.
    async with WebhookReceiver() as receiver:
        settings = settings_factory(alert_webhook_url=receiver.url, stuck_after=10.0)
        await service_stack(settings, services=("progress",), progress_replicas=2)
        conn = await asyncpg.connect(database_url)
        try:
            await make_token(database_url, "alice")
            files = [await new_file(conn, "alice", f"bad{n}.csv") for n in range(3)]
            for n, file_id in enumerate(files):
                await finish(conn, file_id, "failed")
                if n == 0:
                    await asyncio.sleep(2.5)  # the others in later rounds
        finally:
            await conn.close()

        def alerted(bodies: list[dict[str, Any]]) -> bool:
            return {b.get("file_id") for b in bodies} >= set(files)

        await until(partial(receiver.when, alerted), "every failure alerted", within=30)
        await asyncio.sleep(5)  # several more rounds of both replicas
    failed = [b["file_id"] for b in receiver.bodies if b.get("kind") == "job_failed"]
    assert sorted(failed) == sorted(files), receiver.bodies
