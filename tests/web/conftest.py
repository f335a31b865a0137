"""Browser tests: Debian's Chromium, driven headless by PyPI's playwright, against a real
uvicorn server on a private copy of the ingested starter knowledge.

They run in the SQLite pass only (`one_pass`): the pages call the same services whose
database work the API tests check on both engines.

Every page a test opens is watched: a console error, an uncaught script error, or a request
to any host but the box fails the test. Each test leaves screenshots in build/screenshots."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from server.components import Components
from server.main import create_app
from tests.conftest import ROOT, settings_for
from tests.servers import copy_data, serving

SCREENSHOTS = ROOT / "build" / "screenshots"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 860}
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
_FAILED_LOAD = re.compile(r"status of (\d{3})")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail(
            "Chromium is not installed, so the web pages cannot be tested. Install it with "
            "`apt-get install chromium` (Debian or Ubuntu; `make setup-dev` does this), then "
            "run the tests again."
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Site:
    url: str
    components: Components


@pytest.fixture(scope="module")
def site(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One server per test file, on its own copy of the knowledge."""
    data = copy_data(shared_data, tmp_path_factory.mktemp("web") / "data")
    app = create_app(settings_for(data))
    with serving(app) as url:
        yield Site(url, app.state.components)
    app.state.components.close()


@dataclass
class Watch:
    """What a page did that it should not: console errors and requests off the box."""

    origin: str
    errors: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)
    allowed_statuses: set[int] = field(default_factory=set)
    allowed_errors: list[str] = field(default_factory=list)

    def console(self, message: Any) -> None:
        if message.type != "error":
            return
        text = message.text
        status = _FAILED_LOAD.search(text)
        if status and int(status.group(1)) in self.allowed_statuses:
            return
        if any(fragment in text for fragment in self.allowed_errors):
            return
        self.errors.append(text)

    def request(self, route: Any) -> None:
        url = route.request.url
        if url.startswith(self.origin) or url.startswith("data:"):
            route.continue_()
        else:
            self.external.append(url)
            route.abort()


class Browse:
    """Opens pages at a size, watched, and saves screenshots named after the test."""

    def __init__(self, browser: Any, site: Site, name: str) -> None:
        self.browser, self.site, self.name = browser, site, name
        self.contexts: list[Any] = []
        self.watches: list[Watch] = []

    def open(self, path: str = "/", *, size: dict[str, int] = DESKTOP) -> tuple[Any, Watch]:
        context = self.browser.new_context(viewport=size, base_url=self.site.url)
        self.contexts.append(context)
        watch = Watch(self.site.url)
        self.watches.append(watch)
        context.route("**/*", watch.request)
        page = context.new_page()
        page.on("console", watch.console)
        page.on("pageerror", lambda error: watch.errors.append(f"uncaught: {error}"))
        page.goto(path)
        return page, watch

    def shot(self, page: Any, label: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        width = page.viewport_size["width"] if page.viewport_size else 0
        path = SCREENSHOTS / f"{self.name}-{label}-{width}px.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def browse(browser: Any, site: Site, request: pytest.FixtureRequest) -> Iterator[Browse]:
    session = Browse(browser, site, request.node.name.removeprefix("test_"))
    try:
        yield session
        for watch in session.watches:
            assert not watch.errors, f"console errors: {watch.errors}"
            assert not watch.external, f"requests left the box: {watch.external}"
    finally:
        session.close()


def serious_violations(page: Any, *, exclude: list[str] | None = None) -> list[str]:
    """axe-core's serious and critical findings on the page as it is now, outside the
    `exclude` selectors."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page, context={"exclude": [[s] for s in exclude]} if exclude else None)
    return [
        f"{v['id']}: {v['help']} ({len(v['nodes'])} nodes: {v['nodes'][0]['target']})"
        for v in results.response["violations"]
        if v.get("impact") in {"serious", "critical"}
    ]
