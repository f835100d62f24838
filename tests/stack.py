"""Run the real services (ingest, parser, progress) as processes for end-to-end tests.

`service_stack` is a fixture returning an async starter:
`await service_stack(settings, env={"IMUFLOW_BATCH_SIZE": "2000"})` (settings default to
the `test_settings` fixture) starts the services under the supervisor, waits until all
are healthy and returns their URLs (`progress_replicas=N` runs N progress processes on
free ports, as `imuflow up --progress-replicas N` does); everything started is stopped after the test. When
a test fails, the tail of each service log is attached to its report.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from imuflow.settings import Settings
from imuflow.stack.supervisor import (
    SERVICES,
    ServiceSpec,
    Supervisor,
    SupervisorError,
    log_tail,
    replica_ports,
    replica_urls,
    service_specs,
    service_urls,
)

_STACKS = pytest.StashKey[list["ServiceStack"]]()


@dataclass
class ServiceStack:
    """Running services: their URLs, log files and the supervisor that runs them."""

    settings: Settings
    ingest_url: str
    progress_url: str
    parser_metrics_url: str
    supervisor: Supervisor
    progress_urls: list[str] = field(default_factory=list)  # every replica; the first is progress_url

    @property
    def logs(self) -> dict[str, Path]:
        """Log file of each service."""
        return {name: st.spec.log_path for name, st in self.supervisor.services.items()}

    def log_tails(self, lines: int = 60) -> str:
        """The last lines of every service log, for failure messages."""
        return self.supervisor.describe(lines=lines)


StartStack = Callable[..., Awaitable[ServiceStack]]


async def start_service_stack(
    settings: Settings,
    env: Mapping[str, str] | None = None,
    *,
    services: Sequence[str] = SERVICES,
    healthy_within: float = 60.0,
    ready: bool = True,
    progress_replicas: int = 1,
) -> ServiceStack:
    """Start the services for `settings` (+ extra env) and wait until they are healthy.

    `ready=False` waits only until they are alive (`/healthz`): for a test of a service whose
    dependency is down, so that its `/readyz` rightly answers 503.
    """
    ports = replica_ports(settings.progress_port, progress_replicas)
    urls = service_urls(settings)
    replicas = [urls["progress"], *replica_urls(settings.host, ports[1:])]
    # Every replica is a page origin, as under `imuflow up`.
    settings = settings.model_copy(update={"progress_urls": ",".join(replicas)})
    specs = service_specs(settings, env, services, progress_ports=ports)
    if not ready:
        specs = [_alive_only(spec) for spec in specs]
    supervisor = Supervisor(
        specs,
        backoff_initial=0.2,
        backoff_max=2.0,
        grace=5.0,
    )
    await supervisor.start()
    try:
        await supervisor.wait_healthy(within=healthy_within)
    except BaseException:
        await supervisor.stop()
        raise
    return ServiceStack(settings, urls["ingest"], urls["progress"], urls["parser"], supervisor, replicas)


def _alive_only(spec: ServiceSpec) -> ServiceSpec:
    url = spec.health_url
    if url is None or not url.endswith("/readyz"):
        return spec
    return replace(spec, health_url=url.removesuffix("/readyz") + "/healthz")


@pytest.fixture
async def service_stack(request: pytest.FixtureRequest, test_settings: Settings) -> AsyncIterator[StartStack]:
    """An async starter `(settings=test_settings, env=None, *, services=..., healthy_within=60, ready=True,
    progress_replicas=1)`.

    It depends on `test_settings` so the services stop before the test's database is dropped.
    """
    started: list[ServiceStack] = []
    request.node.stash[_STACKS] = started

    async def start(
        settings: Settings | None = None,
        env: Mapping[str, str] | None = None,
        *,
        services: Sequence[str] = SERVICES,
        healthy_within: float = 60.0,
        ready: bool = True,
        progress_replicas: int = 1,
    ) -> ServiceStack:
        try:
            stack = await start_service_stack(
                settings or test_settings,
                env,
                services=services,
                healthy_within=healthy_within,
                ready=ready,
                progress_replicas=progress_replicas,
            )
        except SupervisorError as exc:
            pytest.fail(f"service stack did not start:\n{exc}", pytrace=False)
        started.append(stack)
        return stack

    try:
        yield start
    finally:
        for stack in reversed(started):
            await stack.supervisor.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach each service's log tail to the report of a failed test that ran services."""
    report = yield
    stacks = item.stash.get(_STACKS, [])
    if report.failed and stacks:
        for stack in stacks:
            for name, path in stack.logs.items():
                report.sections.append((f"{name} log ({path})", log_tail(path, 60)))
    return report
