"""A reader that never returns (its stored upload is a FIFO nobody writes to): the watchdog
requeues the job, the parser notices on its timer that the job was taken away and frees the
slot and partition, so the files behind it are parsed; the hung job ends failed once its
attempts are spent, and the blocked threads do not keep the parser from stopping."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from imuflow.settings import Settings
from tests.e2e.helpers import make_token, upload
from tests.faults.helpers import FAST_JOB_ENV, fetchval, service_pid, synth_csv, wait_terminal
from tests.stack import StartStack

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(180)]
ENV = {
    **FAST_JOB_ENV,
    "IMUFLOW_BATCH_SIZE": "1000",
    "IMUFLOW_STUCK_AFTER": "2",
    "IMUFLOW_MAX_ATTEMPTS": "2",
    # One partition: every file waits behind the hung one unless its slot comes free.
    "IMUFLOW_KAFKA_TOPIC_PARTITIONS": "1",
}


async def test_a_hung_reader_does_not_pin_its_slot_or_partition(
    tmp_path: Path, test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    stack = await service_stack(test_settings, env=ENV, services=("ingest", "progress"))
    token = await make_token(database_url, "alice")
    hung = (await upload(stack.ingest_url, token, synth_csv(tmp_path / "hung.csv", 5_000))).json()["id"]
    uri = await fetchval(database_url, "SELECT storage_uri FROM imu_data_files WHERE id = $1::uuid", hung)
    _replace_with_fifo(Path(uri.removeprefix("file://")))
    behind = [
        (await upload(stack.ingest_url, token, synth_csv(tmp_path / f"ok{i}.csv", 20_000 + i))).json()["id"]
        for i in range(2)
    ]
    parser = await service_stack(test_settings, env=ENV, services=("parser",))
    pid = service_pid(parser.supervisor, "parser")

    for i, file_id in enumerate(behind):
        final = await wait_terminal(database_url, file_id, timeout=60)
        assert final.status == "completed", final
        assert (final.samples, final.distinct) == (20_000 + i, 20_000 + i)
    final = await wait_terminal(database_url, hung, timeout=60)
    assert final.status == "failed", final
    assert final.error_message is not None and "after 2 of 2 attempts" in final.error_message, final
    assert service_pid(parser.supervisor, "parser") == pid  # never restarted: no crash, no wedge
    assert "job taken away while working" in parser.logs["parser"].read_text()

    await parser.supervisor.stop()
    # Two threads are still blocked in open(); they must not hold the process up.
    assert parser.supervisor.services["parser"].process is not None
    assert parser.supervisor.services["parser"].process.returncode != -signal.SIGKILL


def _replace_with_fifo(path: Path) -> None:
    """The stored upload becomes a FIFO: open() blocks until a writer comes; none ever does."""
    path.unlink()
    os.mkfifo(path)
