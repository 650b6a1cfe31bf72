"""The real-browser harness shared by tests/test_browser.py and the dashboard benchmarks.

A Streamlit server on a free port (headless, no file watcher; started and stopped by its own PID only),
Debian's chromium driven by Playwright (never `playwright install`), and the check that a rendered page
shows no exception, error box or dialog.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (apt-get install -y chromium)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ERROR_SELECTORS = {
    "exception": '[data-testid="stException"]',
    "error box": '[data-testid="stAlertContentError"]',
    "dialog": '[role="dialog"]',
    "download error": '[data-testid="stDownloadButtonError"]',
}


class HarnessError(RuntimeError):
    """The server or the browser could not be brought up."""


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StreamlitServer:
    """`python -m streamlit run SCRIPT` on a free port of 127.0.0.1; its output goes to a log file.

    Use as a context manager, or call `wait_healthy()` and then `stop()`. It starts with CHTN_WARM_UP=0 unless
    `warm_up_umap`: the 15-40 s of CPU its start-up would spend compiling umap-learn go to the tests running beside
    it (a page that needs UMAP compiles it then; tests/test_app.py checks the warm-up itself).
    """

    def __init__(
        self,
        script: Path,
        cwd: Path,
        env: dict[str, str] | None = None,
        log: Path | None = None,
        warm_up: bool = False,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log or Path(tempfile.mkstemp(prefix="streamlit-", suffix=".log")[1])
        self.log = open(self.log_path, "ab")  # closed by stop()
        self.t_spawn = time.perf_counter()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                str(script),
                "--server.headless",
                "true",
                "--server.port",
                str(self.port),
                "--server.address",
                "127.0.0.1",
                "--server.fileWatcherType",
                "none",
                "--browser.gatherUsageStats",
                "false",
            ],
            cwd=cwd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**(os.environ if env is None else env), "CHTN_WARM_UP": "1" if warm_up else "0"},
        )

    def wait_healthy(self, timeout: float = 120.0) -> float:
        """Seconds from spawn to `/_stcore/health` answering "ok"; `HarnessError` if it exits or never answers."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise HarnessError(f"streamlit exited with {self.process.returncode}; log: {self.log_path}")
            try:
                if urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=1).read() == b"ok":
                    return time.perf_counter() - self.t_spawn
            except OSError:
                time.sleep(0.05)
        raise HarnessError(f"streamlit did not become healthy in {timeout:.0f} s; log: {self.log_path}")

    def stop(self) -> None:
        """Terminate this server's process (kill it if it does not exit in 30 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self.log.close()

    def __enter__(self) -> StreamlitServer:
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def require_chromium() -> None:
    """At the top of a browser test module: skip it without Debian chromium, except in CI (which must have it)."""
    import pytest

    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            raise RuntimeError("CI must install Debian chromium for the browser tests (.ci/run does).")
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium)", allow_module_level=True)


def launch_chromium(playwright: Playwright) -> Browser:
    """Debian's headless chromium through Playwright, with the flags every harness user shares."""
    if not CHROMIUM.exists():
        raise HarnessError(f"chromium not found at {CHROMIUM} (apt-get install -y chromium)")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)


def page_problems(tab: Page) -> list[str]:
    """What is wrong with a rendered page: each exception, error box or dialog it shows, with its text."""
    problems = []
    for name, selector in ERROR_SELECTORS.items():
        found = tab.locator(selector)
        if found.count():
            problems.append(f"{name}: {found.all_inner_texts()}")
    return problems


def assert_clean(tab: Page) -> None:
    """Fail (AssertionError) when the page shows an exception, an error box or a dialog."""
    problems = page_problems(tab)
    assert not problems, "; ".join(problems)
