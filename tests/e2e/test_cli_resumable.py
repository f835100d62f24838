"""`imuflow upload` over tus: it survives `kill -9` of ingest mid-upload, and, killed itself
mid-upload, the same command continues from the stored offset. Both end with exact counts."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from imuflow.settings import Settings
from tests.e2e.helpers import make_token
from tests.faults.helpers import FAST_JOB_ENV, fetchval, kill, service_pid, synth_csv, wait_for, wait_terminal
from tests.stack import ServiceStack, StartStack

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.faults, pytest.mark.timeout(180)]
ROWS = 60_000  # ~3.6 MB: a few seconds at the rate below
SLOW = ["--limit-rate", "1M", "--chunk-size", "256k"]  # "mid-way" lasts seconds, not a race


def _write_stack_env(stack: ServiceStack, data_dir: Path, token: str) -> None:
    data_dir.mkdir(exist_ok=True)
    (data_dir / "stack.env").write_text(
        f"IMUFLOW_INGEST_URL={stack.ingest_url}\nIMUFLOW_PROGRESS_URL={stack.progress_url}\n"
        f"IMUFLOW_TOKEN={token}\n"
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def _cli(
    stack: ServiceStack, data_dir: Path, token: str, path: Path, *extra: str
) -> asyncio.subprocess.Process:
    _write_stack_env(stack, data_dir, token)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMUFLOW_")}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "imuflow.cli.main",
        "--data-dir",
        str(data_dir),
        "upload",
        str(path),
        *extra,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def _offset(database_url: str, at_least: int) -> int:
    value: int = await wait_for(
        database_url,
        "SELECT max(upload_offset) FROM tus_uploads WHERE upload_offset >= $1 AND completed_at IS NULL",
        at_least,
        timeout=30,
        interval=0.05,
        what=f"{at_least} bytes uploaded",
    )
    return value


async def _check_file(database_url: str, output: str, path: Path) -> None:
    file_id = re.findall(r"^([0-9a-f-]{36})$", output, re.MULTILINE)[-1]
    final = await wait_terminal(database_url, file_id, timeout=30)
    assert (final.status, final.samples, final.distinct) == ("completed", ROWS, ROWS), final
    sha = await fetchval(database_url, "SELECT sha256 FROM imu_data_files WHERE id = $1::uuid", file_id)
    assert sha == _sha256(path)


async def test_cli_survives_kill_9_of_ingest_mid_upload(
    service_stack: StartStack, test_settings: Settings, database_url: str, tmp_path: Path
) -> None:
    stack = await service_stack(test_settings, env=FAST_JOB_ENV)
    token = await make_token(database_url, "erin")
    path = synth_csv(tmp_path / "walk.csv", ROWS)
    cli = await _cli(stack, tmp_path / "cli", token, path, *SLOW)
    reading = asyncio.create_task(cli.communicate())
    await _offset(database_url, 512 * 1024)
    kill(service_pid(stack.supervisor, "ingest"))  # the supervisor restarts it
    out, _ = await asyncio.wait_for(reading, 120)
    output = out.decode()
    assert cli.returncode == 0, output
    assert "completed" in output and f"{ROWS:,}/{ROWS:,} samples" in output, output
    await _check_file(database_url, output, path)
    assert stack.supervisor.services["ingest"].starts >= 2


async def test_cli_killed_mid_upload_continues_from_the_stored_offset(
    service_stack: StartStack, test_settings: Settings, database_url: str, tmp_path: Path
) -> None:
    stack = await service_stack(test_settings, env=FAST_JOB_ENV)
    token = await make_token(database_url, "erin")
    path = synth_csv(tmp_path / "walk.csv", ROWS)
    first = await _cli(stack, tmp_path / "cli", token, path, *SLOW)
    reached = await _offset(database_url, 1024 * 1024)
    first.send_signal(signal.SIGKILL)
    await first.wait()
    stored = int(await fetchval(database_url, "SELECT upload_offset FROM tus_uploads"))
    assert reached <= stored < path.stat().st_size
    again = await _cli(stack, tmp_path / "cli", token, path)
    out, _ = await asyncio.wait_for(again.communicate(), 120)
    output = out.decode()
    assert again.returncode == 0, output
    resumed = int(re.search(r"resumed from byte ([\d,]+)", output).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert resumed == stored
    assert (tmp_path / "cli" / "uploads.json").read_text().strip() == "{}"  # forgotten once finished
    await _check_file(database_url, output, path)
