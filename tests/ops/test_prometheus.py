"""Prometheus: promtool checks and alert unit tests; a real Prometheus scraping running services."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from imuflow import samples
from imuflow.stack.procs import free_port
from tests.e2e.helpers import events, make_token, upload
from tests.stack import StartStack

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
SPEC_METRICS = (
    "imuflow_uploads_total",
    "imuflow_upload_bytes_total",
    "imuflow_samples_parsed_total",
    "imuflow_batch_duration_seconds",
    "imuflow_files_in_flight",
    "imuflow_parse_failures_total",
    "imuflow_checkpoint_write_seconds",
    "imuflow_progress_events_total",
    "imuflow_consumer_lag",
    "imuflow_sse_clients",
    "imuflow_event_to_sse_seconds",
    "imuflow_stuck_jobs",
    "imuflow_slowing_jobs",  # SPEC §7
    "imuflow_dead_letters_total",  # SPEC §7
)
INSTALL = "needs promtool and prometheus: `apt-get install prometheus` (Debian/Ubuntu)"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(INSTALL)
    return path


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *args], capture_output=True, text=True, timeout=60, check=False)


def test_config_and_rules_pass_promtool() -> None:
    for args in (
        ("check", "config", str(DEPLOY / "prometheus.yml")),
        ("check", "rules", str(DEPLOY / "alerts.yml")),
    ):
        result = promtool(*args)
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_and_resolves_in_promtool_unit_tests() -> None:
    files = sorted((DEPLOY / "tests").glob("*.yml"))
    assert files
    alerts = {
        r["alert"] for g in yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"] for r in g["rules"]
    }
    tested = set()
    for path in files:
        tested |= {
            case["alertname"]
            for test in yaml.safe_load(path.read_text())["tests"]
            for case in test["alert_rule_test"]
        }
        result = promtool("test", "rules", str(path))
        assert result.returncode == 0, result.stdout + result.stderr
    assert tested == alerts, f"alerts without a unit test: {alerts - tested}"


async def _parse_one_file_while_watching(ingest: str, progress: str, database_url: str) -> None:
    """Upload the bundled sample with a browser-like SSE client following it live."""
    token = await make_token(database_url, "watcher")
    source = Path(samples.__file__).parent / "xio_fusion_sensor_data.csv"

    async def watch() -> None:
        async for event in events(f"{progress}/api/events", token, timeout=60):
            if event.type == "completed":
                return

    watcher = asyncio.create_task(watch())
    # Subscribed before the first batch, so progress arrives live (a fixed sleep was not
    # always enough on a loaded machine: the stream then began with the finished record).
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(300):
            text = (await client.get(f"{progress}/metrics")).text
            clients = [x for x in text.splitlines() if x.startswith("imuflow_sse_clients ")]
            if clients and float(clients[0].split()[1]) >= 1:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the SSE client never subscribed")
    assert (await upload(ingest, token, source)).status_code == 202
    await asyncio.wait_for(watcher, 90)


async def _scrape(url: str) -> dict[str, int]:
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(url)).text
    return {f.name: len(f.samples) for f in text_string_to_metric_families(text)}


async def _query(base: str, expr: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{base}/api/v1/query", params={"query": expr})
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.mark.integration
@pytest.mark.e2e
@pytest.mark.timeout(180)
async def test_services_export_every_metric_and_prometheus_scrapes_them(
    service_stack: StartStack, tmp_path: Path
) -> None:
    prometheus = tool("prometheus")
    # Small batches: the job then lasts longer than the Kafka hop of its progress events, so
    # some arrive live (with 7 batches the whole parse could finish before the first one).
    stack = await service_stack(env={"IMUFLOW_BATCH_SIZE": "200", "IMUFLOW_ADAPTIVE_BATCHING": "false"})
    await _parse_one_file_while_watching(stack.ingest_url, stack.progress_url, stack.settings.database_url)
    endpoints = {
        "ingest": f"{stack.ingest_url}/metrics",
        "progress": f"{stack.progress_url}/metrics",
        "parser": f"{stack.parser_metrics_url}/metrics",
    }
    for service, url in endpoints.items():
        families = await _scrape(url)
        for name in SPEC_METRICS:
            # SPEC §4: every family from process start, none empty.
            family = name.removesuffix("_total")
            assert families.get(family, 0) > 0, f"{service} does not export {name}"
    # What the job moved: samples in the parser, event-to-browser latency in progress.
    async with httpx.AsyncClient(timeout=10) as client:
        parser_text = (await client.get(endpoints["parser"])).text
        progress_text = (await client.get(endpoints["progress"])).text
    assert "imuflow_samples_parsed_total 13514.0" in parser_text
    counts = [x for x in progress_text.splitlines() if x.startswith("imuflow_event_to_sse_seconds_count")]
    assert float(counts[0].split()[1]) >= 1

    targets = [url.split("//", 1)[1].removesuffix("/metrics") for url in endpoints.values()]
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(DEPLOY / "alerts.yml")],
        "scrape_configs": [{"job_name": "imuflow-test", "static_configs": [{"targets": targets}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = await asyncio.create_subprocess_exec(
        prometheus,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("w"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        up: list[dict[str, Any]] = []
        for _ in range(60):
            try:
                up = await _query(base, 'up{job="imuflow-test"} == 1')
            except (httpx.HTTPError, ValueError):  # not listening yet, or 503 while starting
                up = []
            if len(up) == 3:
                break
            await asyncio.sleep(0.5)
        assert len(up) == 3, (tmp_path / "prometheus.log").read_text()[-2000:]
        stuck = await _query(base, "max(imuflow_stuck_jobs)")
        assert stuck and float(stuck[0]["value"][1]) == 0
        lag = await _query(base, "max by (group) (imuflow_consumer_lag)")
        assert {r["metric"]["group"] for r in lag} == {
            stack.settings.parser_group_id,
            stack.settings.progress_group_id,
        }
        async with httpx.AsyncClient(timeout=10) as client:
            rules = (await client.get(f"{base}/api/v1/rules")).json()["data"]["groups"]
        assert any(r["name"] == "ImuflowStuckJobs" for g in rules for r in g["rules"])
    finally:
        proc.terminate()
        await proc.wait()
