"""A local HTTP server that records webhook bodies (the alert notifier's receiver in tests)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


class WebhookReceiver:
    """Answers POSTs with the scripted statuses (then 200) and keeps each JSON body."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.bodies: list[dict[str, Any]] = []
        self.attempts = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length))
                with receiver._lock:
                    receiver.attempts += 1
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    if status < 300:
                        receiver.bodies.append(body)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    async def __aenter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self._server.shutdown)
        self._server.server_close()

    async def when(self, ready: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]] | None:
        """The bodies so far if `ready(bodies)`, else None."""
        with self._lock:
            bodies = list(self.bodies)
        return bodies if ready(bodies) else None
