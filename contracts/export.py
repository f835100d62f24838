"""Write the JSON Schema of every event and record, and an AsyncAPI document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from contracts import events, records, topics

RECORD_MODELS: tuple[type[BaseModel], ...] = (
    records.FileRecord,
    records.FileList,
    records.FileProgress,
    records.BatchLog,
    records.ErrorBody,
)


def _asyncapi() -> dict[str, Any]:
    schemas = {m.__name__: m.model_json_schema() for m in events.EVENT_MODELS}
    progress = [m.__name__ for m in events.EVENT_MODELS if m is not events.FileQueued]
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "imuflow events", "version": "1"},
        "channels": {
            topics.FILES: {
                "address": f"<prefix>{topics.FILES}",
                "messages": {"FileQueued": {"$ref": "#/components/messages/FileQueued"}},
            },
            topics.PROGRESS: {
                "address": f"<prefix>{topics.PROGRESS}",
                "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in progress},
            },
            topics.FILES_DEAD_LETTER: {
                "address": f"<prefix>{topics.FILES_DEAD_LETTER}",
                "messages": {"FileQueued": {"$ref": "#/components/messages/FileQueued"}},
            },
        },
        "components": {
            "messages": {name: {"payload": {"$ref": f"#/components/schemas/{name}"}} for name in schemas},
            "schemas": schemas,
        },
    }


def export(directory: Path) -> list[Path]:
    """Write `<Model>.schema.json` per model and `asyncapi.json`; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for model in (*events.EVENT_MODELS, *RECORD_MODELS):
        path = directory / f"{model.__name__}.schema.json"
        path.write_text(json.dumps(model.model_json_schema(), indent=2) + "\n")
        written.append(path)
    path = directory / "asyncapi.json"
    path.write_text(json.dumps(_asyncapi(), indent=2) + "\n")
    written.append(path)
    return written
