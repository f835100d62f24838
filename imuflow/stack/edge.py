"""The Pushpin SSE edge of `imuflow up --sse-edge`: its configuration and its process.

Pushpin (a Debian package) holds the clients' event streams and fans each published event
out to them, so a progress process answers a stream's start and publishes each event once
per channel instead of writing it to every client (services/progress/grip.py). One config
renderer serves both shapes: `imuflow up` writes it to DATA_DIR/pushpin with free ports and
the replicas as routes; `deploy/pushpin/` is the same renderer's output for docker-compose
(tests/stack/test_sse_edge.py checks they agree), so what the test runs is what compose runs.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from imuflow.stack.procs import child_preexec, free_port
from imuflow.stack.supervisor import ServiceSpec

INSTALL_HINT = (
    "install Pushpin (`apt-get install pushpin` on Debian/Ubuntu; https://pushpin.org/docs/install/)"
)
ISSUER = "pushpin"  # the `iss` of its Grip-Sig (services/progress/grip.py checks it)
# One publish POST of services/progress/edgepublish.py (BATCH items of about 2 KB) must fit.
MAX_PUBLISH_BODY = 10_000_000
# Deliveries per second Pushpin allows itself (its default, 2,500, is a quarter of what
# 10,000 clients at one event a second need), and how many may wait.
MESSAGE_RATE = 200_000
MESSAGE_HWM = 200_000


def pushpin_binary() -> str | None:
    """Path of the `pushpin` runner (None when it is not installed)."""
    return shutil.which("pushpin")


@dataclass(frozen=True)
class EdgeConfig:
    """Where an edge listens, whom it routes to, and the key it signs requests with."""

    directory: Path  # its config, routes, run and log directories
    listen: str  # [addr:]port clients connect to
    publish_host: str
    publish_port: int
    backends: tuple[str, ...]  # host:port of each progress replica
    sig_key: str
    binary: str = "pushpin"
    rundir: Path | None = None  # default: directory/run

    @property
    def url(self) -> str:
        host, _, port = self.listen.rpartition(":")
        return f"http://{host if host not in ('', '0.0.0.0') else '127.0.0.1'}:{port}"

    @property
    def publish_url(self) -> str:
        return f"http://{self.publish_host}:{self.publish_port}/publish/"

    @property
    def config_path(self) -> Path:
        return self.directory / "pushpin.conf"


def local_edge(directory: Path, backends: list[str], binary: str, host: str = "127.0.0.1") -> EdgeConfig:
    """An edge on free ports of `host` with a new random key, in front of `backends`."""
    return EdgeConfig(
        directory=directory,
        listen=f"{host}:{free_port(host)}",
        publish_host="127.0.0.1",
        publish_port=free_port(),
        backends=tuple(backends),
        sig_key=secrets.token_urlsafe(32),
        binary=binary,
    )


def render_config(config: EdgeConfig, *, rundir: str, logdir: str, routes: str) -> str:
    """pushpin.conf for `config` (paths as Pushpin will see them)."""
    # Every socket but the two TCP ports is an ipc path in rundir, so several edges (tests,
    # stacks) can run side by side; zurl makes the requests to the replicas and the
    # recovery requests, and its sockets are moved there too.
    return f"""# Pushpin, the SSE edge in front of the progress service: rendered by imuflow/stack/edge.py
[global]
include={{libdir}}/internal.conf
rundir={rundir}
ipc_prefix=pushpin-
port_offset=0
stats_connection_ttl=120

[runner]
services=condure,zurl,pushpin-proxy,pushpin-handler
http_port={config.listen}
logdir={logdir}
# 1: warnings only. At 2 every request and subscription is a log line: 10,000 of them per storm.
log_level=1
client_buffer_size=8192
client_maxconn=50000
condure_bin=condure
zurl_bin=zurl

[proxy]
zurl_out_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-in
zurl_out_stream_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-in-stream
zurl_in_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-out
routesfile={routes}
debug=false
auto_cross_origin=false
accept_x_forwarded_protocol=false
set_x_forwarded_protocol=proto-only
x_forwarded_for=append
x_forwarded_for_trusted=
orig_headers_need_mark=
accept_pushpin_route=false
log_from=false
log_user_agent=false
sig_iss={ISSUER}
sig_key={config.sig_key}
upstream_key=
updates_check=off

[handler]
push_in_spec=ipc://{{rundir}}/{{ipc_prefix}}push-in
push_in_sub_specs=ipc://{{rundir}}/{{ipc_prefix}}push-in-sub
push_in_sub_connect=false
push_in_http_addr={config.publish_host}
push_in_http_port={config.publish_port}
push_in_http_max_headers_size=10000
push_in_http_max_body_size={MAX_PUBLISH_BODY}
stats_spec=ipc://{{rundir}}/{{ipc_prefix}}stats
command_spec=ipc://{{rundir}}/{{ipc_prefix}}handler-command
message_rate={MESSAGE_RATE}
message_hwm={MESSAGE_HWM}
message_wait=5000
id_cache_ttl=60
connection_subscription_max=20
subscription_linger=60
stats_subscription_ttl=60
stats_report_interval=10
stats_format=tnetstring
"""


def render_routes(config: EdgeConfig) -> str:
    """The routes file: every request to the first progress replica, the next when it is down.

    Targets separated by spaces are tried in order; a stream's start is one short request
    (the edge holds the connection), so one replica answers them all and the others stand by.
    """
    targets = " ".join(config.backends)
    return f"# every path to the progress replicas (rendered by imuflow/stack/edge.py)\n* {targets}\n"


def write_config(config: EdgeConfig) -> Path:
    """Write pushpin.conf and routes into `config.directory`; the config's path."""
    rundir = config.rundir or config.directory / "run"
    for sub in (config.directory, rundir, config.directory / "log"):
        sub.mkdir(parents=True, exist_ok=True)
    routes = config.directory / "routes"
    routes.write_text(render_routes(config))
    text = render_config(config, rundir=str(rundir), logdir=str(config.directory / "log"), routes=str(routes))
    config.config_path.write_text(text)
    config.config_path.chmod(0o600)  # it holds the signing key
    return config.config_path


# docker-compose's edge (the `sse-edge` service): deploy/pushpin/ is render_deploy()'s output,
# checked by tests/stack/test_sse_edge_config.py. Its key must match the progress
# service's IMUFLOW_SSE_EDGE_KEY there; change both for anything but a trial.
DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "pushpin"
COMPOSE_EDGE = EdgeConfig(
    directory=Path("/etc/pushpin"),
    listen="0.0.0.0:7999",
    publish_host="0.0.0.0",
    publish_port=5561,
    backends=("progress:8000",),
    sig_key="imuflow-dev-edge-key",
)


def render_deploy(config: EdgeConfig = COMPOSE_EDGE) -> dict[str, str]:
    """deploy/pushpin's files (name: text) for the compose edge."""
    conf = render_config(
        config, rundir="/var/run/pushpin", logdir="/var/log/pushpin", routes="/etc/pushpin/routes"
    )
    return {"pushpin.conf": conf, "routes": render_routes(config)}


def write_deploy(directory: Path = DEPLOY_DIR) -> None:
    """Regenerate deploy/pushpin: `python -c 'import imuflow.stack.edge as e; e.write_deploy()'`."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in render_deploy().items():
        (directory / name).write_text(text)


def edge_spec(config: EdgeConfig, log_path: Path) -> ServiceSpec:
    """The supervisor's spec of the edge; healthy when a replica's /readyz answers through it."""
    return ServiceSpec(
        name="sse-edge",
        argv=[config.binary, "--config", str(config.config_path), "--merge-output"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        log_path=log_path,
        health_url=f"{config.url}/readyz",
    )


class EdgeDidNotStart(RuntimeError):
    """Pushpin exited or did not listen in time; the message carries its log's tail."""


@contextlib.contextmanager
def running_edge(config: EdgeConfig, *, within: float = 20.0) -> Iterator[subprocess.Popen[bytes]]:
    """Pushpin on `config` (written first) until the block ends, for tests and benchmarks.

    Ready once its client port and its publish port both accept connections. It runs in a
    process group of its own (runner, condure, zurl, proxy, handler), stopped together.
    """
    write_config(config)
    log_path = config.directory / "pushpin.out"
    with log_path.open("ab") as out:
        process = subprocess.Popen(
            [config.binary, "--config", str(config.config_path), "--merge-output"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=child_preexec(),
        )
    try:
        host, _, port = config.listen.rpartition(":")
        deadline = time.monotonic() + within
        while not (
            _listens(host or "127.0.0.1", int(port)) and _listens(config.publish_host, config.publish_port)
        ):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise EdgeDidNotStart(f"pushpin did not start (exit {process.poll()}):\n{tail}")
            time.sleep(0.05)
        yield process
    finally:
        _stop_group(process)


def _listens(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def _stop_group(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM Pushpin's process group, SIGKILL it after `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue
