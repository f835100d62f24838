"""Another host on this machine: a network namespace joined to this one by a veth pair.

`other_host()` makes the namespace and the link, picks a /30 in 10.0.0.0/8 that overlaps
no address or route of this machine, and removes both on the way out (even on failure).
Inside, the namespace has only its loopback and its end of the link, and no route
beyond it: whatever runs there reaches nothing but this test's own veth address.
`forward()` relays TCP from an address on the link to a server that listens elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import random
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass


class NamespacesUnavailable(RuntimeError):
    """This machine does not let the test make network namespaces."""


@dataclass(frozen=True)
class OtherHost:
    """A network namespace and the two ends of its link."""

    namespace: str
    host_ip: str  # this machine's end (where the servers listen)
    other_ip: str  # the namespace's end

    def wrap(self, argv: list[str], *, tmpfs_over: str) -> list[str]:
        """`argv` run inside the namespace, in a mount namespace of its own with a tmpfs over
        `tmpfs_over` (so it cannot see what this machine keeps there)."""
        script = 'mount -t tmpfs -o size=64m imuflow-other-host "$0" && exec "$@"'
        return [
            "ip", "netns", "exec", self.namespace,
            "unshare", "--mount", "--propagation", "private",
            "sh", "-c", script, tmpfs_over, *argv,
        ]  # fmt: skip


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        raise NamespacesUnavailable(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")


def _taken() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network this machine has an address in or a route to."""
    nets: list[ipaddress.IPv4Network] = []
    for cmd in (["ip", "-4", "-o", "addr"], ["ip", "-4", "route"]):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False).stdout
        for word in out.split():
            with contextlib.suppress(ValueError):
                if word[0].isdigit() and ("/" in word or word.count(".") == 3):
                    nets.append(ipaddress.IPv4Network(word, strict=False))
    return nets


def _free_subnet() -> ipaddress.IPv4Network:
    taken = _taken()
    for _ in range(100):
        candidate = ipaddress.IPv4Network(
            f"10.{random.randint(64, 254)}.{random.randint(0, 255)}.{4 * random.randint(1, 62)}/30"
        )
        if not any(candidate.overlaps(net) for net in taken):
            return candidate
    raise NamespacesUnavailable("no free /30 in 10.0.0.0/8")


def check_allowed() -> str | None:
    """Why namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network and mount namespaces need root"
    for tool in ("ip", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    return None


@contextlib.contextmanager
def other_host() -> Iterator[OtherHost]:
    """A namespace linked to this machine by a veth pair; removed afterwards."""
    tag = uuid.uuid4().hex[:6]
    namespace, here, there = f"imf-{tag}", f"imfh{tag}", f"imfo{tag}"
    subnet = _free_subnet()
    host_ip, other_ip = (str(a) for a in subnet.hosts())
    _ip("netns", "add", namespace)
    try:
        _ip("link", "add", here, "type", "veth", "peer", "name", there)
        _ip("link", "set", there, "netns", namespace)
        _ip("addr", "add", f"{host_ip}/30", "dev", here)
        _ip("link", "set", here, "up")
        _ip("-n", namespace, "addr", "add", f"{other_ip}/30", "dev", there)
        _ip("-n", namespace, "link", "set", there, "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        yield OtherHost(namespace, host_ip, other_ip)
    finally:
        # Deleting the namespace destroys its end of the pair, and with it this end.
        subprocess.run(["ip", "link", "del", here], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)


@contextlib.contextmanager
def forward(listen: tuple[str, int], target: tuple[str, int]) -> Iterator[int]:
    """Relay TCP connections to `listen` (port 0: a free one) to `target`; yields the port.

    The relay has its own event loop in its own thread, so a test that blocks its loop
    for a moment never stalls the connections it relays.
    """

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="tcp-forward", daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(asyncio.start_server(relay, *listen), loop).result(10)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
