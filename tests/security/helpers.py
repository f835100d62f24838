"""Helpers for security tests: every route of a running service, called once, bounded in time."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import httpx

# Routes that answer without a token (SPEC §4): health, metrics, the page's config, sign-in,
# and sign-out (it only revokes the cookie it is sent, so it needs no other credential).
OPEN_ROUTES = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/api/config"),
    ("POST", "/api/session"),
    ("DELETE", "/api/session"),
    ("OPTIONS", "/api/uploads"),  # tus discovery (SPEC §7)
}
SSE_READ_SECONDS = 1.5


@dataclass(frozen=True)
class Route:
    """One operation of a service's OpenAPI document."""

    service: str
    base_url: str
    method: str
    path: str
    operation: dict[str, Any]

    @property
    def is_open(self) -> bool:
        """True when the route needs no token."""
        return (self.method, self.path) in OPEN_ROUTES

    @property
    def is_admin(self) -> bool:
        """True for operator routes."""
        return self.path.startswith("/api/admin/")

    @property
    def is_file_scoped(self) -> bool:
        """True when the route names one file (or one resumable upload) in its path."""
        return "{file_id}" in self.path or "{upload_id}" in self.path

    @property
    def is_read(self) -> bool:
        """True for GET routes (the ones that change nothing)."""
        return self.method == "GET"

    @property
    def is_stream(self) -> bool:
        """True for Server-Sent Events routes (they never end by themselves)."""
        content = self.operation.get("responses", {}).get("200", {}).get("content", {})
        return "text/event-stream" in content

    def __str__(self) -> str:
        return f"{self.service} {self.method} {self.path}"


async def routes_of(client: httpx.AsyncClient, service: str, base_url: str) -> list[Route]:
    """Every operation in the service's `/openapi.json`."""
    response = await client.get(f"{base_url}/openapi.json")
    response.raise_for_status()
    found = []
    for path, operations in response.json()["paths"].items():
        for method, operation in operations.items():
            found.append(Route(service, base_url, method.upper(), path, operation))
    return found


def fill_path(route: Route, values: dict[str, str]) -> str:
    """The route's URL with its path parameters filled from `values`."""
    path = route.path
    for param in route.operation.get("parameters", []):
        if param.get("in") != "path":
            continue
        name = param["name"]
        if name not in values:
            raise AssertionError(f"{route}: no test value for path parameter {name!r}; add one")
        path = path.replace("{" + name + "}", values[name])
    return route.base_url + path


def body_of(route: Route) -> dict[str, Any]:
    """A request body that parses (so auth, not body decoding, decides the answer)."""
    content = route.operation.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        return {"json": {}}
    if "multipart/form-data" in content:
        return {"files": {"file": ("probe.csv", b"t,ax,ay,az\n0,1,2,3\n")}}
    return {}


@dataclass(frozen=True)
class Answer:
    """What a route answered: status and (for streams, the first seconds of) the body."""

    status: int
    body: str


async def call(client: httpx.AsyncClient, route: Route, url: str, headers: dict[str, str]) -> Answer:
    """Call the route once; a stream is read for SSE_READ_SECONDS, then dropped."""
    kwargs = body_of(route)
    if not route.is_stream:
        response = await client.request(route.method, url, headers=headers, **kwargs)
        return Answer(response.status_code, response.text)
    chunks: list[str] = []
    async with client.stream(route.method, url, headers=headers) as response:
        if response.status_code == 200:

            async def read() -> None:
                async for text in response.aiter_text():
                    chunks.append(text)

            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(read(), SSE_READ_SECONDS)
        else:
            await response.aread()
            chunks.append(response.text)
        return Answer(response.status_code, "".join(chunks))
