"""The operator API, page and watchdog, on a running progress service (real Postgres, broker)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from imuflow import db
from imuflow.settings import Settings
from tests.e2e.helpers import bearer, events, make_token
from tests.ops.jobs import add_batches, make_job, make_user
from tests.ops.receiver import WebhookReceiver
from tests.stack import StartStack
from tests.waiting import until

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(180)]


async def _get(url: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.get(url, headers=bearer(token) if token else {}, **kwargs)


async def _post(url: str, token: str, body: Any = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(url, headers=bearer(token), json=body)


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as r:
        yield r


async def test_operator_api_needs_an_admin_and_sees_every_user(
    service_stack: StartStack, test_settings: Settings
) -> None:
    url = test_settings.database_url
    stack = await service_stack(services=["progress"])
    base = f"{stack.progress_url}/api/admin"
    admin = await make_token(url, "root", admin=True)
    alice_token = await make_token(url, "alice")
    conn = await db.connect(url)
    try:
        alice, bob = await make_user(conn, "alice"), await make_user(conn, "bob")
        stuck = await make_job(conn, alice, checkpoint_ago=4000, claimed_ago=5000, filename="a.csv")
        busy = await make_job(conn, bob, checkpoint_ago=1, claimed_ago=50, filename="b.csv")
        await add_batches(conn, busy, bob, [20.0, 40.0, 60.0])
    finally:
        await conn.close()

    for path in ("/jobs", "/stuck", "/performance", "/events"):
        assert (await _get(base + path)).status_code == 401, path
        forbidden = await _get(base + path, alice_token)
        assert forbidden.status_code == 403 and "admin" in forbidden.json()["detail"], path
    assert (await _post(base + "/stuck/reset", alice_token)).status_code == 403

    jobs = (await _get(base + "/jobs", admin)).json()
    owners = {j["id"]: (j["owner"], j["is_stuck"]) for j in jobs["items"]}
    assert owners == {str(stuck): ("alice", True), str(busy): ("bob", False)}
    assert jobs["counts"] == {"parsing": 2}
    only_parsing = (await _get(base + "/jobs", admin, params={"status": "completed"})).json()
    assert only_parsing["items"] == []
    assert (await _get(base + "/jobs", admin, params={"status": "nope"})).status_code == 422

    listed = (await _get(base + "/stuck", admin)).json()["items"]
    assert [(r["file_id"], r["owner"]) for r in listed] == [(str(stuck), "alice")]
    assert (await _get(base + "/stuck", admin, params={"older_than_seconds": -1})).status_code == 422

    perf = (await _get(base + "/performance", admin)).json()
    assert perf["overall"]["batches"] == 3 and perf["overall"]["batch_ms_p50"] == pytest.approx(40)
    assert [f["file_id"] for f in perf["files"]] == [str(busy)]

    reset = (await _post(base + "/stuck/reset", admin, {"older_than_seconds": 600})).json()
    assert [(a["file_id"], a["action"]) for a in reset["items"]] == [(str(stuck), "requeued")]

    # The admin stream covers both users' files, starting with their current state.
    seen: dict[str, str] = {}
    async for event in events(f"{base}/events", admin, timeout=20):
        seen[event.record["id"]] = event.record["status"]
        if len(seen) == 2:
            break
    assert seen == {str(stuck): "queued", str(busy): "parsing"}

    page = await _get(f"{stack.progress_url}/admin")
    assert page.status_code == 200 and 'type="password"' in page.text
    script = await _get(f"{stack.progress_url}/admin.js")
    assert "/api/admin/events" in script.text and '"aria-valuenow"' in script.text
    schema = (await _get(f"{stack.progress_url}/openapi.json")).json()
    for path in ("/api/admin/jobs", "/api/admin/events", "/api/admin/stuck", "/api/admin/stuck/reset"):
        assert path in schema["paths"]


async def test_watchdog_requeues_a_stuck_job_and_alerts(
    service_stack: StartStack, settings_factory: Any, receiver: WebhookReceiver
) -> None:
    settings = settings_factory(
        stuck_after=2.0, max_attempts=2, alert_webhook_url=receiver.url, alert_webhook_format="json"
    )
    conn = await db.connect(settings.database_url)
    try:
        alice = await make_user(conn, "alice")
        # Its parser died: the last checkpoint is a minute old; one attempt left.
        requeue = await make_job(conn, alice, checkpoint_ago=60, claimed_ago=70, attempts=1)
        # This one already used both attempts: the watchdog fails it.
        doomed = await make_job(conn, alice, checkpoint_ago=60, claimed_ago=70, attempts=2)
    finally:
        await conn.close()
    stack = await service_stack(settings, services=["progress"])

    async def states() -> dict[Any, Any] | None:
        c = await db.connect(settings.database_url)
        try:
            rows = await c.fetch("SELECT id, status, error_message FROM imu_data_files")
            published = await c.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL")
        finally:
            await c.close()
        by_id = {r["id"]: r for r in rows}
        if by_id[requeue]["status"] == "queued" and by_id[doomed]["status"] == "failed" and published:
            return by_id
        return None

    final = await until(states, "one job requeued, one failed, the outbox published", within=30, every=0.3)
    assert "after 2 of 2 attempts" in final[doomed]["error_message"]
    bodies = await until(
        lambda: receiver.when(lambda b: len(b) >= 2), "two webhook calls", within=30, every=0.3
    )
    kinds = {(b["kind"], b["file_id"]) for b in bodies}
    assert kinds == {("job_requeued", str(requeue)), ("job_failed", str(doomed))}
    assert all(b["source"] == "imuflow" and b["summary"] for b in bodies)

    # A queued job with no parser to claim it is requeued again every STUCK_AFTER: >= 1.
    metrics = (await _get(f"{stack.progress_url}/metrics")).text
    assert sample(metrics, 'imuflow_watchdog_actions_total{action="requeued"}') >= 1
    assert sample(metrics, 'imuflow_watchdog_actions_total{action="failed"}') == 1
    assert sample(metrics, 'imuflow_parse_failures_total{reason="stuck"}') == 1
    assert sample(metrics, 'imuflow_alert_notifications_total{outcome="sent"}') >= 2
    assert sample(metrics, "imuflow_stuck_jobs") == 0


def sample(text: str, series: str) -> float:
    """The value of one series in a Prometheus text exposition."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not exported")
