"""E-mail alerts from the running progress service: the watchdog's events as one digest (aiosmtpd)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from imuflow import db
from tests.ops.jobs import make_job, make_user
from tests.ops.receiver import WebhookReceiver
from tests.ops.smtp import SmtpServer, body
from tests.stack import StartStack

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(180)]


async def test_requeues_and_failures_arrive_as_one_digest_and_on_the_webhook(
    service_stack: StartStack, settings_factory: Any
) -> None:
    with SmtpServer() as smtp:
        async with WebhookReceiver() as hook:
            settings = settings_factory(
                stuck_after=2.0,
                max_attempts=2,
                alert_webhook_url=hook.url,
                alert_email_to="ops@example.org",
                alert_email_from="imuflow@example.org",
                smtp_host="127.0.0.1",
                smtp_port=smtp.port,
                alert_email_interval=3.0,
            )
            conn = await db.connect(settings.database_url)
            try:
                frank = await make_user(conn, "frank")
                requeue = await make_job(conn, frank, checkpoint_ago=60, claimed_ago=70, filename="again.csv")
                doomed = await make_job(
                    conn, frank, checkpoint_ago=60, claimed_ago=70, attempts=2, filename="doomed.csv"
                )
            finally:
                await conn.close()
            await service_stack(settings, services=["progress"])
            for _ in range(300):  # bounded: ~30 s
                if smtp.mailbox.snapshot():
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
            kinds = {(b["kind"], b["file_id"]) for b in hook.bodies}
    mails = smtp.mailbox.snapshot()
    assert len(mails) == 1, [m["Subject"] for m in mails]
    text = body(mails[0])
    for file_id, name in ((requeue, "again.csv"), (doomed, "doomed.csv")):
        assert f"id:     {file_id}" in text and f"file:   {name}" in text
    assert text.count("owner:  frank") >= 2
    assert "job_requeued" in text and "job_failed" in text and "after 2 of 2 attempts" in text
    assert {("job_requeued", str(requeue)), ("job_failed", str(doomed))} <= kinds
