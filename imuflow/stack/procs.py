"""Small process and port helpers shared by the embedded broker, the supervisor and tests."""

from __future__ import annotations

import ctypes
import functools
import signal
import socket
import subprocess
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


@functools.cache
def _prctl_call() -> Callable[[], object] | None:
    """prctl(PR_SET_PDEATHSIG, SIGTERM) bound and its arguments converted, in the parent.

    `dlopen(NULL)` gives the process's own symbols (libc's among them) without
    `ctypes.util.find_library`, which runs a subprocess; resolving here keeps symbol lookup,
    allocation and imports out of the forked child of a threaded parent.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    args = (
        ctypes.c_int(_PR_SET_PDEATHSIG),
        ctypes.c_ulong(int(signal.SIGTERM)),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
    )
    return functools.partial(prctl, *args)


def child_preexec() -> Callable[[], None] | None:
    """A `preexec_fn` for Popen: the child dies with SIGTERM when its parent dies (Linux),
    so a SIGKILLed `imuflow up` or test run leaves no orphaned services or broker behind.

    Call it in the parent (`preexec_fn=child_preexec()`): everything is resolved before the
    fork, and the child only makes the one prctl system call (async-signal-safe).
    None where there is no such call.
    """
    call = _prctl_call()
    if call is None:
        return None

    def preexec() -> None:
        call()

    return preexec


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


def terminate(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM a child, wait `grace` seconds, then SIGKILL it (no-op once it has exited)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
