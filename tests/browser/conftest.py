"""Fixtures for browser tests: a real stack, Debian's Chromium driven by Playwright, screenshots.

Playwright only drives the browser: it is pointed at /usr/bin/chromium (installed by
scripts/bootstrap from Debian's packages) and never downloads one of its own.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, Playwright, sync_playwright

from omni_trace.stack import Stack
from omni_trace.stack.paths import REPO_ROOT
from omni_trace.traces.jaeger import JaegerClient
from tests.whole_stack.conftest import running_stack

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = REPO_ROOT / "var" / "test-artifacts" / "screenshots"


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("browser-stack"), secrets.token_urlsafe(32)) as s:
        yield s


@pytest.fixture(scope="package")
def jaeger(stack: Stack) -> Iterator[JaegerClient]:
    with JaegerClient(stack.info.jaeger_query_url) as client:
        yield client


@pytest.fixture
def playwright() -> Iterator[Playwright]:
    # Per test: the sync API keeps its own event loop, which must not outlive the browser
    # tests while the async stack tests run in the same process.
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/bootstrap (apt-get install chromium)")
    with sync_playwright() as p:
        yield p


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    if report.when == "call":  # type: ignore[attr-defined]
        item.stash[_FAILED] = report.failed  # type: ignore[attr-defined]
    return report


_FAILED = pytest.StashKey[bool]()


class Screenshots:
    """Saves numbered screenshots of a test under var/test-artifacts/screenshots/<test>/."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._count = 0

    def take(self, page: Page, name: str) -> Path:
        self._count += 1
        path = self.directory / f"{self._count:02d}-{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=path, full_page=True)
        print(f"screenshot: {path}")
        return path


@pytest.fixture
def screenshots(request: pytest.FixtureRequest) -> Screenshots:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    directory = SCREENSHOTS / name
    for old in directory.glob("*.png"):
        old.unlink()
    return Screenshots(directory)


@pytest.fixture
def page(
    playwright: Playwright,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    screenshots: Screenshots,
) -> Iterator[Page]:
    """A page in a fresh Chromium profile; a screenshot is saved if the test fails."""
    context = playwright.chromium.launch_persistent_context(
        tmp_path / "chromium-profile",
        executable_path=str(CHROMIUM),
        headless=True,
        args=CHROMIUM_ARGS,
        viewport={"width": 1280, "height": 800},
    )
    page = context.pages[0] if context.pages else context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.on("console", lambda msg: print(f"console {msg.type}: {msg.text}"))
    page.set_default_timeout(15_000)
    try:
        yield page
        if request.node.stash.get(_FAILED, False):
            screenshots.take(page, "failed")
        assert not errors, f"JavaScript errors on the page: {errors}"
    finally:
        context.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SCREENSHOTS.is_dir() and any(SCREENSHOTS.rglob("*.png")):
        terminalreporter.write_line(f"browser screenshots: {SCREENSHOTS}")
