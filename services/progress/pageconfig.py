"""`GET /api/config`: what the web page needs to know before sign-in (the ingest URL)."""

from __future__ import annotations

from fastapi import APIRouter

from contracts.records import PageConfig
from imuflow.web import AppSettings

router = APIRouter(prefix="/api", tags=["page"])


@router.get("/config", response_model=PageConfig)
async def page_config(settings: AppSettings) -> PageConfig:
    """Public page configuration: where uploads go (the page posts straight to ingest)."""
    return PageConfig(ingest_url=settings.ingest_base)
