"""`imuflow up` helpers: stack.env round trip, port checks, the bundled sample."""

from __future__ import annotations

import socket
import stat
from importlib import resources
from pathlib import Path

import pytest

from imuflow.settings import Settings, load_settings
from imuflow.stack.procs import free_port
from imuflow.stack.up import PortTaken, check_ports, stack_env_values, write_stack_env


def test_stack_env_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in (
        "IMUFLOW_DATABASE_URL",
        "IMUFLOW_KAFKA_BOOTSTRAP_SERVERS",
        "IMUFLOW_DATA_DIR",
        "IMUFLOW_INGEST_URL",
        "IMUFLOW_PROGRESS_URL",
        "IMUFLOW_KAFKA_TOPIC_PREFIX",
        "IMUFLOW_PROGRESS_URLS",
    ):
        monkeypatch.delenv(key, raising=False)
    url = "postgresql://postgres@/postgres?host=/tmp/x%20y/postgres"
    settings = Settings(data_dir=tmp_path, ingest_port=9101, progress_port=9100)
    values = stack_env_values(
        settings, database_url=url, kafka="127.0.0.1:9092", token="imf_a", admin_token="imf_b"
    )
    write_stack_env(settings.stack_env_path, values)
    assert stat.S_IMODE(settings.stack_env_path.stat().st_mode) == 0o600

    loaded = load_settings(tmp_path)
    assert loaded.database_url == url
    assert loaded.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert loaded.ingest_url == "http://127.0.0.1:9101"
    assert loaded.progress_url == "http://127.0.0.1:9100"
    assert (
        loaded.progress_urls == "http://127.0.0.1:9100"
    )  # one replica: IMUFLOW_PROGRESS_URL    assert loaded.data_dir == tmp_path
    text = settings.stack_env_path.read_text()
    assert "IMUFLOW_TOKEN=imf_a\n" in text and "IMUFLOW_ADMIN_TOKEN=imf_b\n" in text


def test_stack_env_rejects_newlines(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="newline"):
        write_stack_env(tmp_path / "stack.env", {"IMUFLOW_TOKEN": "a\nIMUFLOW_X=1"})


def test_check_ports_names_the_taken_port(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        settings = Settings(
            data_dir=tmp_path, progress_port=free_port(), ingest_port=taken, parser_metrics_port=0
        )
        with pytest.raises(PortTaken, match=f"port {taken} \\(ingest\\).*IMUFLOW_INGEST_PORT"):
            check_ports(settings)


def test_sample_is_bundled_with_attribution() -> None:
    sample = resources.files("imuflow.samples").joinpath("xio_fusion_sensor_data.csv")
    assert sample.read_bytes().startswith(b"Time (s),Gyroscope X (deg/s)")
    assert len(sample.read_bytes()) == 1410960
    sources = Path(str(resources.files("imuflow.samples"))) / "SOURCES.md"
    assert "xioTechnologies/Fusion" in sources.read_text() and "MIT" in sources.read_text()
