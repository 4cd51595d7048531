"""The report as a browser shows it: headless Chromium loads index.html from disk.

Chromium is driven over the DevTools protocol (its ``--remote-debugging-port``) with a small
client on `websockets`, so the checks run on the page exactly as shipped: every <img> has
``naturalWidth > 0``, nothing was logged as an error, no request left the machine, and a
full-page screenshot is saved. Debian's ``chromium`` package provides the browser; .ci/run
installs it when missing.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from reports.html import build_report
from reports.load import load_run
from tests.report_runs import edited_copy

pytestmark = pytest.mark.browser

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--remote-debugging-port=0", "--window-size=1280,1000",
]
START_TIMEOUT_S = 60   # chromium start-up on the loaded 2-core machine takes a few seconds
LOAD_TIMEOUT_S = 60
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium is not installed here; .ci/run installs it (apt-get install -y chromium)")


class DevTools:
    """Just enough of the Chrome DevTools Protocol: commands with replies, and buffered events."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._id = 0

    def _recv(self, timeout: float) -> dict[str, Any]:
        message = json.loads(self.ws.recv(timeout=timeout))
        if "method" in message:
            self.events.append(message)
        return message

    def send(self, method: str, params: dict | None = None, *, session: str | None = None,
             timeout: float = LOAD_TIMEOUT_S) -> dict[str, Any]:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            reply = self._recv(max(0.1, deadline - time.monotonic()))
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def wait_for(self, method: str, *, timeout: float = LOAD_TIMEOUT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event["method"] == method:
                    return event
            self._recv(max(0.1, deadline - time.monotonic()))


@pytest.fixture
def browser(tmp_path):
    """A headless Chromium; yields a DevTools client connected to the browser target."""
    profile = tmp_path / "chromium-profile"
    proc = subprocess.Popen([_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # With port 0, Chromium picks a free port and writes "port\n/devtools/browser/<id>" here.
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + START_TIMEOUT_S
    while not (port_file.is_file() and len(port_file.read_text().splitlines()) >= 2):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            err = proc.stderr.read().decode(errors="replace")[-2000:]
            pytest.fail(f"chromium did not start its DevTools endpoint (exit {proc.poll()}): {err}")
        time.sleep(0.1)
    port, path = port_file.read_text().splitlines()[:2]
    from websockets.sync.client import connect

    try:
        with connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=START_TIMEOUT_S) as ws:
            yield DevTools(ws)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stderr.close()


def open_page(browser, index: Path) -> str:
    """A new tab with the console, log and network watched, on ``index``; returns its session."""
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        browser.send(f"{domain}.enable", session=session)
    browser.send("Page.navigate", {"url": index.as_uri()}, session=session)
    browser.wait_for("Page.loadEventFired")
    return session


def screenshot_and_check_offline(browser, session, tmp_path: Path, name: str) -> Path:
    """Save a full-page screenshot, then assert no console error, no failed load, and that every
    request went to file:// (offline: the page and its images come from disk). Returns the PNG."""
    shot = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                        session=session)["data"]
    screenshot = tmp_path / f"{name}-screenshot.png"
    screenshot.write_bytes(base64.b64decode(shot))
    assert screenshot.read_bytes()[:8] == PNG_MAGIC and screenshot.stat().st_size > 10_000
    print(f"screenshot: {screenshot}")

    events = browser.events
    errors = [e["params"] for e in events
              if (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
              or e["method"] == "Runtime.exceptionThrown"
              or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
              or e["method"] == "Network.loadingFailed"]
    assert not errors, f"console errors: {errors}"
    urls = [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]
    assert urls and all(u.startswith("file://") for u in urls), urls
    return screenshot


# What must read without scrolling sideways: the headlines and every comparison table.
WHOLE_TABLES = "table.fit"


def test_report_renders_in_chromium_with_every_image_and_no_errors(browser, tmp_path, shared_tiny_run):
    # Two runs, so the page has its comparison section too: the real run and a copy of it
    # saved as a second run (identical code, identical numbers).
    second = edited_copy(shared_tiny_run.path, tmp_path / "runs" / "0002_copy.json",
                         lambda doc: doc.update(datetime="2026-01-02T00:00:00+00:00"))
    runs = [load_run(shared_tiny_run.path), load_run(second)]
    out = tmp_path / "report"
    out.mkdir()
    index = build_report(runs, out_dir=out)

    session = open_page(browser, index)

    images = browser.send("Runtime.evaluate", {
        "expression": "JSON.stringify(Array.from(document.images, i => "
                      "({src: i.getAttribute('src'), complete: i.complete, width: i.naturalWidth})))",
        "returnByValue": True,
    }, session=session)["result"]["value"]
    images = json.loads(images)
    assert len(images) == len(list(out.glob("*.png"))) >= 1
    not_loaded = [i for i in images if not (i["complete"] and i["width"] > 0)]
    assert not not_loaded, f"images that did not load: {not_loaded}"

    title = browser.send("Runtime.evaluate", {"expression": "document.title", "returnByValue": True},
                         session=session)["result"]["value"]
    assert title == "AlexNet benchmark report"

    # The headline and the comparison read whole in a 1280 px window: no table wider than the
    # page's column, and the page itself does not scroll sideways.
    widths = json.loads(browser.send("Runtime.evaluate", {
        "expression": "JSON.stringify({page: [document.documentElement.scrollWidth, window.innerWidth], "
                      f"tables: Array.from(document.querySelectorAll({WHOLE_TABLES!r}), t => "
                      "[t.scrollWidth, t.parentElement.clientWidth, t.rows.length])})",
        "returnByValue": True,
    }, session=session)["result"]["value"])
    assert widths["page"][0] <= widths["page"][1], widths
    assert len(widths["tables"]) == 2, widths  # the headlines and the one comparison
    assert all(w <= room and rows >= 2 for w, room, rows in widths["tables"]), widths

    screenshot_and_check_offline(browser, session, tmp_path, "report")
