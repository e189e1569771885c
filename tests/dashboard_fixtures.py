"""`pdd sweep dashboard` as the user starts it, a process of its own, and its HTTP API read as the page reads it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Dashboard:
    process: subprocess.Popen
    log: Path
    base: str  # http://127.0.0.1:PORT
    token: str

    def get(self, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, dict, bytes]:
        """(status, headers, body) of one request; no redirect followed, no cookie kept."""
        request = urllib.request.Request(self.base + path, headers=headers or {}, method=method)
        opener = urllib.request.build_opener(NoRedirect)
        try:
            with opener.open(request, timeout=30) as answer:
                return answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def studies(self) -> dict[str, Counter]:
        """Every study the API lists, by name, with its trials counted by state."""
        bearer = {"Authorization": f"Bearer {self.token}"}
        status, _, body = self.get("/api/studies", bearer)
        assert status == 200, body
        counts = {}
        for summary in json.loads(body)["study_summaries"]:
            status, _, detail = self.get(f"/api/studies/{summary['study_id']}", bearer)
            assert status == 200, detail
            counts[summary["study_name"]] = Counter(trial["state"] for trial in json.loads(detail)["trials"])
        return counts


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@contextmanager
def dashboard(directory: Path, port: int, env: dict[str, str] | None = None) -> Iterator[Dashboard]:
    """`python -m pdd sweep dashboard DIRECTORY --port PORT`, until it prints its URL; killed by PID if it is
    still running when the block ends (a test stops it itself to check that it stops)."""
    log = directory.parent / f"dashboard-{port}.log"
    # started as a shell starts a background job, with SIGINT ignored: stop() checks that Ctrl-C stops it anyway
    process = subprocess.Popen([sys.executable, "-m", "pdd", "sweep", "dashboard", str(directory), "--port",
                                str(port)], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline = time.monotonic() + 120
        while not (found := re.search(r"(http://127\.0\.0\.1:\d+)/\?token=([\w-]+)", log.read_text())):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield Dashboard(process, log, found[1], found[2])
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def stop(board: Dashboard) -> None:
    """Ctrl-C by PID: it says so, exits 0 and is gone, and its port is closed."""
    pid = board.process.pid
    os.kill(pid, signal.SIGINT)
    assert board.process.wait(timeout=30) == 0, board.log.read_text()
    assert "dashboard stopped" in board.log.read_text()
    with pytest.raises(ProcessLookupError):  # reaped by wait(), so not even a zombie is left
        os.kill(pid, 0)
    host, port = board.base.removeprefix("http://").split(":")
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect((host, int(port)))
