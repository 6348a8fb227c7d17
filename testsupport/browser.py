"""What the browser tests share: Debian's Chromium driven by Playwright (never a downloaded browser),
the flags it needs on a machine with no outside network, where screenshots go, and the mark that skips
a browser test on a developer's machine without Chromium but fails it in CI, where it must run."""

import os
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-output" / "browser"
PASSWORD = "a-long-test-password"  # noqa: S105 - a throwaway user in the test database

browser_test = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists() and not os.environ.get("CI"),
        reason=f"{CHROMIUM} is missing: `make install` (scripts/install.sh) installs Debian's chromium",
    ),
]


@contextmanager
def chromium_page(width: int, height: int):
    """A fresh page in a headless Chromium of `width` x `height`; Playwright is imported here so that
    collecting the suite does not need it where the browser tests are skipped."""
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(15_000)
            yield page
        finally:
            browser.close()
