"""The HTML report in headless Chromium (Debian's `chromium` package): it loads with no console error and no
network request, its tables sort on a click, it fits a phone's width, it prints, and it gives a screenshot.

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe: commands go in on fd 3, replies
and events come out on fd 4, as NUL-separated JSON), so the test needs only the standard library. Pages with a
broken script, a console error or an external request show that the checks do catch them.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from report_fixtures import write_sweep

from pdd.cli import main

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--remote-debugging-pipe"]
LOCAL_URLS = ("file:", "data:", "about:")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (apt-get install chromium)")


def exception_text(params: dict[str, Any]) -> str:
    details = params["exceptionDetails"]
    return "uncaught: " + details.get("exception", {}).get("description", details["text"])


def console_text(params: dict[str, Any]) -> str | None:
    if params["type"] not in ("error", "assert"):
        return None
    return "console." + params["type"] + ": " + " ".join(str(arg.get("value", arg.get("description")))
                                                         for arg in params["args"])


# DevTools events that mean something is wrong with a page, and how each is put in words (None: nothing wrong).
PROBLEMS: dict[str, Callable[[dict[str, Any]], str | None]] = {
    "Runtime.exceptionThrown": exception_text,
    "Runtime.consoleAPICalled": console_text,
    "Log.entryAdded": lambda params: f"log: {params['entry']['text']}" if params["entry"]["level"] == "error" else None,
    "Network.requestWillBeSent": lambda params: (None if params["request"]["url"].startswith(LOCAL_URLS)
                                                 else f"network request: {params['request']['url']}"),
}


class Chromium:
    """One headless Chromium process, started here and ended here by its process id."""

    def __init__(self, profile: Path, log: Path) -> None:
        to_chromium, self.writer = os.pipe()
        self.reader, from_chromium = os.pipe()
        # Copies at fds >= 10 so that placing one pipe end at fd 3 or 4 cannot overwrite the other.
        inbound, outbound = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_chromium, from_chromium))
        log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0), (os.POSIX_SPAWN_DUP2, log_fd, 1),
                   (os.POSIX_SPAWN_DUP2, log_fd, 2), (os.POSIX_SPAWN_DUP2, inbound, 3),
                   (os.POSIX_SPAWN_DUP2, outbound, 4)]
        # setsid: Chromium's helper processes share its process group, so teardown can end them by that id.
        self.pid = os.posix_spawn(CHROMIUM, [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                  os.environ, file_actions=actions, setsid=True)
        for fd in (to_chromium, from_chromium, inbound, outbound, log_fd):
            os.close(fd)
        self.log = log
        self.buffer = b""
        self.last_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict[str, Any]:
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params or {}}
        os.write(self.writer, json.dumps(message | ({"sessionId": session} if session else {})).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while (reply := self.receive(deadline)).get("id") != self.last_id:
            self.events.append(reply)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def wait_for(self, event: str, session: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event and e.get("sessionId") == session for e in self.events):
            self.events.append(self.receive(deadline))

    def receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.reader], [], [], remaining)[0]:
                raise TimeoutError(f"no reply from Chromium; its log:\n{self.log.read_text()[-2000:]}")
            chunk = os.read(self.reader, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium closed the DevTools pipe; its log:\n{self.log.read_text()[-2000:]}")
            self.buffer += chunk
        message, _, self.buffer = self.buffer.partition(b"\0")
        return json.loads(message)

    def open(self, url: str, width: int = 1280, height: int = 900, mobile: bool = False) -> Page:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=session)
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}, session)
        self.call("Page.navigate", {"url": url}, session)
        self.wait_for("Page.loadEventFired", session)
        return Page(self, session)

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (OSError, RuntimeError, TimeoutError):
            pass  # it may be gone already; the kill below ends it either way
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and os.waitpid(self.pid, os.WNOHANG) == (0, 0):
            time.sleep(0.1)
        try:
            os.killpg(self.pid, signal.SIGKILL)  # the group whose leader we started: helpers left behind, if any
        except ProcessLookupError:
            pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass  # already reaped above
        os.close(self.reader)
        os.close(self.writer)


class Page:
    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser = browser
        self.session = session

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.call(method, params, self.session)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def problems(self) -> list[str]:
        """Uncaught exceptions, console errors, error log entries and requests that leave the machine."""
        self.evaluate("0")  # a round trip: whatever the page emitted before it has arrived
        found = (PROBLEMS[e["method"]](e["params"]) for e in self.browser.events
                 if e.get("sessionId") == self.session and e.get("method") in PROBLEMS)
        return [problem for problem in found if problem]

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.write_bytes(base64.b64decode(data))
        return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    root = tmp_path_factory.mktemp("chromium")
    chromium = Chromium(root / "profile", root / "chromium.log")
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture(scope="module")
def report_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("report")
    results = write_sweep(root / "results" / "fixture-a")
    assert main(["report", str(results), "--format", "html", "-o", str(root / "out")]) == 0
    return (root / "out" / "report.html").as_uri()


def test_report_loads_without_errors_and_gives_a_screenshot(browser, report_url, tmp_path):
    page = browser.open(report_url)
    assert page.problems() == []
    shot = page.screenshot(tmp_path / "desktop.png")
    with Image.open(shot) as image:
        assert image.width > 1200 and image.height > 2000  # the whole page (less a scroll bar): tables, figures
        assert len(image.convert("RGB").getcolors(1 << 20)) > 1000  # figures drawn, not a blank page
    # main, configs, trials, paired, gain
    assert page.evaluate("document.querySelectorAll('table.sortable').length") == 5
    assert page.evaluate("[...document.images].every(img => img.complete && img.naturalWidth > 400)")


def test_tables_sort_by_clicking_a_column_header(browser, report_url):
    page = browser.open(report_url)
    column = """(name) => {
        const table = document.getElementById("s0-main");
        const index = [...table.tHead.rows[0].cells].findIndex(th => th.textContent.trim() === name);
        table.tHead.rows[0].cells[index].querySelector("button").click();
        return [...table.tBodies[0].rows].map(row => [row.cells[1].textContent, row.cells[index].dataset.sort]);
    }"""
    ascending = page.evaluate(f"({column})('DM')")
    descending = page.evaluate(f"({column})('DM')")
    assert ascending[:2] == [["10", "22.0"], ["50", "24.0"]] and [key for _, key in ascending[2:]] == ["", ""]
    assert descending[:2] == [["50", "24.0"], ["10", "22.0"]] and [key for _, key in descending[2:]] == ["", ""]
    assert page.evaluate("document.querySelector('#s0-main th[aria-sort]').textContent.trim()") == "DM"
    assert page.problems() == []


def test_report_fits_a_phone_with_tables_scrolling_sideways(browser, report_url, tmp_path):
    page = browser.open(report_url, width=390, height=844, mobile=True)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert page.evaluate("[...document.querySelectorAll('.scroll')].some(box => box.scrollWidth > box.clientWidth)")
    with Image.open(page.screenshot(tmp_path / "phone.png")) as image:
        assert image.width == 390
    assert page.problems() == []


def test_report_prints(browser, report_url):
    page = browser.open(report_url)
    page.call("Emulation.setEmulatedMedia", {"media": "print"})
    assert page.evaluate("getComputedStyle(document.querySelector('.scroll')).overflowX") == "visible"
    pdf = base64.b64decode(page.call("Page.printToPDF")["data"])
    assert pdf.startswith(b"%PDF") and len(pdf) > 50_000


@pytest.mark.parametrize("body, expected", [
    ("<script>undefinedFunction();</script>", "uncaught: ReferenceError: undefinedFunction is not defined"),
    ("<script>function (</script>", "uncaught: SyntaxError"),
    ("<script>console.error('broken on purpose')</script>", "console.error: broken on purpose"),
    ("<img src='http://192.0.2.1/tracker.png' alt=''>", "network request: http://192.0.2.1/tracker.png"),
])
def test_the_checks_catch_a_broken_page(browser, tmp_path, body, expected):
    page_file = tmp_path / "broken.html"
    page_file.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>{body}</body></html>")
    problems = browser.open(page_file.as_uri()).problems()
    assert any(problem.startswith(expected) for problem in problems), problems
