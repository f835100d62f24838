"""`imuflow ingest`: the upload API."""

from __future__ import annotations

from imuflow.runner import serve_app
from imuflow.settings import Settings
from services.ingest.app import create_app


def main(settings: Settings) -> None:
    """Process entry point."""
    settings.require_servers()
    serve_app("ingest", create_app(settings), settings, settings.ingest_port)
