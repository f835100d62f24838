"""`imuflow up --object-store`: uploads in the embedded SeaweedFS, settings in stack.env, and
the embedded broker's log in the same store (its own bucket)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import asyncpg
import pytest

from imuflow.settings import load_settings, read_env_file
from imuflow.stack.objectstore import BROKER_BUCKET
from imuflow.stack.procs import free_port
from imuflow.storage import S3Storage, open_storage
from tests.objectstore import leftovers

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(180)]


async def _read_until(proc: asyncio.subprocess.Process, marker: str, output: str) -> str:
    """Read `up`'s output until `marker` appears (it prints as each step completes)."""
    assert proc.stdout is not None
    while marker not in output:
        line = await asyncio.wait_for(proc.stdout.readline(), 90)
        assert line, f"imuflow up exited early:\n{output}"
        output += line.decode()
    return output


async def test_up_with_object_store_keeps_uploads_and_the_broker_log_in_s3(
    tmp_path: Path, database_url: str
) -> None:
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMUFLOW_", "AWS_"))}
    env |= {
        "IMUFLOW_DATABASE_URL": database_url,  # this test's own database; broker and store embedded
        "IMUFLOW_EMBEDDED_BROKER_PORT": str(free_port()),
        "IMUFLOW_PROGRESS_PORT": str(free_port()),
        "IMUFLOW_INGEST_PORT": str(free_port()),
        "IMUFLOW_PARSER_METRICS_PORT": str(free_port()),
        "COLUMNS": "200",
    }
    imuflow = str(Path(sys.executable).parent / "imuflow")
    proc = await asyncio.create_subprocess_exec(
        imuflow, "--data-dir", str(data_dir), "up", "--object-store",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output = ""
    try:
        output = await _read_until(proc, "imuflow is up", output)
        assert f"log in s3://{BROKER_BUCKET}/" in output, output
        values = read_env_file(data_dir / "stack.env")
        assert values["IMUFLOW_STORAGE_URL"] == "s3://imuflow"
        assert values["IMUFLOW_S3_ENDPOINT_URL"].startswith("http://127.0.0.1:")
        assert values["AWS_ACCESS_KEY_ID"] and values["AWS_SECRET_ACCESS_KEY"]
        output = await _read_until(proc, "sample xio_fusion_sensor_data.csv:", output)
        assert "completed, 13514 samples" in output
        conn = await asyncpg.connect(database_url)
        try:
            uri = await conn.fetchval("SELECT storage_uri FROM imu_data_files")
        finally:
            await conn.close()
        assert uri.startswith("s3://imuflow/")
        # What a CLI or a parser on another host gets from stack.env alone reaches the object.
        store = open_storage(load_settings(data_dir))
        assert isinstance(store, S3Storage)
        try:
            objects, uploads = await leftovers(store)
        finally:
            await store.close()
        assert objects == [uri.removeprefix("s3://imuflow/")] and uploads == []
        assert not (data_dir / "uploads").exists()
        # The broker's topics and messages are objects in its own bucket, not in memory.
        broker_log = S3Storage(
            f"s3://{BROKER_BUCKET}",
            endpoint_url=values["IMUFLOW_S3_ENDPOINT_URL"],
            region=values["IMUFLOW_S3_REGION"],
            access_key_id=values["AWS_ACCESS_KEY_ID"],
            secret_access_key=values["AWS_SECRET_ACCESS_KEY"],
        )
        try:
            kept, _ = await leftovers(broker_log)
        finally:
            await broker_log.close()
        topic_prefix = values["IMUFLOW_KAFKA_TOPIC_PREFIX"]
        assert any(topic_prefix + "files.v1" in key for key in kept), kept[:20]
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(proc.communicate(), 60)
        output += rest.decode()
    assert proc.returncode == 0, output
    assert not (data_dir / "stack.env").exists()
    assert (data_dir / "objectstore" / "data").is_dir()  # the objects stay for the next `up`
