"""The Pushpin SSE edge (issue 17; services/progress/grip.py): a real Pushpin in front of a
real progress service holds the streams, and SPEC §4's SSE contract holds through it: the
current state first, every state change of the caller's own files once and in id order,
Last-Event-ID replay on reconnect, keep-alive comments, and recovery of what it missed.

Skipped where Pushpin is not installed (CI installs it: .ci/run)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import asyncpg
import httpx
import pytest

from imuflow.auth import hash_token
from imuflow.settings import Settings
from imuflow.stack.edge import INSTALL_HINT, EdgeConfig, local_edge, pushpin_binary, running_edge
from services.progress.grip import Grant
from tests.e2e.helpers import bearer, make_token
from tests.progress.sse_helpers import finish, new_file, progress
from tests.stack import ServiceStack, StartStack
from tests.waiting import until

PUSHPIN = pushpin_binary()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.e2e,
    pytest.mark.timeout(120),
    pytest.mark.skipif(PUSHPIN is None, reason=f"pushpin not installed: {INSTALL_HINT}"),
]
PING_SECONDS = 1.0


async def soon(condition: Callable[[], bool], what: str, within: float = 10.0) -> None:
    """Wait until `condition()` holds (what a stream read so far), failing naming `what`."""

    async def check() -> bool:
        return condition()

    await until(check, what, within)


@dataclass
class Stream:
    """What one client read from a stream: events as (type, id, record) and comments."""

    events: list[tuple[str, int, dict[str, object]]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    ended: bool = False  # the server (the edge) closed the stream

    def ids(self) -> list[int]:
        return [event_id for _, event_id, _ in self.events]

    def files(self) -> set[str]:
        return {str(record["id"]) for _, _, record in self.events}


async def _read(url: str, headers: dict[str, str], into: Stream) -> None:
    """Read raw SSE frames until cancelled (comments too, which httpx-sse hides)."""
    with contextlib.suppress(httpx.HTTPError):  # closed by the server mid-chunk: ended all the same
        await _frames(url, headers, into)
    into.ended = True


async def _frames(url: str, headers: dict[str, str], into: Stream) -> None:
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None), trust_env=False) as client,
        client.stream("GET", url, headers=headers) as response,
    ):
        into.status = response.status_code
        into.headers = dict(response.headers)
        buffer = ""
        async for text in response.aiter_text():
            buffer = (buffer + text).replace("\r\n", "\n")  # sse-starlette ends lines with CRLF
            while "\n\n" in buffer:
                frame, buffer = buffer.split("\n\n", 1)
                fields: dict[str, str] = {}
                for line in frame.split("\n"):
                    if line.startswith(":"):
                        into.comments.append(line)
                    else:
                        name, _, value = line.partition(": ")
                        fields[name] = value
                if "data" in fields:
                    into.events.append(
                        (fields.get("event", "message"), int(fields["id"]), json.loads(fields["data"]))
                    )


@contextlib.asynccontextmanager
async def following(url: str, headers: dict[str, str]) -> AsyncIterator[Stream]:
    stream = Stream()
    task = asyncio.create_task(_read(url, headers, stream))
    try:
        yield stream
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


EdgeStack = tuple[EdgeConfig, ServiceStack]


@contextlib.asynccontextmanager
async def _edge_in_front(
    settings: Settings, service_stack: StartStack, directory: Path, *, publish: bool = True
) -> AsyncIterator[EdgeStack]:
    """Pushpin on free ports in front of a progress service (publishing to it, or not)."""
    assert PUSHPIN is not None
    config = local_edge(directory, [f"127.0.0.1:{settings.progress_port}"], PUSHPIN)
    edge_settings = settings.model_copy(
        update={
            "sse_edge_key": config.sig_key,
            "sse_edge_publish_url": config.publish_url if publish else "",
            "sse_ping_seconds": PING_SECONDS,
        }
    )
    with running_edge(config):
        yield config, await service_stack(edge_settings, services=("progress",))


@pytest.fixture
async def edge_stack(
    test_settings: Settings, service_stack: StartStack, tmp_path: Path
) -> AsyncIterator[EdgeStack]:
    async with _edge_in_front(test_settings, service_stack, tmp_path / "edge") as started:
        yield started


async def test_clients_through_the_edge_get_their_own_files_state_first_then_every_change(
    edge_stack: EdgeStack, database_url: str
) -> None:
    config, _ = edge_stack
    alice = await make_token(database_url, "alice")
    bob = await make_token(database_url, "bob")
    admin = await make_token(database_url, "ops", admin=True)
    conn = await asyncpg.connect(database_url)
    try:
        mine = await new_file(conn, "alice", "mine.csv")
        theirs = await new_file(conn, "bob", "theirs.csv")
        async with (
            following(f"{config.url}/api/events", bearer(alice)) as stream,
            following(f"{config.url}/api/files/{mine}/events", bearer(alice)) as one_file,
            following(f"{config.url}/api/admin/events", bearer(admin)) as operators,
            following(f"{config.url}/api/events", bearer(bob)) as bobs,
        ):
            await soon(
                lambda: len(stream.events) == 1 and len(bobs.events) == 1,
                "len(stream.events) == 1 and len(bobs.events) == 1",
            )
            assert stream.status == 200 and "text/event-stream" in stream.headers["content-type"]
            assert not any(h.startswith("grip-") for h in stream.headers), "GRIP headers reach the client"
            (kind, first_id, record) = stream.events[0]
            assert (kind, record["id"], record["status"]) == ("progress", mine, "queued")
            changes = []
            for samples in (100, 200, 300):
                changes.append(await progress(conn, mine, samples))
                await progress(conn, theirs, samples)
            changes.append(await finish(conn, mine, "completed"))
            bob_done = await finish(conn, theirs, "failed")
            await soon(
                lambda: stream.ids()[-1:] == changes[-1:] and bob_done in bobs.ids(),
                "stream.ids()[-1:] == changes[-1:] and bob_done in bobs.ids()",
            )
            await soon(lambda: one_file.ids()[-1:] == changes[-1:], "one_file.ids()[-1:] == changes[-1:]")
            await soon(lambda: bob_done in operators.ids(), "bob_done in operators.ids()")
            await asyncio.sleep(2 * PING_SECONDS)  # anything late or repeated would show now
    finally:
        await conn.close()
    assert stream.ids() == [first_id, *changes], "every change once, in id order"
    assert stream.files() == {mine}, "another user's events must never reach alice"
    assert [kind for kind, _, _ in stream.events[1:]] == ["progress"] * 3 + ["completed"]
    assert [r["samples_processed"] for _, _, r in stream.events[1:4]] == [100, 200, 300]
    assert one_file.ids() == stream.ids()
    assert bobs.files() == {theirs} and bobs.events[-1][0] == "failed"
    assert operators.files() == {mine, theirs}
    assert sorted(operators.ids()) == operators.ids() and len(set(operators.ids())) == len(operators.ids())
    assert changes[-1] in operators.ids() and bob_done in operators.ids()
    assert stream.comments, "no keep-alive comment came through the edge"


async def test_a_reconnect_through_the_edge_with_last_event_id_is_replayed_then_live(
    edge_stack: EdgeStack, database_url: str
) -> None:
    config, _ = edge_stack
    alice = await make_token(database_url, "alice")
    conn = await asyncpg.connect(database_url)
    try:
        mine = await new_file(conn, "alice", "mine.csv")
        other = await new_file(conn, "alice", "other.csv")
        seen = await progress(conn, mine, 10)
        # What happened while the client was away: coalesced on replay (SPEC §4).
        await progress(conn, mine, 20)
        latest = await progress(conn, mine, 30)
        ended = await finish(conn, other, "cancelled")
        headers = {**bearer(alice), "Last-Event-ID": str(seen)}
        async with following(f"{config.url}/api/events", headers) as stream:
            await soon(lambda: len(stream.events) == 2, "len(stream.events) == 2")
            live = await finish(conn, mine, "completed")
            await soon(lambda: live in stream.ids(), "live in stream.ids()")
            await asyncio.sleep(2 * PING_SECONDS)
    finally:
        await conn.close()
    assert stream.ids() == [latest, ended, live]
    assert [kind for kind, _, _ in stream.events] == ["progress", "cancelled", "completed"]


def _grip_sig(key: str, *, exp: float | None = None) -> str:
    """A Grip-Sig as Pushpin makes it (HS256 JWT, iss pushpin)."""

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    head = part({"typ": "JWT", "alg": "HS256"})
    body = part({"iss": "pushpin", "exp": int(exp or time.time() + 60)})
    sig = hmac.new(key.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{base64.urlsafe_b64encode(sig).decode().rstrip('=')}"


async def test_recovery_replays_what_the_edge_missed_and_only_for_the_edge(
    edge_stack: EdgeStack, database_url: str
) -> None:
    config, stack = edge_stack
    alice = await make_token(database_url, "alice")
    conn = await asyncpg.connect(database_url)
    try:
        mine = await new_file(conn, "alice", "mine.csv")
        await new_file(conn, "bob", "theirs.csv")
        delivered = await progress(conn, mine, 10)
        missed = await progress(conn, mine, 20)
        user_id = await conn.fetchval("SELECT id FROM users WHERE name = 'alice'")
    finally:
        await conn.close()
    grant = Grant(user_id, None, user_id, hash_token(alice))
    recover = f"{stack.progress_url}/api/edge/recover?grant={quote(grant.encode(config.sig_key))}"
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        # What Pushpin asks when a publish's prev-id shows it missed `missed`.
        last = {"Grip-Last": f"u-{user_id}; last-id={delivered}"}
        ok = await client.get(recover, headers={"Grip-Sig": _grip_sig(config.sig_key), **last})
        assert ok.status_code == 200, ok.text
        assert ok.headers["grip-hold"] == "stream"
        assert ok.headers["grip-channel"].startswith(f"u-{user_id}; prev-id={missed}")
        assert f"id: {missed}\r\n" in ok.text and f"id: {delivered}\r\n" not in ok.text
        # Not from the edge, a forged grant, an expired signature: refused.
        for headers, url in [
            (last, recover),
            ({"Grip-Sig": _grip_sig("not-the-key"), **last}, recover),
            ({"Grip-Sig": _grip_sig(config.sig_key, exp=time.time() - 5), **last}, recover),
            ({"Grip-Sig": _grip_sig(config.sig_key), **last}, recover.replace("grant=", "grant=x")),
        ]:
            refused = await client.get(url, headers=headers)
            assert refused.status_code == 403, (headers, refused.text)
        # A stream request with a Grip-Sig that is not the edge's is an ordinary stream.
        forged = {**bearer(alice), "Grip-Sig": _grip_sig("not-the-key")}
        async with client.stream("GET", f"{stack.progress_url}/api/events", headers=forged) as direct:
            assert direct.status_code == 200 and "grip-hold" not in direct.headers
        # Revoked: the recovery answers without a hold or a link, which ends the held stream.
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                "UPDATE api_tokens SET revoked_at = now() WHERE token_hash = $1", hash_token(alice)
            )
        finally:
            await conn.close()
        gone = await client.get(recover, headers={"Grip-Sig": _grip_sig(config.sig_key), **last})
        assert gone.status_code == 200 and "grip-hold" not in gone.headers and "grip-link" not in gone.headers


async def test_pushpin_recovers_what_it_missed_from_the_link_and_repeats_nothing(
    test_settings: Settings, service_stack: StartStack, tmp_path: Path, database_url: str
) -> None:
    # No publisher at all: every event is one the edge missed, until a publish whose
    # prev-id does not follow on makes Pushpin ask the stream's Grip-Link.
    alice = await make_token(database_url, "alice")
    conn = await asyncpg.connect(database_url)
    try:
        mine = await new_file(conn, "alice", "mine.csv")
        theirs = await new_file(conn, "bob", "theirs.csv")
        user_id = await conn.fetchval("SELECT id FROM users WHERE name = 'alice'")
        async with (
            _edge_in_front(test_settings, service_stack, tmp_path / "edge", publish=False) as (config, _),
            httpx.AsyncClient(trust_env=False, timeout=10) as client,
            following(f"{config.url}/api/events", bearer(alice)) as stream,
        ):

            async def nudge(n: int) -> None:
                item = {
                    "channel": f"u-{user_id}",
                    "id": f"nudge-{n}",
                    "prev-id": f"not-{n}",
                    "formats": {"http-stream": {"content": "event: bogus\ndata: {}\nid: 0\n\n"}},
                }
                published = await client.post(config.publish_url, json={"items": [item]})
                assert published.status_code == 200, published.text

            await soon(lambda: len(stream.events) == 1, "len(stream.events) == 1")
            await progress(conn, mine, 10)
            latest = await progress(conn, mine, 20)
            await progress(conn, theirs, 20)
            await nudge(1)
            await soon(lambda: latest in stream.ids(), "latest in stream.ids()")
            ended = await finish(conn, mine, "completed")
            await nudge(2)
            await soon(lambda: ended in stream.ids(), "ended in stream.ids()")
            await asyncio.sleep(2 * PING_SECONDS)
    finally:
        await conn.close()
    first = stream.ids()[0]
    # The replay after the last id delivered: coalesced (only the newest progress), no repeat.
    assert stream.ids() == [first, latest, ended]
    assert stream.files() == {mine}
    assert all(kind != "bogus" for kind, _, _ in stream.events)


async def test_a_held_stream_ends_within_20_s_of_its_token_being_revoked(
    edge_stack: EdgeStack, database_url: str
) -> None:
    """SPEC §7: a stream ends within 20 s of its session ending, held by the edge too.

    Pushpin asks the stream's link again every LINK_TIMEOUT_SECONDS; once the token is
    revoked it answers with no hold and no link, and the edge ends the stream. A live token's stream stays,
    and the re-asked link repeats no event."""
    config, _ = edge_stack
    alice = await make_token(database_url, "alice")
    carol = await make_token(database_url, "carol")
    conn = await asyncpg.connect(database_url)
    try:
        mine = await new_file(conn, "alice", "mine.csv")
        await new_file(conn, "carol", "kept.csv")
        async with (
            following(f"{config.url}/api/events", bearer(alice)) as revoked,
            following(f"{config.url}/api/events", bearer(carol)) as live,
        ):
            await soon(lambda: len(revoked.events) == 1 and len(live.events) == 1, "both streams started")
            changed = await progress(conn, mine, 100)
            await soon(lambda: revoked.ids()[-1:] == [changed], "the change reached alice")
            await conn.execute(
                "UPDATE api_tokens SET revoked_at = now() WHERE token_hash = $1", hash_token(alice)
            )
            started = time.monotonic()
            await soon(lambda: revoked.ended, "alice's held stream ended after her token's revocation", 20.0)
            ended_after = time.monotonic() - started
            assert not live.ended, "a live token's held stream must stay open"
    finally:
        await conn.close()
    assert ended_after <= 20.0
    assert len(live.ids()) == len(set(live.ids())) == 1, "the re-asked link repeated an event"
