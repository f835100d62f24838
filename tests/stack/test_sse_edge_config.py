"""The Pushpin edge's configuration (imuflow/stack/edge.py): docker-compose runs what the
tests run, and a rendered config is one Pushpin accepts."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from imuflow.stack.edge import DEPLOY_DIR, EdgeConfig, local_edge, pushpin_binary, render_deploy, running_edge


def test_deploy_pushpin_is_the_rendered_compose_config() -> None:
    for name, text in render_deploy().items():
        committed = (DEPLOY_DIR / name).read_text()
        assert committed == text, (
            f"deploy/pushpin/{name} is not what imuflow/stack/edge.py renders: "
            "python -c 'import imuflow.stack.edge as e; e.write_deploy()'"
        )


def test_compose_runs_the_deploy_config_in_front_of_progress() -> None:
    compose = (DEPLOY_DIR.parent.parent / "docker-compose.yml").read_text()
    assert "./deploy/pushpin:/etc/pushpin:ro" in compose
    assert "IMUFLOW_SSE_EDGE_PUBLISH_URL: http://sse-edge:5561/publish/" in compose
    assert "IMUFLOW_SSE_EDGE_KEY: imuflow-dev-edge-key" in compose
    assert "sig_key=imuflow-dev-edge-key\n" in render_deploy()["pushpin.conf"]


def test_every_replica_is_a_route_tried_in_order(tmp_path: Path) -> None:
    config = local_edge(tmp_path, ["127.0.0.1:1", "127.0.0.1:2"], "pushpin")
    routes = render_deploy(config)["routes"]
    assert routes.splitlines()[-1] == "* 127.0.0.1:1 127.0.0.1:2"
    assert config.url.startswith("http://127.0.0.1:") and config.publish_url.endswith("/publish/")


@pytest.mark.skipif(pushpin_binary() is None, reason="pushpin not installed (apt-get install pushpin)")
def test_pushpin_starts_on_the_rendered_config_and_stops_with_all_its_programs(tmp_path: Path) -> None:
    binary = pushpin_binary()
    assert binary is not None
    config: EdgeConfig = local_edge(tmp_path / "edge", ["127.0.0.1:9"], binary)
    with running_edge(config) as process:
        programs = psutil.Process(process.pid).children(recursive=True)
        names = {p.name() for p in programs}
        assert {"condure", "zurl", "pushpin-proxy", "pushpin-handler"} <= names, names
    assert process.poll() is not None
    _, alive = psutil.wait_procs(programs, timeout=5)
    assert not alive, f"left running: {alive}"
