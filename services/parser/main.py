"""`imuflow parser`: one parser process, a member of the parser consumer group."""

from __future__ import annotations

import asyncio
import logging
from functools import partial

from aiokafka.errors import KafkaError

from imuflow import db, kafka, storage
from imuflow.lostevents import LostEventCheck
from imuflow.outbox import OutboxRelay
from imuflow.readiness import Readiness, broker_check, postgres_check, storage_check
from imuflow.runner import run_worker, start_metrics_server
from imuflow.settings import Settings
from imuflow.supervision import TaskDied, TaskSupervisor
from services.parser.heartbeat import Heartbeat
from services.parser.repository import ParserRepository
from services.parser.worker import ParserWorker

log = logging.getLogger("imuflow.parser")


async def serve(
    settings: Settings, stop: asyncio.Event, repository: type[ParserRepository] = ParserRepository
) -> None:
    """Run the parser until `stop` is set; in-flight jobs are abandoned at a batch boundary.

    `repository` is for benchmarks only (benchmarks/untracked_parser.py stores batches
    without their checkpoint and progress event, to measure what tracking costs)."""
    settings.require_servers()
    pool = await db.create_pool(settings.database_url, max_size=settings.parser_concurrency + 4)
    producer = kafka.producer(settings)
    # One stop path: a task that dies sets the same event SIGTERM sets.
    supervisor = TaskSupervisor("parser", stop, grace=settings.stop_grace)
    # Not ready without any of them (SPEC §7): a parser can take no job without the broker.
    readiness = Readiness(
        {
            "postgres": postgres_check(pool),
            "broker": broker_check(producer),
            "storage": storage_check(storage.for_process(settings)),
        },
        required=frozenset({"postgres", "broker", "storage"}),
    )
    supervisor.start("readiness", readiness.run)
    # Up before the broker is: /healthz and /readyz (503, broker down) answer meanwhile.
    metrics = await start_metrics_server(
        settings,
        settings.parser_metrics_port,
        lambda: not stop.is_set(),
        readiness.report,
    )
    try:
        try:
            await kafka.retry_forever("kafka", producer.start, stop)
        except (KafkaError, OSError):
            if stop.is_set():
                return  # stopped before the broker ever answered
            raise
        await kafka.ensure_topics(settings)
        # A batch transaction may hold the job's row lock at most this long (a hung parser's
        # lock must go before the watchdog can requeue the job): beyond the stuck threshold.
        repo = repository(pool, hold_timeout=max(2 * settings.stuck_after, 10.0))
        worker = ParserWorker(settings, repo, producer)
        supervisor.start("consumer", worker.run)
        supervisor.start("outbox-relay", OutboxRelay(settings, pool, producer).run)
        supervisor.start("topic-keeper", partial(kafka.keep_topics, settings))  # broker restarted empty
        supervisor.start("lost-events", LostEventCheck(settings, pool, producer).run)
        supervisor.start("lag", worker.report_lag)
        supervisor.start("heartbeat", Heartbeat(settings, pool).run)  # the operator page's live parsers
        log.info("parser started", extra={"ctx": {"group": settings.parser_group_id}})
        await stop.wait()
    finally:
        log.info("parser stopping")
        await supervisor.stop()
        if metrics is not None:
            metrics[0].should_exit = True
            await metrics[1]
        await producer.stop()
        await pool.close()
        await storage.close_process()
    if supervisor.failure is not None:
        raise TaskDied("parser") from supervisor.failure


def main(settings: Settings) -> None:
    """Process entry point."""
    run_worker("parser", settings, lambda stop: serve(settings, stop))
