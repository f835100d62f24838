"""Local HTTP servers for tests: a webhook receiver (alerts) and a Sentry envelope receiver."""

from __future__ import annotations

import asyncio
import gzip
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


class EnvelopeReceiver:
    """A stand-in Sentry server: keeps the items of every envelope POSTed to /api/<project>/envelope/."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []  # {"type": ..., "payload": ...}
        self.raw: list[bytes] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                data = self.rfile.read(length)
                encoding = self.headers.get("content-encoding", "")
                if encoding == "gzip":
                    data = gzip.decompress(data)
                elif encoding:
                    raise AssertionError(f"unexpected content-encoding {encoding}")
                with receiver._lock:
                    receiver.paths.append(self.path)
                    receiver.raw.append(data)
                    receiver.items.extend(_envelope_items(data))
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.dsn = f"http://public@127.0.0.1:{self._server.server_address[1]}/1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    async def __aenter__(self) -> EnvelopeReceiver:
        self._thread.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self._server.shutdown)
        self._server.server_close()

    def events(self) -> list[dict[str, Any]]:
        """The event payloads received so far."""
        with self._lock:
            return [i["payload"] for i in self.items if i["type"] == "event"]

    def everything(self) -> bytes:
        """Every byte received (decompressed), to look for what must never be sent."""
        with self._lock:
            return b"\n".join(self.raw)


def _envelope_items(data: bytes) -> list[dict[str, Any]]:
    """The items of a Sentry envelope: a header line, then (item header, payload) pairs."""
    items: list[dict[str, Any]] = []
    rest = data.split(b"\n", 1)[1] if b"\n" in data else b""
    while rest.strip():
        header_line, _, rest = rest.partition(b"\n")
        header = json.loads(header_line)
        if "length" in header:
            payload, rest = rest[: header["length"]], rest[header["length"] :].removeprefix(b"\n")
        else:
            payload, _, rest = rest.partition(b"\n")
        try:
            body: Any = json.loads(payload)
        except ValueError:
            body = payload
        items.append({"type": header.get("type"), "payload": body})
    return items
