"""E-mail alerts from the running progress service: the watchdog's three events (SPEC §7:
`job_requeued`, `job_failed`, `jobs_stuck`) as one digest (aiosmtpd) and on the webhook."""

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


async def test_requeued_failed_and_stuck_jobs_arrive_as_one_digest_and_on_the_webhook(
    service_stack: StartStack, settings_factory: Any
) -> None:
    with SmtpServer() as smtp:
        async with WebhookReceiver() as hook:
            # STUCK_AFTER 30 s: rounds every 3 s, and the reset ends a lock holder only after
            # 60 s, so the hung job below stays stuck for the whole test, however slow the start.
            settings = settings_factory(
                stuck_after=30.0,
                max_attempts=2,
                alert_webhook_url=hook.url,
                alert_email_to="ops@example.org",
                alert_email_from="imuflow@example.org",
                smtp_host="127.0.0.1",
                smtp_port=smtp.port,
                alert_email_interval=8.0,
            )
            conn = await db.connect(settings.database_url)
            parser = await db.connect(settings.database_url)  # plays a hung parser
            hold = parser.transaction()
            try:
                frank = await make_user(conn, "frank")
                requeue = await make_job(conn, frank, checkpoint_ago=60, claimed_ago=70, filename="again.csv")
                doomed = await make_job(
                    conn, frank, checkpoint_ago=60, claimed_ago=70, attempts=2, filename="doomed.csv"
                )
                hung = await make_job(conn, frank, checkpoint_ago=60, claimed_ago=70, filename="hung.csv")
                # Its parser holds the row lock: the watchdog's reset skips the row (the parser
                # may be alive), so it stays stuck round after round: `jobs_stuck`, once.
                await hold.start()
                await parser.execute("SELECT 1 FROM imu_data_files WHERE id = $1 FOR UPDATE", hung)
                await service_stack(settings, services=["progress"])
                for _ in range(400):  # bounded: ~40 s
                    if smtp.mailbox.snapshot():
                        break
                    await asyncio.sleep(0.1)
                await asyncio.sleep(1.0)  # a second digest, if one were (wrongly) sent now, lands
                bodies = list(hook.bodies)
            finally:
                await hold.rollback()
                await parser.close()
                await conn.close()
    mails = smtp.mailbox.snapshot()
    assert len(mails) == 1, [m["Subject"] for m in mails]
    text = body(mails[0])
    for file_id, name in ((requeue, "again.csv"), (doomed, "doomed.csv"), (hung, "hung.csv")):
        assert f"id:     {file_id}" in text and f"file:   {name}" in text, name
    assert text.count("owner:  frank") >= 3
    assert "job_requeued" in text and "job_failed" in text and "jobs_stuck" in text
    assert "after 2 of 2 attempts" in text and "reset did not take" in text
    assert "1 stuck" in mails[0]["Subject"] and "1 failed" in mails[0]["Subject"]

    kinds = {(b["kind"], b["file_id"]) for b in bodies}
    assert {("job_requeued", str(requeue)), ("job_failed", str(doomed)), ("jobs_stuck", str(hung))} <= kinds
    (stuck,) = [b for b in bodies if b["kind"] == "jobs_stuck"]  # named once, not every round
    (named,) = stuck["files"]
    assert (named["file_id"], named["filename"], named["owner"]) == (str(hung), "hung.csv", "frank")
    assert "no progress for" in named["reason"]
