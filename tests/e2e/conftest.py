"""Tests against real third-party clients. The Open WebUI test needs its own venv of a few GB
and minutes to set up, so a plain `pytest` (and CI) skips it: `make e2e-openwebui` runs it,
or `pytest tests/e2e/test_openwebui.py --openwebui`."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("rodeoai clients")
    group.addoption(
        "--openwebui",
        action="store_true",
        help="run the tests marked `openwebui` (the real Open WebUI from PyPI, cached venv)",
    )
    group.addoption(
        "--save-client-fixtures",
        action="store_true",
        help="with --openwebui: write the request bodies Open WebUI sent to tests/data/clients",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--openwebui"):
        return
    skip = pytest.mark.skip(
        reason="Open WebUI end-to-end: run with --openwebui (make e2e-openwebui)"
    )
    for item in items:
        if item.get_closest_marker("openwebui"):
            item.add_marker(skip)
