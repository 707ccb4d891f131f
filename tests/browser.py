"""A real headless Chromium for the browser tests: Debian's `chromium` driven through Debian's `chromedriver`
by Selenium, with no download at test time (both paths given, so Selenium Manager never runs).

The services of a test run in-process on the test's event loop, so every WebDriver call here is blocking work
sent to a thread (`await page.goto(...)`): the loop keeps serving the gateway while the browser waits on it.

    # `browser` is a fixture for every test (tests/conftest.py loads this module as a plugin); one Chromium
    # serves the whole run.
    async def test_x(browser: Browser) -> None:
        page = await browser.page()          # a fresh window (own cookies and storage), closed at the end
        await page.goto(url)
        await page.wait_js("return document.querySelector('#out').textContent.includes('Hi')")
        await page.screenshot("docs-page")   # .artifacts/screenshots/docs-page.png (git-ignored)

A missing chromium or chromedriver skips the test with the reason, except in CI (`CI=true`), where it fails:
`.ci/install-tools` installs both.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

#: Where screenshots go: a test artifact, never committed (.gitignore).
SCREENSHOTS = Path(__file__).resolve().parent.parent / ".artifacts" / "screenshots"
#: Chromium's flags for a quiet, reproducible headless run that reaches only what the page asks for.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-features=Translate,MediaRouter,OptimizationHints",
    "--window-size=1280,900",
)
#: The default wait of `wait_js` / `wait_text`.
WAIT_S = 15.0


def _executables() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    reason = "headless Chromium needs Debian's chromium and chromium-driver (.ci/install-tools installs them)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


class Page:
    """One browser window; every method is awaitable and runs the WebDriver call off the event loop."""

    def __init__(self, driver: Any, handle: str, lock: asyncio.Lock) -> None:
        self._driver = driver
        self.handle = handle
        self._lock = lock

    async def _call(self, fn: Any, *args: Any) -> Any:
        # One WebDriver session serves every page: calls are serialised and aimed at this page's window.
        async with self._lock:

            def run() -> Any:
                if self._driver.current_window_handle != self.handle:
                    self._driver.switch_to.window(self.handle)
                return fn(*args)

            return await asyncio.to_thread(run)

    async def goto(self, url: str) -> None:
        await self._call(self._driver.get, url)

    async def js(self, script: str, *args: Any) -> Any:
        """Run `script` (a function body; `arguments[i]` are `args`) and return its value."""
        return await self._call(self._driver.execute_script, script, *args)

    async def wait_js(self, script: str, *args: Any, timeout: float = WAIT_S) -> Any:
        """Poll `script` until it returns something truthy; fails with the page's text after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.js(script, *args)
            if value:
                return value
            if time.monotonic() > deadline:
                body = await self.js("return document.body ? document.body.innerText : ''")
                logs = await self.console()
                raise AssertionError(
                    f"timed out waiting for: {script}\npage text:\n{body[:3000]}\nconsole: {logs}"
                )
            await asyncio.sleep(0.05)

    async def wait_text(self, selector: str, text: str, timeout: float = WAIT_S) -> str:
        """Wait until the element `selector` contains `text`; returns the element's whole text."""
        return await self.wait_js(
            "const e = document.querySelector(arguments[0]);"
            "return e && e.textContent.includes(arguments[1]) ? e.textContent : null;",
            selector,
            text,
            timeout=timeout,
        )

    async def click(self, selector: str) -> None:
        await self.wait_js("return !!document.querySelector(arguments[0])", selector)
        await self.js("document.querySelector(arguments[0]).click()", selector)

    async def fill(self, selector: str, value: str) -> None:
        """Set an input's value as typing would (the `input` and `change` events fire)."""
        await self.wait_js("return !!document.querySelector(arguments[0])", selector)
        await self.js(
            "const e = document.querySelector(arguments[0]); e.focus(); e.value = arguments[1];"
            "e.dispatchEvent(new Event('input', {bubbles: true}));"
            "e.dispatchEvent(new Event('change', {bubbles: true}));",
            selector,
            value,
        )

    async def text(self, selector: str) -> str:
        return await self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;", selector
        )

    async def screenshot(self, name: str) -> Path:
        """The window as `.artifacts/screenshots/NAME.png`; with `README_SHOTS=DIR` set, also as a small JPEG
        `DIR/NAME.jpg` (how the README's pictures are made: `README_SHOTS=docs/images make test`)."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        await self._call(self._driver.save_screenshot, str(path))
        readme = os.environ.get("README_SHOTS")
        if readme:
            shot = await self._call(
                self._driver.execute_cdp_cmd, "Page.captureScreenshot", {"format": "jpeg", "quality": 60}
            )
            await asyncio.to_thread(_write, Path(readme) / f"{name}.jpg", base64.b64decode(shot["data"]))
        return path

    async def console(self) -> list[str]:
        """The page's console messages since the last call (errors included)."""
        try:
            entries = await self._call(self._driver.get_log, "browser")
        except Exception:  # a driver without the log endpoint has nothing to tell
            return []
        return [f"{e.get('level')}: {e.get('message')}" for e in entries]


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


class Browser:
    """One Chromium for the session; `page()` opens a fresh window for a test."""

    def __init__(self, driver: Any) -> None:
        self._driver = driver
        self._lock = asyncio.Lock()
        self._first = driver.current_window_handle
        self._first_used = False

    async def page(self) -> Page:
        async with self._lock:

            def open_window() -> str:
                if not self._first_used:
                    self._first_used = True
                    self._driver.switch_to.window(self._first)
                    return self._first
                self._driver.switch_to.new_window("window")
                return self._driver.current_window_handle

            handle = await asyncio.to_thread(open_window)
        return Page(self._driver, handle, self._lock)

    async def reset(self) -> None:
        """Close every window but one and clear its storage, so the next test starts clean."""
        async with self._lock:

            def clean() -> None:
                handles = self._driver.window_handles
                for handle in handles[1:]:
                    self._driver.switch_to.window(handle)
                    self._driver.close()
                self._driver.switch_to.window(handles[0])
                self._driver.get("about:blank")
                self._driver.delete_all_cookies()
                self._first = handles[0]
                self._first_used = False

            await asyncio.to_thread(clean)


def _start_driver() -> tuple[Any, Path]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = _executables()
    profile = Path(tempfile.mkdtemp(prefix="kimi-gw-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver, profile


@pytest.fixture(scope="session")
def _chromium() -> Iterator[Any]:
    driver, profile = _start_driver()
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest_asyncio.fixture
async def browser(_chromium: Any) -> AsyncIterator[Browser]:
    """The session's Chromium, cleaned for this test (one window, no cookies, blank page)."""
    handle = Browser(_chromium)
    await handle.reset()
    yield handle
    await handle.reset()
