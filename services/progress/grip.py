"""GRIP, the protocol of the Pushpin SSE edge: who came through it, and what to hold.

With IMUFLOW_SSE_EDGE_KEY set, a stream request that Pushpin forwarded (it signs each with
a `Grip-Sig` JWT, HS256 under its `sig_key`) is answered with the stream's start (the
current state, or the Last-Event-ID replay) and `Grip-Hold: stream`: Pushpin keeps the
client's connection and this service's is done. Each event then reaches the client,
published by one replica's multiplexer to the stream's channel (services/progress/edgepublish.py):

- `u-<user id>` (/api/events), `f-<file id>` (/api/files/{id}/events), `admin`
  (/api/admin/events).
- Every publish carries its event id and the previous id on its channel (`prev-id`); the
  hold says the last id its body covered. An event published before Pushpin subscribed, or
  dropped on the way, makes the next one's prev-id mismatch, and Pushpin then asks the
  stream's `Grip-Link` (rel=next) with `Grip-Last: <channel>; last-id=<n>`: the answer is
  the replay after n. So no event falls between the replay and the hold, and none repeats.

Pushpin forwards no credential with that recovery request, so the link carries what the
stream was opened for (user, file, token digest), signed with the edge key; a recovery for
a token no longer live gets a plain answer (no hold, no link), which ends the held
stream. The link also has a timeout (LINK_TIMEOUT_SECONDS): Pushpin asks it again that
long after each delivery even when nothing was missed, so a held stream's token is
checked as often as a direct stream's, and a signed-out, revoked or expired one ends
within SPEC §7's 20 s. Each held stream costs one small request (one token query) per
interval.

The JWT is checked here by hand (stdlib hmac): one algorithm, two claims, no dependency.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from urllib.parse import quote
from uuid import UUID

from starlette.requests import Request

ADMIN_CHANNEL = "admin"
ISSUER = "pushpin"


def user_channel(user_id: UUID) -> str:
    return f"u-{user_id}"


def file_channel(file_id: UUID) -> str:
    return f"f-{file_id}"


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def signed_by_edge(request: Request, key: str) -> bool:
    """Whether the request came through the edge: a valid, unexpired `Grip-Sig` under `key`."""
    token = request.headers.get("grip-sig")
    if not key or not token or token.count(".") != 2:
        return False
    head, body, sig = token.split(".")
    expected = hmac.new(key.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(_b64decode(sig), expected):
            return False
        header = json.loads(_b64decode(head))
        claims = json.loads(_b64decode(body))
    except (ValueError, binascii.Error):
        return False
    if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
        return False
    exp = claims.get("exp")
    return claims.get("iss") == ISSUER and isinstance(exp, int | float) and exp > time.time()


def last_ids(request: Request) -> dict[str, int]:
    """`Grip-Last` of a recovery request: the last id Pushpin delivered, per channel."""
    found: dict[str, int] = {}
    for value in request.headers.getlist("grip-last"):
        for item in value.split(","):
            channel, _, params = item.strip().partition(";")
            for param in params.split(";"):
                name, _, raw = param.strip().partition("=")
                if name == "last-id" and raw.isdigit() and len(raw) < 19:
                    found[channel.strip()] = int(raw)
    return found


@dataclass(frozen=True)
class Grant:
    """What an edge stream was opened for, carried signed in its recovery link."""

    user_id: UUID | None  # None: every user (an operator's stream)
    file_id: UUID | None
    owner: UUID
    token_hash: bytes

    def channel(self) -> str:
        """The channel the stream holds."""
        if self.file_id is not None:
            return file_channel(self.file_id)
        return user_channel(self.user_id) if self.user_id is not None else ADMIN_CHANNEL

    def encode(self, key: str) -> str:
        raw = "|".join(
            [str(self.user_id or ""), str(self.file_id or ""), str(self.owner), self.token_hash.hex()]
        ).encode()
        sig = hmac.new(key.encode(), raw, hashlib.sha256).digest()
        return f"{_b64encode(raw)}.{_b64encode(sig)}"

    @staticmethod
    def decode(value: str, key: str) -> Grant | None:
        """The grant a recovery link carries (None unless signed with `key`)."""
        try:
            raw_part, sig_part = value.split(".")
            raw = _b64decode(raw_part)
            expected = hmac.new(key.encode(), raw, hashlib.sha256).digest()
            if not hmac.compare_digest(_b64decode(sig_part), expected):
                return None
            user, file, owner, digest = raw.decode().split("|")
            return Grant(
                UUID(user) if user else None, UUID(file) if file else None, UUID(owner), bytes.fromhex(digest)
            )
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return None


RECOVER_PATH = "/api/edge/recover"
# How long Pushpin holds a stream before asking its link again (a token check); at most
# SPEC §7's 20 s, less the check's own time.
LINK_TIMEOUT_SECONDS = 10


def hold_headers(grant: Grant, key: str, last_id: int, keep_alive_seconds: float) -> dict[str, str]:
    """The GRIP headers that hand the stream to the edge, its body covering up to `last_id`."""
    link = f"{RECOVER_PATH}?grant={quote(grant.encode(key))}"
    return {
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-store",
        "Grip-Hold": "stream",
        "Grip-Channel": f"{grant.channel()}; prev-id={last_id}",
        "Grip-Link": f"<{link}>; rel=next; timeout={LINK_TIMEOUT_SECONDS}",
        # A comment, as sse.py's own pings; `cstring` so the \n escapes are newlines.
        "Grip-Keep-Alive": f":ping\\n\\n; format=cstring; timeout={max(int(keep_alive_seconds), 1)}",
    }
