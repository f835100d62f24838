"""The embedded broker dies under a running stack started as `imuflow up` starts it (Tansu
under the supervisor, the three services): it is restarted by itself on the same port
(through AddrInUse exits, with backoff), `/readyz` says `broker: down` meanwhile (parser
503, ingest and progress 200), and work queued before the crash (its event lost with the
in-memory broker) or uploaded while it was down completes within 30 s of its return, long
before the stuck watchdog (STUCK_AFTER 300 s) would have noticed."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from imuflow.stack.broker import SupervisedBroker, kafka_ready, supervise_broker
from imuflow.stack.procs import free_port
from tests.e2e.helpers import make_token, upload
from tests.faults.helpers import (
    FAST_JOB_ENV,
    busy_and_queued,
    fetchval,
    kill,
    stored,
    synth_csv,
    wait_for,
    wait_restarted,
    wait_terminal,
)
from tests.servers import SettingsFactory
from tests.stack import ServiceStack, StartStack
from tests.waiting import until

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(240)]
BUSY_SAMPLES = 400_000  # 400 batches of 1,000: still parsing when the broker goes
SMALL_SAMPLES = 20_000
BACK_WITHIN = 30.0


@pytest.fixture
async def supervised_broker(tmp_path: Path) -> AsyncIterator[SupervisedBroker]:
    """Tansu under its own supervisor, as `imuflow up` runs it (never the session's broker)."""
    broker = await supervise_broker(None, log_path=tmp_path / "broker.log")
    try:
        yield broker
    finally:
        await broker.stop()


async def readyz(url: str) -> tuple[int, dict[str, Any]]:
    """Status code and JSON body of one `/readyz`."""
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        response = await client.get(f"{url}/readyz")
    return response.status_code, response.json()


async def wait_readiness(stack: ServiceStack, broker: str, timeout: float = 20.0) -> dict[str, Any]:
    """Wait until every service reports `broker` as given (and the others ok); their answers."""
    urls = {"ingest": stack.ingest_url, "progress": stack.progress_url, "parser": stack.parser_metrics_url}

    async def answers() -> dict[str, Any] | None:
        found = {name: await readyz(url) for name, url in urls.items()}
        return found if all(body.get("broker") == broker for _, body in found.values()) else None

    return await until(answers, f"readiness showing broker {broker}", within=timeout, every=0.2)


def hold_port(port: int) -> socket.socket:
    """Listen on the broker's port, so a restarted Tansu exits with AddrInUse."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    deadline = time.monotonic() + 10
    while True:
        try:
            sock.bind(("127.0.0.1", port))
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)  # the restarted broker may hold it for a moment; take it next
    sock.listen(64)
    return sock


async def test_dead_broker_is_restarted_and_queued_work_completes(
    tmp_path: Path,
    settings_factory: SettingsFactory,
    service_stack: StartStack,
    database_url: str,
    supervised_broker: SupervisedBroker,
) -> None:
    broker = supervised_broker
    settings = settings_factory(kafka_bootstrap_servers=broker.bootstrap_servers)
    env = {**FAST_JOB_ENV, "IMUFLOW_BATCH_SIZE": "1000", "IMUFLOW_PARSER_CONCURRENCY": "1"}
    stack = await service_stack(settings, env=env)
    token = await make_token(database_url, "alice")

    ok = await wait_readiness(stack, "ok")
    assert all(code == 200 for code, _ in ok.values()), ok
    assert ok["parser"][1] == {"status": "ready", "postgres": "ok", "broker": "ok", "storage": "ok"}

    # One job keeps the only parser slot busy; the next one waits in `queued`, its event on
    # the broker, when the broker dies.
    busy, queued = await busy_and_queued(
        stack.ingest_url, database_url, token, tmp_path, (BUSY_SAMPLES, SMALL_SAMPLES), checkpoint_within=60
    )
    assert (await stored(database_url, busy)).status == "parsing"

    old_pid = broker.pid
    assert old_pid is not None
    kill(old_pid, signal.SIGKILL)  # a crash: every topic, message, group and offset is gone
    # Hold its port a few seconds: the restarts fail with AddrInUse, as when the old
    # process's port is not free yet, and back off; the broker stays down meanwhile.
    holder = await asyncio.to_thread(hold_port, broker.port)
    try:
        down = await wait_readiness(stack, "down")
        assert down["parser"][0] == 503, down
        assert down["parser"][1]["postgres"] == "ok" and down["parser"][1]["storage"] == "ok", down
        for name in ("ingest", "progress"):
            code, body = down[name]
            assert code == 200, down
            assert body["status"] == "ready" and body["postgres"] == "ok", down
            assert "outbox" in body["detail"], down  # says why it stays ready
        # Uploaded while the broker is down: accepted, its event waits in the outbox.
        response = await upload(stack.ingest_url, token, synth_csv(tmp_path / "late.csv", SMALL_SAMPLES + 1))
        assert response.status_code == 202, response.text
        late = response.json()["id"]
        await asyncio.sleep(3.0)
    finally:
        holder.close()

    await wait_restarted(broker.supervisor, "broker", old_pid, timeout=30)
    await until(
        lambda: kafka_ready(broker.bootstrap_servers), "the restarted broker answering", within=30, every=0.1
    )
    back = time.monotonic()
    assert broker.supervisor.services["broker"].starts >= 3  # restarted, AddrInUse exits included

    for file_id, samples in ((queued, SMALL_SAMPLES), (late, SMALL_SAMPLES + 1)):
        left = max(1.0, back + BACK_WITHIN - time.monotonic())
        final = await wait_terminal(database_url, file_id, timeout=left)
        assert final.status == "completed", final
        assert (final.samples, final.distinct) == (samples, samples), final
        # Parsed after the restart: the progress consumer rejoined by itself and applied
        # every batch's event.
        await wait_for(
            database_url,
            "SELECT count(*) = $2 FROM streaming_processing_logs WHERE file_id = $1::uuid",
            file_id,
            final.resume_batch_number,
            timeout=max(1.0, back + BACK_WITHIN - time.monotonic()),
            what=f"the batch log of {file_id}",
        )
    took = time.monotonic() - back
    # What saved the queued job: a service saw the broker's end offsets below what it had
    # taken and republished the event of the `queued` file; the running job was left alone.
    # (The late upload's event may have been acknowledged by the new Tansu into the topic it
    # had not re-created yet, sent with the producer's old metadata, and never delivered:
    # then it was read back, found missing and requeued too.)
    requeues = "SELECT count(*) FROM outbox WHERE key = $1 AND payload->>'reason' = 'requeue'"
    assert await fetchval(database_url, requeues, queued) >= 1
    assert await fetchval(database_url, requeues, busy) == 0
    final = await wait_terminal(database_url, busy, timeout=60)
    assert final.status == "completed", final
    assert (final.samples, final.distinct) == (BUSY_SAMPLES, BUSY_SAMPLES), final
    assert final.attempts == 1, final  # the running job was not requeued: no attempt spent

    ok = await wait_readiness(stack, "ok")
    assert all(code == 200 for code, _ in ok.values()), ok
    print(f"queued and late uploads completed {took:.1f} s after the broker was back")


async def test_web_services_start_ready_without_a_broker(
    tmp_path: Path, settings_factory: SettingsFactory, service_stack: StartStack, database_url: str
) -> None:
    """Restarted while the broker is down, ingest and progress still come up and take
    uploads (they wait in the outbox); the parser is alive but not ready."""
    nowhere = f"127.0.0.1:{free_port()}"
    settings = settings_factory(kafka_bootstrap_servers=nowhere)
    stack = await service_stack(settings, healthy_within=30)
    down = await wait_readiness(stack, "down")
    assert down["parser"][0] == 503, down
    assert down["ingest"][0] == 200 and down["progress"][0] == 200, down
    token = await make_token(database_url, "erin")
    response = await upload(stack.ingest_url, token, synth_csv(tmp_path / "e.csv", 1_000))
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "uploaded"  # its event waits in the outbox
