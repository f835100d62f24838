"""Isolation matrix: every route of both services (from their OpenAPI), called as nobody,
as a stranger, as a bad token and as the owner, against real running services.

Routes are enumerated from `/openapi.json`, so a route added later is covered without
touching this test; a new path parameter fails loudly until it gets a test value.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest

from imuflow import auth, db
from imuflow.auth import SESSION_COOKIE
from imuflow.settings import Settings
from tests.e2e.helpers import DATA, bearer, follow_until_done, make_token, upload
from tests.security.helpers import Answer, Route, call, fill_path, routes_of
from tests.stack import ServiceStack, StartStack

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(240)]
XIO = DATA / "xio_fusion_sensor_data.csv"
REPO = Path(__file__).resolve().parents[2]


async def _expired_token(url: str, user: str) -> str:
    conn = await db.connect(url)
    try:
        past = datetime.now(UTC) - timedelta(minutes=1)
        return await auth.create_token(conn, user, expires_at=past)
    finally:
        await conn.close()


async def _revoked_token(url: str, user: str) -> str:
    """A token revoked with the real CLI (`imuflow token revoke ID`)."""
    token = await make_token(url, user)
    conn = await asyncpg.connect(url)
    try:
        token_id = await conn.fetchval(
            "SELECT id::text FROM api_tokens WHERE token_hash = $1", auth.hash_token(token)
        )
    finally:
        await conn.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMUFLOW_")}
    env["IMUFLOW_DATABASE_URL"] = url
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "imuflow.cli.main", "token", "revoke", token_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return token


async def _file_snapshot(url: str, file_id: str) -> tuple[object, ...]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT status, samples_processed, percent, batch_number, attempts, "
            "(SELECT count(*) FROM imu_samples WHERE file_id = $1::uuid) AS samples, "
            "(SELECT count(*) FROM streaming_processing_logs WHERE file_id = $1::uuid) AS logs "
            "FROM imu_data_files WHERE id = $1::uuid",
            file_id,
        )
    finally:
        await conn.close()
    assert row is not None, "A's file disappeared"
    return tuple(row.values())


async def _settled_snapshot(url: str, file_id: str, batches: int) -> tuple[object, ...]:
    for _ in range(100):
        snapshot = await _file_snapshot(url, file_id)
        if snapshot[-1] == batches:
            return snapshot
        await asyncio.sleep(0.1)
    raise AssertionError(f"the batch log never reached {batches} rows: {snapshot}")


def _leaks(answer: Answer, secrets: tuple[str, ...]) -> bool:
    return any(s in answer.body for s in secrets)


async def _all_routes(client: httpx.AsyncClient, stack: ServiceStack) -> list[Route]:
    routes = await routes_of(client, "ingest", stack.ingest_url)
    routes += await routes_of(client, "progress", stack.progress_url)
    assert any(r.is_admin for r in routes) and any(r.is_stream for r in routes)
    return routes


async def test_every_route_isolates_users(
    test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    stack = await service_stack(test_settings)
    alice = await make_token(database_url, "alice")
    bob = await make_token(database_url, "bob")
    root = await make_token(database_url, "root", admin=True)
    expired = await _expired_token(database_url, "alice")
    revoked = await _revoked_token(database_url, "alice")

    uploaded = await upload(stack.ingest_url, alice, XIO)
    assert uploaded.status_code == 202, uploaded.text
    file_id = uploaded.json()["id"]
    events_url = f"{stack.progress_url}/api/files/{file_id}/events"
    final = (await asyncio.wait_for(follow_until_done(events_url, alice), 120))[-1]
    assert final.type == "completed", final.record
    # The batch log is applied from progress events, which may trail the parser's own
    # `completed`: wait for it to settle so only bob's calls could change the snapshot.
    before = await _settled_snapshot(database_url, file_id, final.record["batch_number"])
    alice_data = (file_id, XIO.name)
    async with httpx.AsyncClient(timeout=15) as client:
        created = await client.post(
            f"{stack.ingest_url}/api/uploads",
            headers={**bearer(alice), "Tus-Resumable": "1.0.0", "Upload-Length": "100"},
        )
    assert created.status_code == 201, created.text
    upload_id = created.headers["location"].rsplit("/", 1)[-1]  # alice's unfinished tus upload
    params = {"file_id": file_id, "outbox_id": "1", "upload_id": upload_id}  # no such dead letter: 404

    problems: list[str] = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(15.0)) as client:
        routes = await _all_routes(client, stack)
        anonymous = {
            "no token": {},
            "expired token": bearer(expired),
            "revoked token": bearer(revoked),
            "garbage token": bearer("imf_" + "x" * 43),
            "token in the query": {},  # tokens are never accepted from URLs
        }
        for route in routes:
            url = fill_path(route, params)
            for who, headers in anonymous.items():
                target = f"{url}?token={alice}" if who == "token in the query" else url
                answer = await call(client, route, target, headers)
                if _leaks(answer, alice_data):
                    problems.append(f"{route} as {who}: body shows alice's file")
                if not route.is_open and answer.status != 401:
                    problems.append(f"{route} as {who}: {answer.status}, expected 401")
            if route.is_open:
                continue
            answer = await call(client, route, url, bearer(bob))
            if _leaks(answer, alice_data):
                problems.append(f"{route} as bob: body shows alice's file ({answer.status})")
            if route.is_admin and answer.status != 403:
                problems.append(f"{route} as bob: {answer.status}, expected 403")
            if route.is_file_scoped and answer.status != 404:
                problems.append(f"{route} as bob: {answer.status}, expected 404")
            if route.is_admin and (answer := await call(client, route, url, bearer(alice))).status != 403:
                problems.append(f"{route} as alice (not admin): {answer.status}, expected 403")

        # Bob called every command on alice's file (delete included): nothing changed.
        after = await _file_snapshot(database_url, file_id)
        if after != before:
            problems.append(f"bob's calls changed alice's file: {before} -> {after}")

        for route in routes:
            if not route.is_read or route.is_open:
                continue
            token = root if route.is_admin else alice
            answer = await call(client, route, fill_path(route, params), bearer(token))
            if not 200 <= answer.status < 300:
                problems.append(f"{route} as its owner: {answer.status} {answer.body[:200]}")
            elif _names_the_file(route) and file_id not in answer.body:
                problems.append(f"{route} as its owner: answered without the file ({answer.body[:200]})")

    logs = _service_logs(stack)
    tokens = {"alice": alice, "bob": bob, "root": root, "expired": expired, "revoked": revoked}
    for who, secret in tokens.items():
        if secret in logs:
            problems.append(f"{who}'s token appears in a service log")
    assert not problems, "\n".join(problems)


def _names_the_file(route: Route) -> bool:
    """Owner reads whose body must mention the file (exports, reports and the preview, whose
    shape SPEC §7 fixes without an id, carry samples)."""
    return not route.is_admin and not route.path.endswith(("/samples", "/batches", "/preview"))


def _service_logs(stack: ServiceStack) -> str:
    text = "".join(path.read_text(errors="replace") for path in stack.logs.values() if path.exists())
    assert text, "the services wrote no logs"
    return text


async def test_session_cookie_works_on_both_services_until_signed_out(
    test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    stack = await service_stack(test_settings)
    alice = await make_token(database_url, "alice")
    async with httpx.AsyncClient(timeout=30) as client:
        signed_in = await client.post(f"{stack.progress_url}/api/session", json={"token": alice})
        assert signed_in.status_code == 204, signed_in.text
        cookie_line = signed_in.headers["set-cookie"].lower()
        assert "httponly" in cookie_line and "samesite=strict" in cookie_line
        session = signed_in.cookies[SESSION_COOKIE]
        assert session != alice, "the cookie must hold a session token, not the API token"
        jar = {"Cookie": f"{SESSION_COOKIE}={session}"}

        listed = await client.get(f"{stack.progress_url}/api/files", headers=jar)
        assert listed.status_code == 200, listed.text
        files = {"file": ("cookie.csv", b"time,ax,ay,az\n0,1,2,3\n1,1,2,3\n")}
        uploaded = await client.post(f"{stack.ingest_url}/api/files", headers=jar, files=files)
        assert uploaded.status_code == 202, uploaded.text
        mine = await client.get(f"{stack.progress_url}/api/files/{uploaded.json()['id']}", headers=jar)
        assert mine.status_code == 200, mine.text

        signed_out = await client.delete(f"{stack.progress_url}/api/session", headers=jar)
        assert signed_out.status_code == 204
        assert (await client.get(f"{stack.progress_url}/api/files", headers=jar)).status_code == 401
        again = await client.post(f"{stack.ingest_url}/api/files", headers=jar, files=files)
        assert again.status_code == 401, again.text
        # The API token itself still works: signing out ends only the session.
        assert (await client.get(f"{stack.progress_url}/api/files", headers=bearer(alice))).status_code == 200

    logs = _service_logs(stack)
    for secret in (alice, session):
        assert secret not in logs, "a token appeared in a service log"
