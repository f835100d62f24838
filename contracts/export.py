"""Write the JSON Schema of every event and record, and the AsyncAPI document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from contracts import events, records

RECORD_MODELS: tuple[type[BaseModel], ...] = (
    records.FileRecord,
    records.FileList,
    records.FileProgress,
    records.BatchLog,
    records.ErrorBody,
)


def export(directory: Path, asyncapi: dict[str, Any]) -> list[Path]:
    """Write `<Model>.schema.json` per model and the `asyncapi` document; return the paths.

    The AsyncAPI document is FastStream's, made from the services' subscribers and
    publishers (imuflow/channels.py); it is passed in, so contracts/ imports no service.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for model in (*events.EVENT_MODELS, *RECORD_MODELS):
        path = directory / f"{model.__name__}.schema.json"
        path.write_text(json.dumps(model.model_json_schema(), indent=2) + "\n")
        written.append(path)
    path = directory / "asyncapi.json"
    path.write_text(json.dumps(asyncapi, indent=2) + "\n")
    written.append(path)
    return written
