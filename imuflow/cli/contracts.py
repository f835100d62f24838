"""`imuflow contracts export DIR`: the contract schemas and FastStream's AsyncAPI document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contracts.export import export
from imuflow import channels, kafka
from imuflow.settings import Settings
from services.progress.applier import ProgressApplier


def asyncapi_document(settings: Settings) -> dict[str, Any]:
    """The AsyncAPI document of the services' own FastStream objects: the progress
    subscriber and the producer's publishers (one per topic; the relay and the parser's
    progress events send through them)."""
    applier = ProgressApplier(settings, pool=None)  # declares its subscriber; nothing starts
    producer = kafka.producer(settings)  # declares its publishers; nothing connects
    return channels.asyncapi(applier.broker, producer.broker)


def export_contracts(directory: Path, settings: Settings) -> list[Path]:
    """Write every JSON Schema and `asyncapi.json` into `directory`; return the paths."""
    return export(directory, asyncapi_document(settings))
