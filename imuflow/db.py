"""Postgres access shared by the services: pool creation, migrations, named SQL blocks."""

from __future__ import annotations

import contextvars
import json
import re
from pathlib import Path
from typing import Any

import asyncpg

from imuflow import metrics

MIGRATIONS_DIR = Path(__file__).parent / "sql" / "migrations"
# One arbitrary constant: migrations of concurrent starters are serialised on it.
MIGRATION_LOCK = 7_202_611


# What the statements of the current task are for: "request" inside an HTTP request
# (imuflow/web.py install_query_attribution), "background" otherwise. The query logger runs
# in a copy of the querying task's context, so it sees the value of that task.
QUERY_SOURCE: contextvars.ContextVar[str] = contextvars.ContextVar("query_source", default="background")
for _source in ("request", "background"):
    metrics.DB_QUERIES.labels(_source)


class DatabaseError(Exception):
    """Root of the database errors the services translate driver errors into."""


def _count_query(record: asyncpg.connection.LoggedQuery) -> None:
    metrics.DB_QUERIES.labels(QUERY_SOURCE.get()).inc()


async def _init_connection(conn: asyncpg.Connection) -> None:
    conn.add_query_logger(_count_query)
    # jsonb columns come back as Python objects, not strings.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """Open a pool whose connections decode json/jsonb; raise DatabaseError if unreachable."""
    try:
        pool = await asyncpg.create_pool(
            url, min_size=min_size, max_size=max_size, init=_init_connection, command_timeout=60
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseError(f"cannot connect to Postgres: {exc}") from exc
    assert pool is not None
    return pool


async def connect(url: str) -> asyncpg.Connection:
    """One connection with the same codecs as the pool (for LISTEN and one-shot commands)."""
    try:
        conn = await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseError(f"cannot connect to Postgres: {exc}") from exc
    await _init_connection(conn)
    return conn


def migration_files() -> list[tuple[str, str]]:
    """(name, sql) of every migration, in order."""
    return [(path.name, path.read_text()) for path in sorted(MIGRATIONS_DIR.glob("*.sql"))]


async def migrate(url: str) -> list[str]:
    """Apply the migrations not yet applied, each in its own transaction; return their names."""
    conn = await connect(url)
    applied_now: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for name, sql in migration_files():
            if name in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            applied_now.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        await conn.close()
    return applied_now


_BLOCK = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def load_queries(path: Path | str) -> dict[str, str]:
    """Split a `.sql` file into named blocks (`-- name: foo` starts block `foo`)."""
    text = Path(path).read_text()
    parts = _BLOCK.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        queries[name] = body.strip().rstrip(";")
    return queries


def record(row: asyncpg.Record | None) -> dict[str, Any] | None:
    """An asyncpg row as a plain dict (None stays None)."""
    return dict(row) if row is not None else None
