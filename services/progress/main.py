"""`imuflow progress`: the progress service."""

from __future__ import annotations

from imuflow.runner import serve_app
from imuflow.settings import Settings
from services.progress.app import create_app


def main(settings: Settings) -> None:
    """Process entry point."""
    settings.require_servers()
    serve_app("progress", create_app(settings), settings, settings.progress_port)
