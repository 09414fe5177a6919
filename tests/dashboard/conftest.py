"""The dashboard in a real browser: Debian's chromium driven by Playwright, against a whole
platform (`bourse up` in-process: embedded nats-server, feed, exchange, market makers,
analytics, gateway) on free ports.

Every page collects its console errors and uncaught exceptions; a test fails on any it did
not declare it expects (`page_errors.expect(...)`, e.g. the 422 a bad order is answered).

Screenshots go to the test's temporary directory, or to docs/screenshots/ with
BOURSE_SCREENSHOTS=1 (how the ones in docs/dashboard.md are made).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from bourse.platform import Platform, PlatformConfig
from tests.gateway.conftest import exchange

CHROMIUM = "/usr/bin/chromium"
REPOSITORY = Path(__file__).resolve().parents[2]
__all__ = ["exchange"]  # the in-process exchange fixture, for test_relay.py

expect.set_options(timeout=20_000)  # a shared 2-core machine: the default 5 s is tight


def _chromium() -> str:
    found = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if found is None:
        pytest.skip("chromium is not installed: apt-get install chromium")
    return found


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    running = Platform(PlatformConfig(home=tmp_path / "home", api_port=0, feed_rate=400, seed=7))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = _chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class PageErrors:
    """Console errors and page exceptions, and the ones a test said it expects."""

    seen: list[str] = field(default_factory=list)
    expected: list[re.Pattern[str]] = field(default_factory=list)

    def expect(self, pattern: str) -> None:
        self.expected.append(re.compile(pattern))

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.seen.append(message.text)

    def unexpected(self) -> list[str]:
        return [e for e in self.seen if not any(p.search(e) for p in self.expected)]


@pytest.fixture
def page_errors() -> PageErrors:
    return PageErrors()


@pytest.fixture
async def page(
    platform: Platform, browser: Browser, page_errors: PageErrors
) -> AsyncIterator[Page]:
    """A 1280×800 page; closed before the platform stops (no reconnect noise)."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    opened = await context.new_page()
    opened.set_default_timeout(20_000)
    opened.on("console", page_errors.on_console)
    opened.on("pageerror", lambda error: page_errors.seen.append(f"uncaught: {error}"))
    yield opened
    await context.close()
    assert page_errors.unexpected() == [], "the page logged errors"


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    if os.environ.get("BOURSE_SCREENSHOTS"):
        target = REPOSITORY / "docs" / "screenshots"
    else:
        target = tmp_path / "screenshots"
    target.mkdir(parents=True, exist_ok=True)
    return target
