"""Users and tokens, shared by ingest, progress and the CLI.

A token is 32 random bytes shown once; Postgres keeps only its sha256, so a database
leak reveals no usable token and lookups are an indexed equality on the digest (the
comparison a timing attack could probe happens on hashes, not on secrets).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

TOKEN_PREFIX = "imf_"
SESSION_COOKIE = "imuflow_session"


@dataclass(frozen=True)
class User:
    """The caller of a request, as resolved from its token."""

    id: UUID
    name: str
    is_admin: bool


def hash_token(token: str) -> bytes:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    """A fresh random token."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


async def ensure_user(conn: asyncpg.Connection | asyncpg.Pool, name: str, admin: bool) -> UUID:
    """Create the user if needed (an existing user is promoted, never demoted, by --admin)."""
    row = await conn.fetchrow(
        "INSERT INTO users (name, is_admin) VALUES ($1, $2) "
        "ON CONFLICT (name) DO UPDATE SET is_admin = users.is_admin OR EXCLUDED.is_admin "
        "RETURNING id",
        name,
        admin,
    )
    assert row is not None
    user_id: UUID = row["id"]
    return user_id


async def create_token(
    conn: asyncpg.Connection | asyncpg.Pool,
    user: str,
    *,
    admin: bool = False,
    kind: str = "api",
    label: str = "",
    expires_at: datetime | None = None,
) -> str:
    """Create the user if needed and a new token for them; return the token (shown once)."""
    user_id = await ensure_user(conn, user, admin)
    token = new_token()
    await conn.execute(
        "INSERT INTO api_tokens (user_id, token_hash, kind, label, expires_at) VALUES ($1, $2, $3, $4, $5)",
        user_id,
        hash_token(token),
        kind,
        label,
        expires_at,
    )
    return token


async def resolve_token(pool: asyncpg.Pool, token: str) -> User | None:
    """The live (not revoked, not expired) token's user, or None."""
    if not token or len(token) > 200:
        return None
    digest = hash_token(token)
    row = await pool.fetchrow(
        "SELECT u.id, u.name, u.is_admin, t.token_hash FROM api_tokens t "
        "JOIN users u ON u.id = t.user_id "
        "WHERE t.token_hash = $1 AND t.revoked_at IS NULL "
        "AND (t.expires_at IS NULL OR t.expires_at > now())",
        digest,
    )
    if row is None or not hmac.compare_digest(bytes(row["token_hash"]), digest):
        return None
    return User(id=row["id"], name=row["name"], is_admin=row["is_admin"])
