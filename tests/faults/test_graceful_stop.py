"""SIGTERM: every service stops taking work, finishes or abandons its in-flight batch within
the grace period and exits cleanly; an abandoned job's offset stays uncommitted, so the job
is delivered again and resumes (no watchdog involved: STUCK_AFTER is left at its default)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from imuflow.settings import Settings
from tests.e2e.helpers import make_token, upload
from tests.faults.helpers import (
    FAST_JOB_ENV,
    kill,
    service_pid,
    synth_csv,
    wait_checkpoint,
    wait_restarted,
    wait_terminal,
)
from tests.stack import ServiceStack, StartStack

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(180)]
SAMPLES = 250_000  # 250 batches: SIGTERM at batch 20, seconds before the end at ~55-190 batches/s
BATCH = 1_000
GRACE = 15.0  # the parser abandons its jobs within 10 s, its tasks within 15 s


async def _terminate(stack: ServiceStack, name: str) -> float:
    """SIGTERM a service; return how long it took to exit (it must exit 0)."""
    pid = service_pid(stack.supervisor, name)
    shutdowns = stack.logs[name].read_text().count("Application shutdown complete")
    began = time.monotonic()
    kill(pid, signal.SIGTERM)
    await wait_restarted(stack.supervisor, name, pid, timeout=GRACE + 10)
    state = stack.supervisor.services[name]
    # uvicorn re-raises SIGTERM after its graceful shutdown, so web services end with -15;
    # what matters is that the lifespan shutdown (tasks stopped, pools closed) completed.
    assert state.last_exit in (0, -signal.SIGTERM), f"{name} exited with {state.last_exit}"
    assert stack.logs[name].read_text().count("Application shutdown complete") > shutdowns
    return time.monotonic() - began - state.next_delay


async def test_sigterm_stops_every_service_cleanly_and_loses_no_work(
    tmp_path: Path, test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    stack = await service_stack(test_settings, env={**FAST_JOB_ENV, "IMUFLOW_BATCH_SIZE": str(BATCH)})
    token = await make_token(database_url, "alice")
    file_id = (await upload(stack.ingest_url, token, synth_csv(tmp_path / "big.csv", SAMPLES))).json()["id"]
    await wait_checkpoint(database_url, file_id, 20, timeout=60)

    took = await _terminate(stack, "parser")
    assert took < GRACE
    log = stack.logs["parser"].read_text()
    assert "abandoning at a batch boundary" in log
    final = await wait_terminal(database_url, file_id, timeout=90)
    assert final.status == "completed", final
    assert (final.samples, final.distinct) == (SAMPLES, SAMPLES)
    assert final.attempts == 2  # redelivered from Kafka: the offset was not committed

    for name in ("progress", "ingest"):
        assert await _terminate(stack, name) < GRACE
    await stack.supervisor.wait_healthy(within=60)
