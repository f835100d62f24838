"""The parser's repository on a real Postgres: every write is fenced by the claim's lease and run."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from imuflow import db
from services.parser.repository import Fenced, ParserRepository
from tests.ops.jobs import make_job, make_user

pytestmark = pytest.mark.integration
DATA_SQL = db.load_queries(Path(__file__).resolve().parents[2] / "services" / "progress" / "sql" / "data.sql")


async def _reparse(conn: asyncpg.Connection, file_id: object) -> None:
    """What the progress service's re-parse does (its own named query)."""
    await conn.fetch(DATA_SQL["reparse_file"], [file_id], "", None, None)


async def test_set_format_of_an_old_run_is_fenced_off_by_a_reparse(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        file_id = await make_job(conn, user, status="queued", claimed_ago=None, attempts=0)
    repo = ParserRepository(pool)
    old = await repo.claim(file_id, 1)
    assert old is not None and old.run == 1
    async with pool.acquire() as conn:
        await _reparse(conn, file_id)  # from scratch: format detected again, units cleared
    # The old run's parser, late, records what it detected: it must not land.
    with pytest.raises(Fenced):
        await repo.set_format(old, "euroc", {"ax": "m/s^2"}, ["old run's warning"])
    row = await pool.fetchrow(
        "SELECT format, units, warnings, run FROM imu_data_files WHERE id = $1", file_id
    )
    assert (row["format"], row["units"], row["warnings"], row["run"]) == (None, {}, [], 2)
    # The new run's claim writes it.
    new = await repo.claim(file_id, 2)
    assert new is not None
    await repo.set_format(new, "generic_csv", {"ax": "g"}, [])
    assert await pool.fetchval("SELECT format FROM imu_data_files WHERE id = $1", file_id) == "generic_csv"


async def test_a_yield_is_not_an_attempt_but_takes_a_new_lease(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        user = await make_user(conn)
        file_id = await make_job(conn, user, status="queued", claimed_ago=None, attempts=0)
    repo = ParserRepository(pool)
    first = await repo.claim(file_id, 1)
    assert first is not None and first.attempt == 1
    await pool.execute("UPDATE imu_data_files SET resume_batch_number = 3 WHERE id = $1", file_id)
    assert await repo.yield_job(first, 3)
    payload = await pool.fetchval("SELECT payload FROM outbox WHERE key = $1", str(file_id))
    assert payload["reason"] == "requeue" and payload["run"] == 1
    resumed = await repo.claim(file_id, 1)
    assert resumed is not None
    assert resumed.attempt == 1 and resumed.lease == first.lease + 1
    with pytest.raises(Fenced):  # the yielding claim's token is spent
        await repo.set_format(first, "euroc", {}, [])
    again = await repo.claim(file_id, 1)  # a redelivery (a crash) counts
    assert again is not None and again.attempt == 2


async def test_defer_puts_a_job_back_while_another_user_comes_first_a_bounded_number_of_times(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        alice = await make_user(conn, "alice")
        bob = await make_user(conn, "bob")
        await make_job(conn, alice, status="parsing", checkpoint_ago=1, claimed_ago=20)
        mine = await make_job(conn, alice, status="queued", claimed_ago=None, attempts=0)
    repo = ParserRepository(pool)
    assert not await repo.defer_if_behind(mine, 1)  # nobody else waits
    async with pool.acquire() as conn:
        theirs = await make_job(conn, bob, status="queued", claimed_ago=None, attempts=0)
    assert not await repo.defer_if_behind(theirs, 1)  # bob runs nothing: he comes first
    # Alice already runs a job and bob waits: her next file goes back, unclaimed ...
    assert [await repo.defer_if_behind(mine, 1) for _ in range(4)] == [True, True, True, False]
    row = await pool.fetchrow("SELECT status, attempts, lease FROM imu_data_files WHERE id = $1", mine)
    assert (row["status"], row["attempts"], row["lease"]) == ("queued", 0, 0)
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE key = $1", str(mine)) == 3
    # ... a bounded number of times (bob's work may be out of this parser's reach): then
    # it is claimed, which starts the count again.
    claim = await repo.claim(mine, 1)
    assert claim is not None and claim.attempt == 1
    assert await pool.fetchval("SELECT deferrals FROM imu_data_files WHERE id = $1", mine) == 0
