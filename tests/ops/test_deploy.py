"""docker-compose.yml, the Dockerfile, Prometheus and Grafana files, checked against the code.

No Docker engine runs here, so these files are parsed, not run: every service is there,
ports and IMUFLOW_* names match Settings, and every metric queried is defined.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from imuflow import metrics
from imuflow.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SERVICES = {
    *("kafka", "postgres", "objectstore", "migrate"),
    *("ingest", "parser", "progress", "prometheus", "grafana", "sse-edge"),
}
METRIC = re.compile(r"\bimuflow_[a-z_]+")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def exported_series_names() -> set[str]:
    """Every sample name the process exports (families touched so none is empty)."""
    metrics.touch_consumer_groups(Settings())
    names: set[str] = set()
    for family in text_string_to_metric_families(generate_latest(REGISTRY).decode()):
        names.update(sample.name for sample in family.samples)
    return names


def test_compose_runs_every_service_with_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    assert services["migrate"]["command"] == ["imuflow", "migrate"]
    for name in SERVICES - {"migrate"}:
        assert "healthcheck" in services[name], name
    for name in ("ingest", "parser", "progress"):
        assert services[name]["command"] == ["imuflow", name]
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["kafka"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["parser"]["deploy"]["replicas"] > 1


def test_compose_ports_and_settings_match_the_code(compose: dict[str, Any]) -> None:
    services = compose["services"]
    defaults = Settings()
    assert services["ingest"]["ports"] == [f"{defaults.ingest_port}:{defaults.ingest_port}"]
    assert services["progress"]["ports"] == [f"{defaults.progress_port}:{defaults.progress_port}"]
    for name in ("ingest", "parser", "progress", "migrate"):
        env = services[name]["environment"]
        assert env["IMUFLOW_HOST"] == "0.0.0.0"
        assert env["IMUFLOW_DATABASE_URL"].startswith("postgresql://")
        assert env["IMUFLOW_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        unknown = {k for k in env if k.removeprefix("IMUFLOW_").lower() not in Settings.model_fields}
        assert not unknown, f"{name}: {unknown} are not fields of imuflow.settings.Settings"
        assert env["IMUFLOW_INGEST_PORT"] == str(defaults.ingest_port)
        assert env["IMUFLOW_PROGRESS_PORT"] == str(defaults.progress_port)
        assert env["IMUFLOW_PARSER_METRICS_PORT"] == str(defaults.parser_metrics_port)
        # Uploads in the object store: no volume shared between the services.
        assert env["IMUFLOW_STORAGE_URL"].startswith("s3://") and "volumes" not in services[name]
        assert env["IMUFLOW_S3_ENDPOINT_URL"] == "http://objectstore:8333"
    assert "-s3.port=8333" in services["objectstore"]["command"]
    # The healthchecks probe the ports the services listen on.
    for name, port in (("ingest", 8001), ("progress", 8000), ("parser", 8002)):
        assert f"127.0.0.1:{port}/" in " ".join(services[name]["healthcheck"]["test"])


def test_prometheus_scrapes_each_service_on_its_port() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["imuflow-ingest"]["static_configs"][0]["targets"] == ["ingest:8001"]
    assert jobs["imuflow-progress"]["static_configs"][0]["targets"] == ["progress:8000"]
    parser = jobs["imuflow-parser"]["dns_sd_configs"][0]
    assert parser["names"] == ["parser"] and parser["port"] == Settings().parser_metrics_port
    assert config["rule_files"][0].startswith("alerts.yml")


def test_every_metric_queried_is_defined() -> None:
    exported = exported_series_names()
    dashboard = (DEPLOY / "grafana" / "dashboards" / "imuflow.json").read_text()
    alerts = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    for source, text in (("dashboard", dashboard), ("alerts", alerts)):
        used = set(METRIC.findall(text))
        assert used, source
        missing = used - exported
        assert not missing, f"{source} queries metrics imuflow/metrics.py does not define: {missing}"


def test_dashboard_panels_and_datasources() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "imuflow.json").read_text())
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("throughput", "batch latency", "jobs by status", "stuck", "sse clients", "consumer lag"):
        assert topic in titles, topic
    provisioned = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "imuflow.yml").read_text()
    )
    uids = {d["uid"] for d in provisioned["datasources"]}
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        for target in panel["targets"]:
            if "rawSql" in target:
                assert "streaming_processing_status" in target["rawSql"]
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "imuflow.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dockerfile_installs_from_the_lock_file_which_pins_every_dependency() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "COPY deploy/requirements.lock" in dockerfile
    assert re.search(r"pip install --no-deps -r requirements\.lock", dockerfile)
    lock: dict[str, str] = {}
    for line in (DEPLOY / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            lock[canonicalize_name(name)] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"]:
        req = Requirement(text)
        pinned = next(iter(req.specifier)).version
        assert lock.get(canonicalize_name(req.name)) == pinned, (
            f"{req.name} {pinned} is not in deploy/requirements.lock: regenerate it with "
            "`.venv/bin/python deploy/lock_requirements.py > deploy/requirements.lock`"
        )
