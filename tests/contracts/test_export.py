"""`imuflow contracts export DIR` writes a JSON Schema per event and FastStream's AsyncAPI document."""

import json
from pathlib import Path

import pytest

from contracts import topics
from contracts.events import EVENT_MODELS
from imuflow import kafka
from imuflow.cli.contracts import export_contracts
from imuflow.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", kafka_topic_prefix="doc.")


def test_export_writes_valid_json_for_every_event(tmp_path: Path, settings: Settings) -> None:
    written = {p.name for p in export_contracts(tmp_path, settings)}
    for model in EVENT_MODELS:
        name = f"{model.__name__}.schema.json"
        assert name in written
        schema = json.loads((tmp_path / name).read_text())
        assert schema["properties"]["schema_version"]["const"] == 1


def test_asyncapi_lists_every_topic_with_its_messages(tmp_path: Path, settings: Settings) -> None:
    export_contracts(tmp_path, settings)
    doc = json.loads((tmp_path / "asyncapi.json").read_text())
    assert doc["asyncapi"] == "3.0.0"
    addresses = {channel["address"] for channel in doc["channels"].values()}
    assert addresses == {kafka.topic(settings, base) for base in topics.ALL}
    schemas = doc["components"]["schemas"]
    # Every event's schema is the contract model's own (pydantic, contracts/events.py).
    for model in EVENT_MODELS:
        assert schemas[model.__name__]["properties"] == model.model_json_schema()["properties"]
    # The progress consumer is FastStream's real subscriber: a receive operation on progress.v1.
    receives = [op for op in doc["operations"].values() if op["action"] == "receive"]
    assert [doc["channels"][op["channel"]["$ref"].split("/")[-1]]["address"] for op in receives] == [
        kafka.topic(settings, topics.PROGRESS)
    ]
    # The producer's publishers (what the relay and the parser send through): a send
    # operation on every topic, each the services' own publisher of that topic.
    sends = [op for op in doc["operations"].values() if op["action"] == "send"]
    sent_to = {doc["channels"][op["channel"]["$ref"].split("/")[-1]]["address"] for op in sends}
    assert len(sends) == len(topics.ALL)
    assert sent_to == set(kafka.producer(settings).publishers) == addresses
    files = doc["channels"][topics.FILES]["messages"]
    [message] = files.values()
    ref = message["$ref"].split("/")[-1]
    assert doc["components"]["messages"][ref]["payload"] == {"$ref": "#/components/schemas/FileQueued"}
