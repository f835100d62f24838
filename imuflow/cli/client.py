"""The CLI's HTTP client for a running stack."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
from httpx_sse import connect_sse

from imuflow.settings import Settings


class CliError(Exception):
    """A failure to report to the user (exit code 1)."""


class StackClient:
    """Calls ingest and progress with the user's (or the stack admin's) token."""

    def __init__(self, settings: Settings, *, admin: bool = False, token: str | None = None) -> None:
        self.settings = settings
        chosen = token or (settings.admin_token if admin else settings.token) or settings.token
        if not chosen:
            raise CliError(
                "no token: run `imuflow up` (it writes stack.env with one), pass --token, "
                "or set IMUFLOW_TOKEN"
            )
        self.headers = {"Authorization": f"Bearer {chosen}"}

    def _client(self, timeout: float | httpx.Timeout | None = 30.0) -> httpx.Client:
        return httpx.Client(headers=self.headers, timeout=timeout)

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        """A JSON call; errors become CliError with the server's reason."""
        try:
            with self._client() as client:
                response = client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach {url}: {exc}") from exc
        if response.status_code >= 400:
            raise CliError(f"{response.status_code}: {_detail(response)}")
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def progress(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the progress service."""
        return self.request(method, f"{self.settings.progress_base}{path}", **kwargs)

    def events(
        self, file_id: str, last_event_id: str | None = None
    ) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(event type, id, record) of a file's SSE stream, from its current state on."""
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        url = f"{self.settings.progress_base}/api/files/{file_id}/events"
        with (
            self._client(timeout=httpx.Timeout(30.0, read=60.0)) as client,
            connect_sse(client, "GET", url, headers=headers) as source,
        ):
            if source.response.status_code >= 400:
                source.response.read()
                raise CliError(f"{source.response.status_code}: {_detail(source.response)}")
            for sse in source.iter_sse():
                if sse.event in ("progress", "completed", "failed", "cancelled"):
                    yield sse.event, sse.id, json.loads(sse.data)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    return str(body.get("detail", body)) if isinstance(body, dict) else str(body)
