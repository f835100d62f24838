"""`imuflow contracts export DIR`: the contract schemas and FastStream's AsyncAPI document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contracts.export import export
from imuflow import channels
from imuflow.settings import Settings
from services.progress.applier import ProgressApplier


def asyncapi_document(settings: Settings) -> dict[str, Any]:
    """The AsyncAPI document of the real progress subscriber and a publisher per topic."""
    applier = ProgressApplier(settings, pool=None)  # declares its subscriber; nothing starts
    channels.publishers(applier.broker, settings)
    return channels.asyncapi(applier.broker)


def export_contracts(directory: Path, settings: Settings) -> list[Path]:
    """Write every JSON Schema and `asyncapi.json` into `directory`; return the paths."""
    return export(directory, asyncapi_document(settings))
