"""Each route's OpenAPI document declares the refusals the isolation test proves it sends."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI

from imuflow.settings import Settings
from services.ingest.app import create_app as ingest_app
from services.progress.app import create_app as progress_app
from tests.security.helpers import OPEN_ROUTES


def _operations(app: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    paths = app.openapi()["paths"]
    return [(method.upper(), path, op) for path, ops in paths.items() for method, op in ops.items()]


@pytest.mark.parametrize("build", [ingest_app, progress_app], ids=["ingest", "progress"])
def test_refusals_are_declared(build: Any) -> None:
    missing = []
    for method, path, operation in _operations(build(Settings())):
        declared = set(operation.get("responses", {}))
        wanted = set()
        if (method, path) not in OPEN_ROUTES:
            wanted.add("401")
        if path.startswith("/api/admin/"):
            wanted.add("403")
        if "{file_id}" in path:
            wanted.add("404")
        body = operation.get("requestBody", {}).get("content", {})
        if operation.get("parameters") or "application/json" in body:
            wanted.add("422")  # a parameter or a JSON field that fails validation
        if body:
            wanted.add("400")  # a body that cannot be parsed at all
        if wanted - declared:
            missing.append(f"{method} {path}: declares {sorted(declared)}, lacks {sorted(wanted - declared)}")
    assert not missing, "\n".join(missing)
