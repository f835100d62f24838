"""Small process and port helpers shared by the embedded broker, the supervisor and tests."""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import socket
import sys

_PR_SET_PDEATHSIG = 1


def child_preexec() -> None:
    """In a forked child: die with SIGTERM when the parent dies (Linux), so a SIGKILLed
    `imuflow up` or test run leaves no orphaned services or broker behind."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port (connections in TIME_WAIT don't count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR like uvicorn's own socket: only a live listener makes bind fail.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
