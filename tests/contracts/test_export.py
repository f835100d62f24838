"""`imuflow contracts export DIR` writes a JSON Schema per event and an AsyncAPI document."""

import json
from pathlib import Path

from contracts.events import EVENT_MODELS
from contracts.export import export


def test_export_writes_valid_json_for_every_event(tmp_path: Path) -> None:
    written = {p.name for p in export(tmp_path)}
    for model in EVENT_MODELS:
        name = f"{model.__name__}.schema.json"
        assert name in written
        schema = json.loads((tmp_path / name).read_text())
        assert schema["properties"]["schema_version"]["const"] == 1
    asyncapi = json.loads((tmp_path / "asyncapi.json").read_text())
    assert set(asyncapi["channels"]) == {"files.v1", "progress.v1", "files.dlq.v1"}
