"""Who an event stream's token belongs to, asked of Postgres once per token between session checks.

A restarted replica's clients reconnect all at once, most of them with a token some other
client of the storm also has (a user's tabs and devices; the sessions of one page). Opening
a stream asks this cache instead of Postgres: concurrent lookups of one token share one
query, and a live answer is kept until the multiplexer's next session check clears it
(`Multiplexer.watch_sessions`, every SESSION_CHECK_SECONDS). So a token revoked at time r
may still open a stream until that next check, and that check also ends the stream: no
stream outlives its token by more than SESSION_CHECK_SECONDS (+ one query), as before.
Unknown, revoked and expired tokens are never kept: each of them asks again.
"""

from __future__ import annotations

import asyncio

import asyncpg

from imuflow.auth import User, hash_token, resolve_token


class CredentialCache:
    """Live tokens' users by token digest, valid until the next `clear()`."""

    def __init__(self) -> None:
        self._users: dict[bytes, User] = {}
        self._asking: dict[bytes, asyncio.Future[User | None]] = {}
        self._generation = 0  # a lookup started before a clear() must not refill the cache

    async def user(self, pool: asyncpg.Pool, token: str) -> User | None:
        """The live token's user (None when unknown, revoked or expired)."""
        digest = hash_token(token)
        known = self._users.get(digest)
        if known is not None:
            return known
        asking = self._asking.get(digest)
        if asking is None:
            asking = asyncio.ensure_future(self._ask(pool, token, digest, self._generation))
            self._asking[digest] = asking
            asking.add_done_callback(lambda done: self._forget(digest, done))
        # shield: one cancelled request (its client left) must not cancel the others' lookup.
        return await asyncio.shield(asking)

    async def _ask(self, pool: asyncpg.Pool, token: str, digest: bytes, generation: int) -> User | None:
        user = await resolve_token(pool, token)
        if user is not None and generation == self._generation:
            self._users[digest] = user
        return user

    def _forget(self, digest: bytes, done: asyncio.Future[User | None]) -> None:
        if self._asking.get(digest) is done:  # not a newer lookup started after a clear()
            del self._asking[digest]

    def clear(self) -> None:
        """Forget every answer (called at each session check, so none outlives it)."""
        self._generation += 1
        self._users.clear()
        self._asking.clear()

    def __len__(self) -> int:
        return len(self._users)
