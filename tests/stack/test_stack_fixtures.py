"""The shared server fixtures: per-test migrated databases and isolated settings."""

from __future__ import annotations

import asyncpg
import pytest

from imuflow.settings import Settings
from tests.servers import SettingsFactory, with_database

pytestmark = pytest.mark.integration


def test_with_database_rewrites_tcp_and_socket_urls() -> None:
    assert with_database("postgresql://u@h:5/postgres", "x") == "postgresql://u@h:5/x"
    socket_url = "postgresql://postgres@/postgres?host=/tmp/s"
    assert with_database(socket_url, "x") == "postgresql://postgres@/x?host=/tmp/s"


async def test_database_is_migrated_and_private(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") >= 1
        await conn.execute("CREATE TABLE only_here (x int)")
    finally:
        await conn.close()


async def test_next_database_does_not_see_the_previous_test(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('only_here')") is None
    finally:
        await conn.close()


def test_settings_are_isolated(
    test_settings: Settings, settings_factory: SettingsFactory, kafka_bootstrap: str
) -> None:
    other = settings_factory(batch_size=2000)
    assert test_settings.kafka_bootstrap_servers == kafka_bootstrap
    assert test_settings.kafka_topic_prefix.startswith("t")
    assert test_settings.kafka_topic_prefix.endswith(".")
    assert test_settings.parser_group_id != "imuflow-parser"
    assert (
        len(
            {
                test_settings.ingest_port,
                test_settings.progress_port,
                test_settings.parser_metrics_port,
            }
        )
        == 3
    )
    assert other.batch_size == 2000
    assert with_database(test_settings.database_url, "x") != test_settings.database_url
