"""The operator API (admin only) and the operator page at `/admin`."""

from __future__ import annotations

import logging
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import FileResponse, Response
from sse_starlette import EventSourceResponse

from contracts.operators import (
    FailedJob,
    FailedJobList,
    ParserList,
    ParserState,
    SlowingJob,
    SlowingJobList,
    TrendPoint,
    TrendReport,
)
from contracts.records import (
    AdminJob,
    AdminJobList,
    DeadLetter,
    DeadLetterList,
    DeadLetterReplay,
    ErrorBody,
    FileStatus,
    PerformanceReport,
    PerformanceRow,
    StuckAction,
    StuckJob,
    StuckJobList,
    StuckResetRequest,
    StuckResetResult,
)
from imuflow import dberrors, deadletters, metrics
from imuflow.logs import fields
from imuflow.web import AppSettings, CurrentAdmin, Pool, database_unavailable
from services.progress.api import TOO_MANY, Mux, Repo
from services.progress.dashboard import DashboardRepository
from services.progress.operations import OperationsRepository
from services.progress.repository import Unavailable
from services.progress.sse import stream_response
from services.progress.watchdog import report_actions

STATIC = FilePath(__file__).parent / "static"
log = logging.getLogger("imuflow.progress.admin")
BIGINT_MAX = 2**63 - 1  # outbox ids are bigint
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody},
    403: {"model": ErrorBody},
    503: {"model": ErrorBody},
}


def ops_of(request: Request) -> OperationsRepository:
    """The app's operations repository (created in lifespan)."""
    ops: OperationsRepository = request.app.state.ops
    return ops


Ops = Annotated[OperationsRepository, Depends(ops_of)]


def dashboard_of(request: Request) -> DashboardRepository:
    """The dashboard's queries, on the app's pool."""
    return DashboardRepository(request.app.state.pool)


Dashboard = Annotated[DashboardRepository, Depends(dashboard_of)]

router = APIRouter(prefix="/api/admin", tags=["operator"], responses=ERRORS)
page_router = APIRouter(include_in_schema=False)


@router.get("/jobs", response_model=AdminJobList)
async def list_jobs(
    _: CurrentAdmin,
    ops: Ops,
    status: FileStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=2000)] = 200,
) -> AdminJobList:
    """Every user's files (newest first, optionally one status) and counts by status."""
    try:
        rows = await ops.list_jobs(status, limit)
        counts = await ops.counts()
    except Unavailable as exc:
        raise database_unavailable(exc) from exc
    return AdminJobList(items=[AdminJob.model_validate(r) for r in rows], counts=counts)


@router.get(
    "/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **TOO_MANY},
)
async def admin_events(
    request: Request, admin: CurrentAdmin, repo: Repo, mux: Mux, cfg: AppSettings
) -> Response:
    """Live events of every user's files (current state first; Last-Event-ID replays)."""
    return await stream_response(
        request, mux, repo, owner=admin.id, user_id=None, file_id=None, ping_seconds=cfg.sse_ping_seconds
    )


@router.get("/stuck", response_model=StuckJobList)
async def stuck(
    _: CurrentAdmin,
    ops: Ops,
    older_than_seconds: Annotated[float | None, Query(gt=0, le=30 * 86_400)] = None,
) -> StuckJobList:
    """Jobs the stuck rule matches now (the threshold replaces STUCK_AFTER in the rule)."""
    try:
        rows = await ops.stuck(older_than_seconds)
    except Unavailable as exc:
        raise database_unavailable(exc) from exc
    return StuckJobList(items=[StuckJob.model_validate(r) for r in rows])


@router.post("/stuck/reset", response_model=StuckResetResult)
async def reset_stuck(
    request: Request, admin: CurrentAdmin, ops: Ops, body: StuckResetRequest | None = None
) -> StuckResetResult:
    """Requeue every stuck job, or fail it once its attempts are spent."""
    threshold = body.older_than_seconds if body else None
    try:
        rows = await ops.reset_stuck(threshold)
    except Unavailable as exc:
        raise database_unavailable(exc) from exc
    report_actions(rows, getattr(request.app.state, "notifier", None), source=f"admin:{admin.name}")
    return StuckResetResult(items=[StuckAction.model_validate(r) for r in rows])


@router.get("/performance", response_model=PerformanceReport)
async def performance(
    _: CurrentAdmin, ops: Ops, limit: Annotated[int, Query(ge=0, le=1000)] = 50
) -> PerformanceReport:
    """Overall throughput, batch-time percentiles and failure rates, then the recent files."""
    try:
        rows = await ops.performance(limit)
    except Unavailable as exc:
        raise database_unavailable(exc) from exc
    parsed = [PerformanceRow.model_validate(r) for r in rows]
    overall = next(r for r in parsed if r.scope == "overall")
    return PerformanceReport(overall=overall, files=[r for r in parsed if r.scope == "file"])


@router.get("/slowing", response_model=SlowingJobList)
async def slowing(_: CurrentAdmin, ops: Ops) -> SlowingJobList:
    """The early warning: parsing jobs whose last 5 batches ran below a third of their median rate."""
    try:
        rows = await ops.slowing()
    except Unavailable as exc:
        raise database_unavailable(exc) from exc
    return SlowingJobList(items=[SlowingJob.model_validate(r) for r in rows])


@router.get("/parsers", response_model=ParserList)
async def parsers(_: CurrentAdmin, dash: Dashboard, cfg: AppSettings) -> ParserList:
    """Parsers from their heartbeat rows (live first) and the consumer lag of both groups."""
    try:
        rows = [ParserState.model_validate(r) for r in await dash.parsers()]
    except Unavailable as exc:
        raise database_unavailable(exc) from exc
    reported = [p.consumer_lag for p in rows if p.live and p.consumer_lag is not None]
    lag = {
        cfg.parser_group_id: max(reported) if reported else None,
        # This replica's own consumer (each progress replica reads a share of the partitions).
        cfg.progress_group_id: int(metrics.CONSUMER_LAG.labels(cfg.progress_group_id)._value.get()),
    }
    return ParserList(items=rows, consumer_lag=lag)


@router.get("/trends", response_model=TrendReport)
async def trends(
    _: CurrentAdmin,
    dash: Dashboard,
    days: Annotated[int, Query(ge=1, le=30)] = 7,  # the views cover 30 days
    bucket: Literal["hour", "day"] = "hour",
) -> TrendReport:
    """Throughput, files completed and failed by reason, queue wait and parse time per hour or day."""
    try:
        rows = await dash.trends(days, bucket)
    except Unavailable as exc:
        raise database_unavailable(exc) from exc
    return TrendReport(days=days, bucket=bucket, points=[TrendPoint.model_validate(r) for r in rows])


@router.get("/failures", response_model=FailedJobList)
async def failures(
    _: CurrentAdmin,
    dash: Dashboard,
    hours: Annotated[int, Query(ge=1, le=24 * 30)] = 24,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> FailedJobList:
    """Files that ended failed in the last `hours` (default a day), with owner and reason."""
    try:
        rows = await dash.failures(hours, limit)
    except Unavailable as exc:
        raise database_unavailable(exc) from exc
    return FailedJobList(hours=hours, items=[FailedJob.model_validate(r) for r in rows])


@router.get("/dead-letters", response_model=DeadLetterList)
async def dead_letters(
    _: CurrentAdmin,
    pool: Pool,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, le=BIGINT_MAX)] = None,
) -> DeadLetterList:
    """Outbox rows set aside because they can never be published, newest first."""
    try:
        rows = await deadletters.list_dead(pool, limit, before)
        total = await deadletters.count_dead(pool)
    except dberrors.DRIVER as exc:
        raise database_unavailable(exc) from exc
    return DeadLetterList(items=[DeadLetter.model_validate(r) for r in rows], total=total)


@router.post(
    "/dead-letters/{outbox_id}/replay",
    response_model=DeadLetterReplay,
    responses={404: {"model": ErrorBody}},
)
async def replay_dead_letter(
    outbox_id: Annotated[int, Path(ge=1, le=BIGINT_MAX)], admin: CurrentAdmin, pool: Pool
) -> DeadLetterReplay:
    """Publish a dead letter again (a file it failed is queued again)."""
    try:
        result = await deadletters.replay(pool, outbox_id)
    except dberrors.DRIVER as exc:
        raise database_unavailable(exc) from exc
    if result is None:
        raise HTTPException(404, f"no dead letter {outbox_id}")
    log.info(
        "dead letter replayed",
        extra=fields(
            action="dead_letter_replay",
            outbox_id=outbox_id,
            admin=admin.name,
            file_id=str(result["requeued_file"]) if result["requeued_file"] else None,
        ),
    )
    return DeadLetterReplay.model_validate(result)


@page_router.get("/admin")
async def admin_page() -> Response:
    """The operator page (it signs in with an admin token, then follows /api/admin/events)."""
    return FileResponse(STATIC / "admin.html", headers={"Cache-Control": "no-cache"})


@page_router.get("/admin.js")
async def admin_script() -> Response:
    """The operator page's script."""
    return FileResponse(
        STATIC / "admin.js", media_type="text/javascript", headers={"Cache-Control": "no-cache"}
    )
