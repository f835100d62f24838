"""Fixtures for the browser tests: Debian's chromium driven by Playwright, signed in via the page."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
PICTURES = Path(__file__).resolve().parents[2] / "docs" / "img"


def chromium_path() -> Path:
    """Debian's chromium (Playwright's own browser download is not used)."""
    found = CHROMIUM if CHROMIUM.is_file() else None
    if found is None and (other := shutil.which("chromium")):
        found = Path(other)
    if found is None:
        pytest.skip("chromium is not installed: apt-get install chromium")
    return found


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A headless chromium for one test."""
    executable = chromium_path()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(executable), args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh page (own cookie jar) in an en-US desktop-sized context."""
    context = await browser.new_context(locale="en-US", viewport={"width": 1100, "height": 900})
    try:
        yield await context.new_page()
    finally:
        await context.close()


async def screenshot(page: Page, name: str) -> None:
    """Save a full-page screenshot as a test artifact (test-artifacts/browser/NAME.png)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True, animations="disabled")


async def readme_picture(page: Page, name: str) -> None:
    """The first screen as `test-artifacts/browser/NAME.png`, and as `docs/img/NAME.png` (the
    README's picture) only when IMUFLOW_UPDATE_PICTURES=1: a test run leaves the checkout as it
    found it, and the pictures are renewed on purpose."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), animations="disabled")
    if os.environ.get("IMUFLOW_UPDATE_PICTURES") == "1":
        await page.screenshot(path=str(PICTURES / f"{name}.png"), animations="disabled")


async def sign_in(page: Page, progress_url: str, token: str) -> None:
    """Open the page and sign in through its form (Enter submits)."""
    await page.goto(progress_url)
    field = page.locator("#token")
    await expect(field).to_be_visible()
    await field.fill(token)
    await field.press("Enter")
    await expect(page.locator("#workspace")).to_be_visible()
    await expect(page.locator("#live-state")).to_have_text("Live")
