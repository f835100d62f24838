"""Sentry error tracking, checked at a local envelope receiver: tags, scrubbing, real services."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
import sentry_sdk

from imuflow import db, logs, sentry
from imuflow.sentry import FILTERED, prepare
from imuflow.settings import Settings
from tests.e2e.helpers import bearer, make_token, upload
from tests.faults.helpers import synth_csv
from tests.faults.test_dead_letters import record_poison_upload
from tests.ops.jobs import make_job, make_user
from tests.ops.receiver import EnvelopeReceiver
from tests.stack import StartStack
from tests.waiting import until

SECRETS = ("tok-secret-header-1", "cookie-secret-2", "body-secret-3", "extra-secret-4")


def test_events_are_tagged_and_scrubbed() -> None:
    event: dict[str, Any] = {
        "tags": {"route": "/x"},
        "request": {
            "headers": {"Authorization": "Bearer abc", "Cookie": "imuflow_session=xyz", "Accept": "*/*"},
            "cookies": {"imuflow_session": "xyz"},
            "data": {"token": "abc", "user": "alice"},
        },
        "extra": {"ctx": {"file_id": "f-1", "action": "error"}, "note": "sent Bearer abc once"},
        "breadcrumbs": {"values": [{"data": {"password": "pw", "rows": 3}}]},
    }
    out = prepare(event, "ingest")
    assert out["tags"] == {"route": "/x", "service": "ingest", "file_id": "f-1"}
    assert out["request"]["headers"] == {"Authorization": FILTERED, "Cookie": FILTERED, "Accept": "*/*"}
    assert out["request"]["cookies"] == FILTERED and out["request"]["data"]["token"] == FILTERED
    assert out["request"]["data"]["user"] == "alice" and out["extra"]["note"] == FILTERED
    assert out["breadcrumbs"]["values"][0]["data"] == {"password": FILTERED, "rows": 3}
    # Without a file_id on the log line, the task's log context gives it.
    with logs.context(file_id="f-2"):
        assert prepare({"extra": {}}, "parser")["tags"] == {"service": "parser", "file_id": "f-2"}
    assert "file_id" not in prepare({}, "parser")["tags"]


APP = textwrap.dedent(
    """
    import asyncio, logging, sys
    import httpx
    from fastapi import FastAPI, Request
    from imuflow import logs, sentry
    from imuflow.settings import Settings

    async def main() -> None:
        on = sentry.init("progress", Settings(database_url="x", sentry_dsn=sys.argv[1]))
        assert on == bool(sys.argv[1]), on
        app = FastAPI()

        @app.post("/boom")
        async def boom(request: Request) -> None:
            await request.json()
            logs.bind(file_id="0b0e0f00-0000-4000-8000-000000000001")
            raise RuntimeError("unexpected failure in a request")

        async def dies() -> None:
            raise ValueError("a background task died")

        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.post(
                "/boom",
                headers={
                    "Authorization": "Bearer tok-secret-header-1",
                    "Cookie": "imuflow_session=cookie-secret-2",
                },
                json={"token": "body-secret-3"},
            )
            assert r.status_code == 500, r.status_code
        task = asyncio.create_task(dies())
        await asyncio.wait([task])
        secret = {"ctx": {"token": "extra-secret-4"}}
        logging.getLogger("imuflow.test").error("logged with a secret", extra=secret)
        import sentry_sdk
        sentry_sdk.flush(timeout=10)

    asyncio.run(main())
    """
)


async def run_app(dsn: str, **env: str) -> None:
    """Run APP (errors in a request, a task and a log line) in its own process."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("IMUFLOW_", "SENTRY_"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", APP, dsn, env={**clean, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()


def test_off_while_the_dsn_is_empty() -> None:
    assert not sentry.init("ingest", Settings(database_url="x"))
    assert not sentry_sdk.is_initialized()


async def test_nothing_is_sent_unless_imuflow_sentry_dsn_is_set() -> None:
    async with EnvelopeReceiver() as receiver:
        # The SDK would read its own SENTRY_DSN by itself: imuflow never starts it without ours.
        await run_app("", SENTRY_DSN=receiver.dsn)
        assert receiver.paths == []


async def test_a_service_reports_request_task_and_logged_errors_without_secrets() -> None:
    async with EnvelopeReceiver() as receiver:
        await run_app(receiver.dsn)
        events = receiver.events()
        raw = receiver.everything()
    assert receiver.paths and all(p == "/api/1/envelope/" for p in receiver.paths)
    by_message = {_exception_value(e) or e.get("logentry", {}).get("message", ""): e for e in events}
    request = by_message["unexpected failure in a request"]
    assert request["tags"]["service"] == "progress"
    assert request["tags"]["file_id"] == "0b0e0f00-0000-4000-8000-000000000001"
    assert request["request"]["url"].endswith("/boom")
    assert "a background task died" in by_message  # the asyncio integration
    logged = by_message["logged with a secret"]
    assert logged["level"] == "error" and logged["tags"]["service"] == "progress"
    for secret in SECRETS:
        assert secret.encode() not in raw, secret


def _exception_value(event: dict[str, Any]) -> str | None:
    values = event.get("exception", {}).get("values") or []
    return values[-1]["value"] if values else None


@pytest.mark.integration
@pytest.mark.e2e
@pytest.mark.timeout(180)
async def test_jobs_failed_for_infrastructure_reasons_reach_sentry_with_their_file_id(
    service_stack: StartStack, settings_factory: Any
) -> None:
    async with EnvelopeReceiver() as receiver:
        settings: Settings = settings_factory(sentry_dsn=receiver.dsn, stuck_after=30.0, max_attempts=2)
        conn = await db.connect(settings.database_url)
        try:
            erin = await make_user(conn, "erin")
            # Delivered again after its attempts are spent: the parser gives up on it.
            spent = await make_job(
                conn, erin, status="queued", attempts=2, queued_ago=0, claimed_ago=None, filename="spent.csv"
            )
            await conn.execute(
                "UPDATE imu_data_files SET last_error = 'connection reset by peer' WHERE id = $1", spent
            )
            await conn.execute(
                """
                INSERT INTO outbox (topic, key, payload)
                SELECT 'files.v1', f.id::text, jsonb_build_object(
                    'schema_version', 1, 'event_id', gen_random_uuid(), 'file_id', f.id, 'user_id', f.user_id,
                    'type', 'file.queued', 'reason', 'requeue', 'run', f.run, 'storage_uri', f.storage_uri,
                    'filename', f.filename, 'size_bytes', f.size_bytes, 'format', f.format,
                    'sensor', f.sensor, 'timezone', f.timezone, 'queued_at', now())
                FROM imu_data_files f WHERE f.id = $1
                """,
                spent,
            )
            # Its parser hung with no attempt left: the progress service's watchdog fails it.
            hung = await make_job(
                conn, erin, checkpoint_ago=600, claimed_ago=700, attempts=2, filename="hung.csv"
            )
        finally:
            await conn.close()
        await service_stack(settings, services=["progress", "parser"])

        def reported() -> dict[str, dict[str, Any]]:
            return {
                e["tags"].get("file_id"): e
                for e in receiver.events()
                if e.get("tags", {}).get("failure_reason")
            }

        for _ in range(300):  # bounded: ~60 s
            if {str(spent), str(hung)} <= set(reported()):
                break
            await asyncio.sleep(0.2)
        events = reported()
    parser_event, watchdog_event = events[str(spent)], events[str(hung)]
    assert (
        parser_event["tags"]["service"] == "parser" and parser_event["tags"]["failure_reason"] == "attempts"
    )
    assert "connection reset by peer" in json.dumps(parser_event)
    assert (
        watchdog_event["tags"]["service"] == "progress"
        and watchdog_event["tags"]["failure_reason"] == "stuck"
    )
    assert parser_event["level"] == "error"


@pytest.mark.integration
@pytest.mark.e2e
@pytest.mark.timeout(180)
async def test_ingest_reports_an_event_it_can_never_publish_with_its_file_id_and_no_token(
    service_stack: StartStack, settings_factory: Any, tmp_path: Path
) -> None:
    """The third service: ingest's outbox relay meets a row the broker can never take (over
    IMUFLOW_KAFKA_MAX_MESSAGE_BYTES), an error of ours, reported with the file's id; the
    token of the upload that went through the same process never reaches Sentry."""
    async with EnvelopeReceiver() as receiver:
        settings: Settings = settings_factory(sentry_dsn=receiver.dsn, kafka_max_message_bytes=8192)
        stack = await service_stack(settings, services=["ingest"])
        token = await make_token(settings.database_url, "ivan")
        answer = await upload(stack.ingest_url, token, synth_csv(tmp_path / "fine.csv", 100))
        assert answer.status_code == 202, answer.text
        pool = await db.create_pool(settings.database_url)
        try:
            conn = await db.connect(settings.database_url)
            try:
                ivan = await make_user(conn, "ivan")
            finally:
                await conn.close()
            poison = await record_poison_upload(pool, ivan, 20_000)  # its event: over 8 KiB
        finally:
            await pool.close()

        async def reported() -> list[dict[str, Any]]:
            return [e for e in receiver.events() if e.get("tags", {}).get("file_id") == str(poison)]

        (event, *_) = await until(reported, "the dead letter reported", within=60, every=0.2)
        raw = receiver.everything()
    assert event["tags"]["service"] == "ingest" and event["level"] == "error"
    assert "dead-lettered" in json.dumps(event)
    assert token.encode() not in raw


@pytest.mark.integration
@pytest.mark.e2e
@pytest.mark.timeout(120)
async def test_a_permanent_database_error_of_a_route_is_reported_not_only_answered(
    service_stack: StartStack, settings_factory: Any
) -> None:
    """A statement that can never succeed (here on a view this test renamed in its own
    database) is a bug, not an outage: the request still gets its 503, and the progress
    service reports it to Sentry without the caller's token."""
    async with EnvelopeReceiver() as receiver:
        settings: Settings = settings_factory(sentry_dsn=receiver.dsn)
        stack = await service_stack(settings, services=["progress"])
        token = await make_token(settings.database_url, "rita")
        conn = await db.connect(settings.database_url)
        try:
            await conn.execute("ALTER VIEW file_records RENAME TO file_records_gone")
        finally:
            await conn.close()
        async with httpx.AsyncClient(timeout=30, headers=bearer(token)) as client:
            answer = await client.get(f"{stack.progress_url}/api/files")
        assert answer.status_code == 503, answer.text

        async def reported() -> list[dict[str, Any]]:
            return [e for e in receiver.events() if "not transiently" in json.dumps(e)]

        (event, *_) = await until(reported, "the database error reported", within=30, every=0.2)
        raw = receiver.everything()
    assert event["tags"]["service"] == "progress" and event["level"] == "error"
    assert "file_records" in json.dumps(event)  # the driver's own message names the view
    assert token.encode() not in raw
