"""Supervisor: restarts dying children with backoff, health checks, clean stop."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from imuflow.settings import Settings
from imuflow.stack.procs import free_port
from imuflow.stack.supervisor import (
    ServiceSpec,
    Supervisor,
    SupervisorError,
    service_specs,
    settings_env,
)


async def _eventually(condition: Callable[[], bool], within: float = 20.0) -> None:
    for _ in range(int(within / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


def _spec(tmp_path: Path, name: str, code: str, health_url: str | None = None) -> ServiceSpec:
    return ServiceSpec(
        name=name,
        argv=[sys.executable, "-c", code],
        env={"PATH": "/usr/bin:/bin"},
        log_path=tmp_path / "logs" / f"{name}.log",
        health_url=health_url,
    )


async def test_restarts_a_dying_process_with_growing_backoff(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "dier", "import sys; print('up', flush=True); sys.exit(3)")
    async with Supervisor([spec], backoff_initial=0.1, backoff_max=0.4, stable_after=60) as sup:
        state = sup.services["dier"]
        await _eventually(lambda: state.starts >= 4)
    assert state.starts >= 4
    assert state.last_exit == 3
    lines = [json.loads(line) for line in spec.log_path.read_text().splitlines() if line.startswith("{")]
    delays = [line["restart_in"] for line in lines if line["action"] == "exited"]
    assert delays[:3] == [0.1, 0.2, 0.4]  # doubled, then capped
    assert "up" in spec.log_path.read_text()


async def test_backoff_resets_after_a_stable_run(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "slow", "import time, sys; time.sleep(0.3); sys.exit(1)")
    async with Supervisor([spec], backoff_initial=0.05, backoff_max=5, stable_after=0.2) as sup:
        state = sup.services["slow"]
        await _eventually(lambda: state.starts >= 3)
        assert state.next_delay == 0.05  # it ran longer than stable_after each time


async def test_health_check_and_sigkill_after_grace(tmp_path: Path) -> None:
    port = free_port()
    www = tmp_path / "www"
    www.mkdir()
    (www / "readyz").write_text("ok")
    server = _spec(
        tmp_path,
        "web",
        (
            "import http.server, functools, sys;"
            f"h = functools.partial(http.server.SimpleHTTPRequestHandler, directory={str(www)!r});"
            f"http.server.ThreadingHTTPServer(('127.0.0.1', {port}), h).serve_forever()"
        ),
        health_url=f"http://127.0.0.1:{port}/readyz",
    )
    stubborn = _spec(
        tmp_path,
        "stubborn",
        (
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
            "print('ready', flush=True); time.sleep(60)"
        ),
    )
    sup = Supervisor([server, stubborn], grace=0.5)
    await sup.start()
    try:
        await sup.wait_healthy(within=20)
        assert await sup.health() == {"web": True, "stubborn": True}
    finally:
        began = time.monotonic()
        await sup.stop()
    assert time.monotonic() - began < 5
    assert sup.services["stubborn"].process is not None
    assert sup.services["stubborn"].process.returncode == -9  # SIGKILLed after the grace


async def test_wait_healthy_reports_log_tail(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path,
        "sick",
        "print('boom: cannot bind', flush=True); import time; time.sleep(30)",
        health_url=f"http://127.0.0.1:{free_port()}/readyz",
    )
    async with Supervisor([spec], grace=1) as sup:
        with pytest.raises(SupervisorError, match="boom: cannot bind"):
            await sup.wait_healthy(within=1.0)


def test_service_specs_carry_settings_and_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("imuflow.stack.supervisor.imuflow_command", lambda: ["/venv/bin/imuflow"])
    settings = Settings(
        data_dir=tmp_path,
        database_url="postgresql://x",
        kafka_bootstrap_servers="k:1",
        ingest_port=1001,
        progress_port=1002,
        parser_metrics_port=0,
    )
    specs = {s.name: s for s in service_specs(settings, {"IMUFLOW_BATCH_SIZE": "2000"})}
    assert specs["parser"].argv == ["/venv/bin/imuflow", "parser"]
    assert specs["ingest"].health_url == "http://127.0.0.1:1001/readyz"
    assert specs["progress"].health_url == "http://127.0.0.1:1002/readyz"
    assert specs["parser"].health_url is None  # metrics port 0: no endpoint to check
    env = specs["ingest"].env
    assert env["IMUFLOW_BATCH_SIZE"] == "2000"
    assert env["IMUFLOW_ADAPTIVE_BATCHING"] == "true"
    assert env["IMUFLOW_DATABASE_URL"] == "postgresql://x"
    assert specs["ingest"].log_path == tmp_path / "logs" / "ingest.log"
    assert settings_env(settings)["IMUFLOW_DATA_DIR"] == str(tmp_path)
    # Progress replicas: one spec per port, each with its own port, health check and log.
    replicas = {
        s.name: s for s in service_specs(settings, services=("progress",), progress_ports=[1002, 1003])
    }
    assert list(replicas) == ["progress", "progress-2"]
    assert replicas["progress-2"].argv == ["/venv/bin/imuflow", "progress"]
    assert replicas["progress-2"].env["IMUFLOW_PROGRESS_PORT"] == "1003"
    assert replicas["progress-2"].health_url == "http://127.0.0.1:1003/readyz"
    assert replicas["progress-2"].log_path == tmp_path / "logs" / "progress-2.log"
    assert replicas["progress"].env["IMUFLOW_PROGRESS_PORT"] == "1002"
