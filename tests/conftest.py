"""Shared fixtures: real servers (tests/servers.py) and the service stack (tests/stack.py)."""

from tests.basetemp import pytest_configure, pytest_unconfigure
from tests.objectstore import s3_prefix, s3_server, s3_store, storage
from tests.servers import (
    database_url,
    kafka_bootstrap,
    pool,
    postgres_server_url,
    settings_factory,
    template_database,
    test_settings,
)
from tests.stack import pytest_runtest_makereport, service_stack

__all__ = [
    "database_url",
    "kafka_bootstrap",
    "pool",
    "postgres_server_url",
    "pytest_configure",
    "pytest_runtest_makereport",
    "pytest_unconfigure",
    "s3_prefix",
    "s3_server",
    "s3_store",
    "service_stack",
    "settings_factory",
    "storage",
    "template_database",
    "test_settings",
]
