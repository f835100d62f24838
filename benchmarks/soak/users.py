"""The soak's users: each uploads a stream of files and follows its own live events.

An upload that meets a killed ingest (connection refused or dropped, 5xx) is sent again
with backoff; the same bytes again are answered with the first record (duplicate
detection), so a retry after a lost answer never makes a second job. A follower reads
`/api/events` and reconnects with `Last-Event-ID` after any break.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx

from benchmarks.soak.files import Expect, Upload, pick

TERMINAL = {"completed", "failed", "cancelled"}


@dataclass
class Sent:
    """One upload as the user saw it: what it should become, and ingest's last answer."""

    name: str
    sha256: str
    expect: Expect
    status_code: int | None = None
    detail: str = ""
    record: dict[str, Any] | None = None
    retries: int = 0


@dataclass
class Seen:
    """What one follower saw of one file."""

    samples: list[int] = field(default_factory=list)
    percents: list[float] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)


@dataclass
class User:
    """A soak user: a token, its uploads and what its follower saw."""

    name: str
    token: str
    sent: list[Sent] = field(default_factory=list)
    seen: dict[str, Seen] = field(default_factory=lambda: defaultdict(Seen))
    reconnects: int = 0

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def upload_until(self, ingest_url: str, until: float, rng: random.Random, gap: float) -> None:
        """Upload files from the mix until `until` (monotonic), one every ~`gap` seconds."""
        async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=120.0), trust_env=False) as client:
            while time.monotonic() < until:
                upload = await asyncio.to_thread(pick, rng)
                self.sent.append(await self._send(client, ingest_url, upload))
                await asyncio.sleep(rng.expovariate(1 / gap))

    async def _send(self, client: httpx.AsyncClient, ingest_url: str, upload: Upload) -> Sent:
        sent = Sent(upload.name, hashlib.sha256(upload.body).hexdigest(), upload.expect)
        delay = 0.5
        give_up = time.monotonic() + 180
        while True:
            try:
                resp = await client.post(
                    f"{ingest_url}/api/files",
                    headers=self.headers,
                    files={"file": (upload.name, upload.body)},
                )
            except httpx.HTTPError as exc:
                resp, sent.detail = None, f"{type(exc).__name__}: {exc}"
            if resp is not None:
                sent.status_code = resp.status_code
                retry_after = resp.headers.get("retry-after")
                if resp.status_code < 500 and resp.status_code != 429:
                    body = _json(resp)
                    if resp.status_code in (200, 202):
                        sent.record = body
                    else:
                        sent.detail = str(body.get("detail", resp.text[:300]))
                    return sent
                sent.detail = resp.text[:300]
                if retry_after:
                    delay = max(delay, float(retry_after))
            if time.monotonic() > give_up:
                return sent
            sent.retries += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 8.0)

    async def follow(self, progress_url: str, stop: asyncio.Event) -> None:
        """Read `/api/events` until `stop`, reconnecting with Last-Event-ID."""
        last_id: str | None = None
        timeout = httpx.Timeout(10.0, read=30.0)
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
            while not stop.is_set():
                headers = dict(self.headers)
                if last_id:
                    headers["Last-Event-ID"] = last_id
                try:
                    async with client.stream("GET", f"{progress_url}/api/events", headers=headers) as resp:
                        if resp.status_code != 200:
                            raise httpx.HTTPError(f"status {resp.status_code}")
                        last_id = await self._read(resp, stop, last_id)
                except (httpx.HTTPError, OSError):
                    pass
                if not stop.is_set():
                    self.reconnects += 1
                    await asyncio.sleep(0.5)

    async def _read(self, resp: httpx.Response, stop: asyncio.Event, last_id: str | None) -> str | None:
        data, event_id = "", None
        async for line in resp.aiter_lines():
            if stop.is_set():
                break
            if line.startswith("id:"):
                event_id = line[3:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
            elif not line and data:
                self._note(json.loads(data))
                last_id = event_id or last_id
                data, event_id = "", None
        return last_id

    def _note(self, record: dict[str, Any]) -> None:
        seen = self.seen[record["id"]]
        seen.samples.append(int(record.get("samples_processed") or 0))
        seen.percents.append(float(record.get("percent") or 0.0))
        seen.statuses.append(str(record["status"]))


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {"detail": resp.text[:300]}
    return body if isinstance(body, dict) else {"detail": str(body)[:300]}
