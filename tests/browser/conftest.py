"""Headless Chromium for the browser tests (Debian's ``chromium`` and ``chromium-driver``; .ci/run
installs them with apt-get). Without them the tests skip, except under ``CI``, where they fail.

The browser resolves no host name but 127.0.0.1 (``--host-resolver-rules``), so a page that asks the
web for a script, font or image fails visibly instead of quietly working on a connected machine; every
request is also read from Chrome's performance log and one to anywhere but loopback is a failure.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
LOCAL = ("http://127.0.0.1", "data:", "about:", "blob:", "chrome-error:", "devtools:", "ws://127.0.0.1")


def need_browser() -> None:
    """Skip (fail under CI) when Chromium, its driver or selenium is missing, saying how to install them."""
    missing = []
    if not (CHROMIUM and CHROMEDRIVER):
        missing.append("Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    if missing:
        msg = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(msg + "; CI must run them (.ci/run installs both)")
        pytest.skip(msg)


@dataclass
class Report:
    """What one page load did: console errors, failed or non-loopback requests, images and tables."""
    url: str
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    outside_requests: list[str] = field(default_factory=list)
    images: int = 0
    broken_images: list[str] = field(default_factory=list)
    tables: int = 0

    def problems(self, figures: int | None = None, tables: int | None = None) -> list[str]:
        out = [f"console error: {e}" for e in self.console_errors]
        out += [f"failed request: {r}" for r in self.failed_requests]
        out += [f"request outside loopback: {r}" for r in self.outside_requests]
        out += [f"figure did not load (naturalWidth 0): {s}" for s in self.broken_images]
        if figures is not None and self.images < figures:
            out.append(f"{self.images} figures on the page, {figures} in the notebook")
        if tables is not None and self.tables < tables:
            out.append(f"{self.tables} tables on the page, {tables} in the notebook")
        return out


class Browser:
    """A headless Chromium session with the page checks of the browser tests."""

    def __init__(self) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,1600", "--no-first-run", "--no-default-browser-check",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-extensions", "--no-proxy-server",
                    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
            opts.add_argument(arg)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        # an explicit driver path: selenium never tries to download one (Selenium Manager)
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        self.driver.set_page_load_timeout(60)
        self.driver.execute_cdp_cmd("Network.enable", {})
        self.driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})   # every load is fresh

    def quit(self) -> None:
        with contextlib.suppress(Exception):
            self.driver.quit()

    def logs(self, report: Report) -> None:
        """Move the console and network logs gathered since the last call into ``report``."""
        for e in self.driver.get_log("browser"):
            if e.get("level") == "SEVERE":
                report.console_errors.append(e.get("message", ""))
        urls: dict[str, str] = {}
        for entry in self.driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            params = msg.get("params", {})
            if msg.get("method") == "Network.requestWillBeSent":
                url = params.get("request", {}).get("url", "")
                urls[params.get("requestId")] = url
                if not url.startswith(LOCAL):
                    report.outside_requests.append(url)
            elif msg.get("method") == "Network.loadingFailed" and not params.get("canceled"):
                report.failed_requests.append(f"{urls.get(params.get('requestId'), '?')} ({params.get('errorText')})")
            elif msg.get("method") == "Network.responseReceived":
                resp = params.get("response", {})
                if resp.get("status", 200) >= 400:
                    report.failed_requests.append(f"{resp.get('url')} (HTTP {resp.get('status')})")

    def open(self, url: str, timeout: float = 30) -> Report:
        """Load ``url``, wait for the document and its images, and report what happened."""
        self.leave()
        self.driver.get(url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.driver.execute_script(
                "return document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)"):
            time.sleep(0.1)
        report = Report(url)
        images = self.driver.execute_script(
            "return Array.from(document.images).map(i => [i.naturalWidth, i.getAttribute('src') || ''])")
        report.images = len(images)
        report.broken_images = [src[:120] for w, src in images if not w]
        report.tables = self.driver.execute_script("return document.querySelectorAll('table').length")
        self.logs(report)
        return report

    def leave(self) -> None:
        """Go to about:blank and drop what earlier pages left in the logs (an old page's errors while it unloads,
        e.g. JupyterLab reconnecting to a server that has stopped, are not the next page's)."""
        self.driver.get("about:blank")
        self.logs(Report("about:blank"))

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    need_browser()
    b = Browser()
    try:
        yield b
    finally:
        b.quit()


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve ``folder`` over HTTP on 127.0.0.1 (a free port) for the block; yields the base URL."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def served():
    """``served(folder)``: a context manager serving ``folder`` on loopback."""
    return serve
