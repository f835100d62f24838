"""A parser on another host needs nothing but the network.

The parser runs in a network namespace of its own, joined to this machine by a veth pair,
and in a mount namespace of its own with a tmpfs over the stack's DATA_DIR, so it sees
neither ingest's disk nor any address but the link's. It reaches Postgres over TCP at this
machine's veth address, the broker (listening on and advertising that address) and the
object store (likewise) only over the link. Ingest and progress run on this machine.
Postgres here listens on loopback only and is shared with other runs, so the test relays
TCP from the veth address to it (`forward`) rather than reconfiguring its listener.

Files of four kinds complete with exact counts, and a parser SIGKILLed mid-file is
restarted (in the namespace again) and resumes exactly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from imuflow.stack.broker import Broker, start_broker
from imuflow.stack.objectstore import REGION, ObjectStore, start_object_store
from imuflow.stack.procs import free_port
from imuflow.stack.supervisor import Supervisor, service_specs
from tests.e2e.helpers import DATA, make_token, once_ended, upload
from tests.faults.helpers import kill_and_wait_restarted, synth_csv, wait_terminal
from tests.hosts.netns import NamespacesUnavailable, OtherHost, check_allowed, forward, other_host
from tests.ingest.test_archive import PHYPHOX, phyphox_zip
from tests.parser.formats.test_gt3x import RATE, make_gt3x, synthetic_log
from tests.servers import SettingsFactory
from tests.stack import StartStack

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(180)]
BATCH = 2000
BIG_SAMPLES = 100_000  # 50 batches: killed after a few


@pytest.fixture
def link() -> Iterator[OtherHost]:
    """The other host's namespace and link (skipped where namespaces are not allowed)."""
    if why := check_allowed():
        pytest.skip(f"cannot make another host here: {why}")
    try:
        with other_host() as host:
            yield host
    except NamespacesUnavailable as exc:
        pytest.skip(f"cannot make another host here: {exc}")


@pytest.fixture
async def link_servers(link: OtherHost, tmp_path: Path) -> AsyncIterator[tuple[Broker, ObjectStore]]:
    """A broker and an object store listening on (and advertising) this end of the link."""
    store = await start_object_store(tmp_path / "objectstore", bucket="imuflow", host=link.host_ip)
    try:
        broker = await start_broker(None, host=link.host_ip, log_path=tmp_path / "broker.log")
        try:
            yield broker, store
        finally:
            broker.stop()
    finally:
        store.stop()


def _at(url: str, host: str, port: int) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"))


async def test_parser_in_another_namespace_parses_every_kind_and_resumes_exact(
    tmp_path: Path,
    link: OtherHost,
    link_servers: tuple[Broker, ObjectStore],
    settings_factory: SettingsFactory,
    service_stack: StartStack,
    database_url: str,
) -> None:
    broker, store = link_servers
    shared: dict[str, Any] = {
        "kafka_bootstrap_servers": broker.bootstrap_servers,
        "storage_url": f"{store.storage_url}/uploads",
        "s3_endpoint_url": store.endpoint_url,
        "s3_region": REGION,
        "s3_access_key_id": store.credentials.access_key_id,
        "s3_secret_access_key": store.credentials.secret_access_key,
    }
    here = settings_factory(**shared)
    stack = await service_stack(here, services=("ingest", "progress"))
    db = urlsplit(database_url)
    big = synth_csv(tmp_path / "big.csv", BIG_SAMPLES)  # made first: it takes the loop a while
    with forward((link.host_ip, 0), (db.hostname or "127.0.0.1", db.port or 5432)) as pg_port:
        parser_settings = replace_settings(
            here,
            database_url=_at(database_url, link.host_ip, pg_port),
            host=link.other_ip,  # its metrics/health port, reached over the link
            parser_metrics_port=free_port(),
        )
        env = {"IMUFLOW_BATCH_SIZE": str(BATCH), "IMUFLOW_ADAPTIVE_BATCHING": "false"}
        (spec,) = service_specs(parser_settings, env, services=("parser",))
        data_dir = str(here.data_dir.resolve())
        spec = replace(spec, argv=link.wrap(list(spec.argv), tmpfs_over=data_dir))
        async with Supervisor([spec], backoff_initial=0.2, backoff_max=1.0, grace=5.0) as parser:
            await parser.wait_healthy(within=60)
            await _uploads_complete_exact(tmp_path, stack.ingest_url, stack.progress_url, database_url)
            await _kill_mid_file_resumes_exact(big, parser, stack.ingest_url, database_url)
    # The parser saw none of this machine's DATA_DIR: nothing it wrote there is here.
    assert not here.storage_dir.exists()


def replace_settings(settings: Any, **changes: Any) -> Any:
    """A copy of `settings` with `changes` (validated again)."""
    return type(settings)(**{**settings.model_dump(), **changes})


async def _uploads_complete_exact(
    tmp_path: Path, ingest_url: str, progress_url: str, database_url: str
) -> None:
    token = await make_token(database_url, "remote")
    gt3x = tmp_path / "recording.gt3x"
    gt3x.write_bytes(make_gt3x(synthetic_log()[0]))
    expected = {
        DATA / "xio_fusion_sensor_data.csv": 13_514,
        DATA / "ggirread_ax3_testfile.cwa": 17_400,
        gt3x: 9 * RATE,
    }
    ids: dict[str, int] = {}
    for path, samples in expected.items():
        response = await upload(ingest_url, token, path)
        assert response.status_code == 202, (path.name, response.text)
        ids[response.json()["id"]] = samples
    response = await upload(ingest_url, token, phyphox_zip(tmp_path / "deadreckoning.zip"))
    assert response.status_code == 202, response.text
    children = response.json()["children"]
    assert len(children) == 3
    records = {r["id"]: r for r in await once_ended(progress_url, token, [*ids, *children], within=60)}
    for file_id, samples in ids.items():
        record = records[file_id]
        assert record["status"] == "completed", record
        assert (record["samples_processed"], record["sample_count_exact"]) == (samples, True), record
    assert {records[c]["filename"]: records[c]["samples_processed"] for c in children} == {
        name: count for name, (_, count) in PHYPHOX.items()
    }
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM imu_samples")
    finally:
        await conn.close()
    assert stored == sum(ids.values()) + sum(count for _, count in PHYPHOX.values())


async def _kill_mid_file_resumes_exact(
    big: Path, parser: Supervisor, ingest_url: str, database_url: str
) -> None:
    token = await make_token(database_url, "remote2")
    response = await upload(ingest_url, token, big)
    assert response.status_code == 202, response.text
    file_id = response.json()["id"]
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + 40
        while True:
            row = await conn.fetchrow(
                "SELECT status, resume_batch_number FROM imu_data_files WHERE id = $1::uuid", file_id
            )
            if row["resume_batch_number"] >= 3:
                break
            assert row["status"] in ("uploaded", "queued", "parsing") and time.monotonic() < deadline, row
            await asyncio.sleep(0.005)
    finally:
        await conn.close()
    await kill_and_wait_restarted(parser, "parser")
    final = await wait_terminal(database_url, file_id, timeout=60)
    assert final.status == "completed", final
    assert (final.samples, final.distinct) == (BIG_SAMPLES, BIG_SAMPLES), final
    assert final.attempts == 2, final
    assert 0 < row["resume_batch_number"] < BIG_SAMPLES // BATCH
