"""The in-memory replay window (services/progress/recent.py) and the stream credential cache
(services/progress/credentials.py): what they cover, how they coalesce, when they forget."""

from __future__ import annotations

import asyncio
import random
import uuid
from functools import partial

import asyncpg
import pytest

from imuflow import metrics
from imuflow.auth import hash_token
from services.progress.credentials import CredentialCache
from services.progress.multiplexer import FileEvent
from services.progress.recent import RecentEvents
from tests.e2e.helpers import make_token

FILES = [uuid.uuid4() for _ in range(4)]
USERS = [uuid.uuid4(), uuid.uuid4()]


def _event(event_id: int, rng: random.Random) -> FileEvent:
    n = rng.randrange(len(FILES))
    kind = rng.choice(["progress"] * 6 + ["completed", "failed", "cancelled"])
    return FileEvent(
        event_id, FILES[n], USERS[n % 2], kind, f'id: {event_id}\r\ndata: {{"n": 1}}\r\n\r\n'.encode()
    )


def _coalesced(log: list[FileEvent], after: int, user: uuid.UUID) -> list[FileEvent]:
    """What the Postgres replay sends (sql/queries.sql `replay`), written out naively."""
    later = [e for e in log if e.id > after and e.user_id == user]
    return [
        e
        for e in later
        if e.event_type != "progress" or not any(o.file_id == e.file_id and o.id > e.id for o in later)
    ]


def _owned_by(user: uuid.UUID, event: FileEvent) -> bool:
    return event.user_id == user


def test_the_window_replays_what_postgres_would_and_forgets_the_oldest() -> None:
    rng = random.Random(17)
    log = [_event(i, rng) for i in range(1, 400, 3)]  # ids with gaps, as a sequence leaves them
    window = RecentEvents(capacity=50)
    window.load(log[:30], floor=0, newest=log[29].id)
    for event in log[30:]:
        window.add(event)
    window.add(log[-1])  # a repeat (a drain after a reconnect) is ignored
    assert 50 <= len(window) <= 55, "trimmed to the capacity, in chunks of a tenth"
    assert window.newest == log[-1].id
    oldest_held = log[-len(window)].id
    assert window.floor == log[-len(window) - 1].id < oldest_held
    for after in [window.floor, oldest_held, log[-10].id, log[-10].id + 1, window.newest]:
        for user in USERS:
            got = window.replay(after, partial(_owned_by, user))
            assert got == _coalesced(log, after, user), after
    assert window.replay(window.floor - 1, lambda e: True) is None, "older than the window"
    assert window.replay(window.newest + 1, lambda e: True) is None, "ahead of this replica"


def test_an_empty_window_covers_nothing_and_a_loaded_log_from_its_floor() -> None:
    assert RecentEvents(capacity=0).replay(0, lambda e: True) is None
    unloaded = RecentEvents()
    assert not unloaded.covers(0), "nothing before the start-up load"
    window = RecentEvents(capacity=10)
    window.load([], floor=0, newest=0)
    assert window.replay(0, lambda e: True) == []
    assert not window.covers(1)
    pruned = RecentEvents(capacity=10)
    pruned.load([], floor=5, newest=7)  # pruned through 5; events 6 and 7 since deleted
    assert pruned.covers(5) and not pruned.covers(4)


@pytest.mark.integration
async def test_the_credential_cache_asks_once_per_token_until_cleared(
    pool: asyncpg.Pool, database_url: str
) -> None:
    token = await make_token(database_url, "alice")
    cache = CredentialCache()
    counted = metrics.DB_QUERIES.labels("background")
    before = counted._value.get()
    users = await asyncio.gather(*(cache.user(pool, token) for _ in range(200)))
    assert {u.name for u in users if u is not None} == {"alice"} and None not in users
    # One lookup for the 200 (a statement and the pool's reset of its connection).
    assert counted._value.get() - before <= 2
    assert len(cache) == 1

    await pool.execute("UPDATE api_tokens SET revoked_at = now() WHERE token_hash = $1", hash_token(token))
    assert await cache.user(pool, token) is not None, "kept until the next session check"
    cache.clear()
    assert await cache.user(pool, token) is None
    assert len(cache) == 0, "a revoked token is not kept"
    assert await cache.user(pool, "imf_unknown") is None


@pytest.mark.integration
async def test_a_lookup_started_before_a_clear_does_not_refill_the_cache(
    pool: asyncpg.Pool, database_url: str
) -> None:
    token = await make_token(database_url, "bob")
    cache = CredentialCache()
    asking = asyncio.ensure_future(cache.user(pool, token))
    await asyncio.sleep(0)  # the lookup is under way
    cache.clear()
    user = await asking
    assert user is not None and user.name == "bob"
    assert len(cache) == 0, "an answer from before the clear may be stale"
