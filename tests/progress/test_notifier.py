"""The alert webhook: body formats, retries, refusals and the bounded queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from imuflow import metrics
from imuflow.stack.procs import free_port
from services.progress.notifier import Alert, AlertFile, Notifier, render
from tests.ops.receiver import WebhookReceiver

ALERT = Alert("job_failed", "f-1", "job f-1 failed: bad header", {"reason": "bad header"})


def count(outcome: str) -> float:
    return float(metrics.ALERT_NOTIFICATIONS.labels(outcome)._value.get())


async def deliver(notifier: Notifier, *alerts: Alert) -> None:
    """Run the notifier until its queue is empty and the last post is done."""
    stop = asyncio.Event()
    for alert in alerts:
        notifier.notify(alert)
    task = asyncio.create_task(notifier.run(stop))
    before = count("sent") + count("failed")
    for _ in range(1_000):  # bounded: at most ~20 s
        if count("sent") + count("failed") >= before + len(alerts):
            break
        await asyncio.sleep(0.02)
    stop.set()
    await task


@pytest.fixture
async def receiver(request: pytest.FixtureRequest) -> AsyncIterator[WebhookReceiver]:
    statuses = getattr(request, "param", [])
    async with WebhookReceiver(statuses) as r:
        yield r


def test_json_and_slack_bodies() -> None:
    generic = render(ALERT, "json")
    assert generic["source"] == "imuflow" and generic["kind"] == "job_failed"
    assert generic["file_id"] == "f-1" and generic["reason"] == "bad header" and generic["at"]
    assert render(ALERT, "slack") == {"text": ":x: imuflow: job f-1 failed: bad header"}


async def test_posts_slack_body(receiver: WebhookReceiver) -> None:
    await deliver(Notifier(receiver.url, "slack", backoff=0.01), ALERT)
    assert receiver.bodies == [{"text": ":x: imuflow: job f-1 failed: bad header"}]


@pytest.mark.parametrize("receiver", [[500, 503]], indirect=True)
async def test_retries_server_errors(receiver: WebhookReceiver) -> None:
    sent = count("sent")
    await deliver(Notifier(receiver.url, backoff=0.01), ALERT)
    assert receiver.attempts == 3 and len(receiver.bodies) == 1
    assert count("sent") == sent + 1


@pytest.mark.parametrize("receiver", [[400]], indirect=True)
async def test_a_refusal_is_not_retried(receiver: WebhookReceiver) -> None:
    failed = count("failed")
    await deliver(Notifier(receiver.url, backoff=0.01), ALERT)
    assert receiver.attempts == 1 and receiver.bodies == []
    assert count("failed") == failed + 1


async def test_an_unreachable_webhook_gives_up_after_the_retries() -> None:
    failed = count("failed")
    notifier = Notifier(f"http://127.0.0.1:{free_port()}/hook", retries=2, backoff=0.01, timeout=1)
    await deliver(notifier, ALERT)
    assert count("failed") == failed + 1


async def test_queue_is_bounded_and_drops_the_oldest(receiver: WebhookReceiver) -> None:
    dropped = count("dropped")
    notifier = Notifier(receiver.url, max_queue=2, backoff=0.01)
    alerts = [Alert("job_requeued", f"f-{i}", f"job f-{i} requeued") for i in range(5)]
    for alert in alerts[:3]:
        notifier.notify(alert)
    assert notifier.pending == 2 and count("dropped") == dropped + 1
    await deliver(notifier, *alerts[3:])
    assert [b["file_id"] for b in receiver.bodies] == ["f-3", "f-4"]
    assert count("dropped") == dropped + 3


def test_a_jobs_stuck_alert_names_every_file() -> None:
    files = (AlertFile("f-1", "a.csv", "alice", "locked"), AlertFile("f-2", "b.csv", "bob", "locked"))
    alert = Alert("jobs_stuck", "f-1", "2 job(s) stay stuck", {"count": 2}, files=files)
    body = render(alert, "json")
    assert body["kind"] == "jobs_stuck" and body["count"] == 2
    assert body["files"] == [
        {"file_id": "f-1", "filename": "a.csv", "owner": "alice", "reason": "locked"},
        {"file_id": "f-2", "filename": "b.csv", "owner": "bob", "reason": "locked"},
    ]
    assert render(alert, "slack") == {"text": ":rotating_light: imuflow: 2 job(s) stay stuck"}
    # A per-job alert names its one file from its details.
    assert render(ALERT, "json")["files"] == [
        {"file_id": "f-1", "filename": "?", "owner": "?", "reason": "bad header"}
    ]
