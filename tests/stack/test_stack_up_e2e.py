"""`imuflow up` end to end: embedded servers, real services, sample job, clean stop."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from imuflow.settings import load_settings, read_env_file
from imuflow.stack.procs import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


async def _read_until(proc: asyncio.subprocess.Process, marker: str, output: str) -> str:
    """Read `up`'s output until `marker` appears (it prints as each step completes)."""
    assert proc.stdout is not None
    while marker not in output:
        line = await asyncio.wait_for(proc.stdout.readline(), 90)
        assert line, f"imuflow up exited early:\n{output}"
        output += line.decode()
    return output


async def test_up_runs_the_sample_and_stops_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMUFLOW_")}
    env |= {
        "IMUFLOW_PROGRESS_PORT": str(free_port()),
        "IMUFLOW_INGEST_PORT": str(free_port()),
        "IMUFLOW_PARSER_METRICS_PORT": str(free_port()),
        "IMUFLOW_EMBEDDED_BROKER_PORT": str(free_port()),  # never 9092, which a real `up` may hold
        "COLUMNS": "200",
    }
    imuflow = str(Path(sys.executable).parent / "imuflow")
    proc = await asyncio.create_subprocess_exec(
        imuflow, "--data-dir", str(data_dir), "up", "--progress-replicas", "2",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output = ""
    try:
        # stack.env is written before the "imuflow is up" panel is printed.
        output = await _read_until(proc, "imuflow is up", output)
        values = read_env_file(data_dir / "stack.env")
        assert values["IMUFLOW_TOKEN"].startswith("imf_")
        assert values["IMUFLOW_DATABASE_URL"].startswith("postgresql://postgres@/postgres?host=")
        assert values["IMUFLOW_DATA_DIR"] == str(data_dir)
        settings = load_settings(data_dir)
        assert settings.progress_url == f"http://127.0.0.1:{env['IMUFLOW_PROGRESS_PORT']}"
        # Two progress replicas, the first on IMUFLOW_PROGRESS_PORT, the other on a free port;
        # each serves the page and answers ready.
        replicas = values["IMUFLOW_PROGRESS_URLS"].split(",")
        assert len(replicas) == 2 and replicas[0] == settings.progress_url and replicas[1] != replicas[0]
        async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
            for url in replicas:
                assert (await client.get(f"{url}/readyz")).status_code == 200, url
                assert "<html" in (await client.get(f"{url}/")).text.lower(), url
        output = await _read_until(proc, "sample xio_fusion_sensor_data.csv:", output)
        assert "completed, 13514 samples" in output
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(proc.communicate(), 60)
        output += rest.decode()
    assert proc.returncode == 0, output
    assert "stopped" in output
    assert not (data_dir / "stack.env").exists()
