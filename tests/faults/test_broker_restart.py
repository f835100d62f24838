"""The broker restarts empty (Tansu keeps nothing) with uploads queued and a job half done:
every job still completes, exactly, and every committed batch has its batch-log row, even
those whose progress events died with the broker. Runs on a private broker, never the
session's."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from imuflow.settings import Settings
from imuflow.stack.broker import Broker, start_broker
from tests.e2e.helpers import make_token, upload
from tests.faults.helpers import (
    FAST_JOB_ENV,
    fetchval,
    stored,
    synth_csv,
    wait_checkpoint,
    wait_terminal,
)
from tests.servers import SettingsFactory
from tests.stack import StartStack

pytestmark = [
    pytest.mark.integration,
    pytest.mark.faults,
    pytest.mark.timeout(240),
    pytest.mark.xdist_group("cpu"),
]
BATCH = 1_000
# The first job is still parsing at batch 30, when the broker goes: 1,000 batches, since the
# readers parse ~190 batches of 1,000 a second here and the progress service's stop comes
# first. The jobs queued behind it (and the one uploaded while the broker is down) are small.
SIZES = (1_000_000, 20_001, 20_002, 20_010)


async def test_broker_restarted_empty_loses_no_job(
    tmp_path: Path,
    settings_factory: SettingsFactory,
    service_stack: StartStack,
    database_url: str,
    private_broker: Broker,
) -> None:
    settings: Settings = settings_factory(kafka_bootstrap_servers=private_broker.bootstrap_servers)
    env = {
        **FAST_JOB_ENV,
        "IMUFLOW_BATCH_SIZE": str(BATCH),
        # A queued job whose Kafka event died with the broker is requeued after this.
        "IMUFLOW_STUCK_AFTER": "5",
        "IMUFLOW_PARSER_CONCURRENCY": "1",
    }
    # The uploads first, then the parser: one job half done (one parser slot), the
    # others queued on Kafka behind it, when the broker dies.
    stack = await service_stack(settings, env=env, services=("ingest",))
    progress = await service_stack(settings, env=env, services=("progress",))
    token = await make_token(database_url, "alice")
    paths = [synth_csv(tmp_path / f"f{i}.csv", size) for i, size in enumerate(SIZES[:3])]
    ids = []
    for path in paths:
        response = await upload(stack.ingest_url, token, path)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    await service_stack(settings, env=env, services=("parser",))
    done = await wait_checkpoint(database_url, ids[0], 20, timeout=60)

    # The progress service stops: the progress events of the next batches reach the
    # broker and die with it, unconsumed (deterministically; a live consumer races it).
    await progress.supervisor.stop()
    await wait_checkpoint(database_url, ids[0], done + 10, timeout=60)
    assert (await stored(database_url, ids[0])).status == "parsing"
    port, log_path = private_broker.port, private_broker.log_path
    private_broker.process.kill()  # a crash: topics, messages, groups and offsets all gone
    private_broker.process.wait()
    # Uploaded while the broker is down: committed, its event waits in the outbox.
    late = synth_csv(tmp_path / "late.csv", SIZES[3])
    response = await upload(stack.ingest_url, token, late)
    assert response.status_code == 202, response.text
    ids.append(response.json()["id"])
    await asyncio.sleep(2.0)
    restarted = await start_broker(port, log_path=log_path)
    try:
        progress = await service_stack(settings, env=env, services=("progress",))
        for i, file_id in enumerate(ids):
            final = await wait_terminal(database_url, file_id, timeout=120)
            expected = SIZES[i]
            assert final.status == "completed", (i, final)
            assert (final.samples, final.distinct) == (expected, expected), (i, final)
            assert await stored(database_url, file_id) == final
            # Its batch log is complete the moment it completes: each row commits with
            # its batch (the first file's lost events left holes here).
            log = await fetchval(
                database_url,
                "SELECT ARRAY[count(*), min(batch_number), max(batch_number), "
                "sum(samples_in_batch), count(DISTINCT batch_number)]::bigint[] "
                "FROM streaming_processing_logs WHERE file_id = $1::uuid",
                file_id,
            )
            n = final.resume_batch_number
            assert log == [n, 1, n, expected, n], (i, log)
        # The progress consumer survived the restart (its commits once hung forever on
        # partitions the new broker did not have): it applies the new broker's events.
        await _wait_applied(progress.progress_url, 0.0)
    finally:
        restarted.stop()


async def _applied(progress_url: str) -> float:
    """The progress service's count of applied progress events."""
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"{progress_url}/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "imuflow_progress_events_total" and sample.labels.get("outcome") == "applied":
                return float(sample.value)
    return 0.0


async def _wait_applied(progress_url: str, before: float, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (now := await _applied(progress_url)) <= before:
        assert asyncio.get_running_loop().time() < deadline, f"no progress event applied ({now})"
        await asyncio.sleep(0.2)
