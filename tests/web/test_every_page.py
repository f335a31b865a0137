"""Every page at phone and desktop sizes: it opens without a console error or a request off
the box, axe-core finds nothing serious, and its screenshot is saved as a test artefact."""

from __future__ import annotations

import pytest

from tests.helpers import PASSWORD
from tests.web.conftest import DESKTOP, PHONE, Browse, serious_violations
from tests.web.test_admin_page import sign_in

pytestmark = pytest.mark.one_pass  # see tests/web/conftest.py

GUEST_PAGES = {"sign-in": "/sign-in", "sign-up": "/sign-up", "reset": "/reset-password"}
ADMIN_PAGES = {
    "chat": "/",
    "profile": "/profile",
    "billing": "/billing",
    "admin": "/admin",
    "analytics": "/admin/analytics",
    "experiments": "/admin/experiments",
    "models": "/admin/models",
    "review": "/review",
    "docs": "/docs",
}

# Swagger UI's own markup, vendored as it ships: it nests a copy button inside each
# operation's toggle (axe: nested-interactive). Our page around it is checked.
VENDORED = {"/docs": [".swagger-ui .opblock-tag-section"]}
# What sticks out past the screen's edge, outside the boxes that scroll.
WIDE = """w => [...document.querySelectorAll('body *')]
  .filter(e => !e.closest('.scroll') && e.getBoundingClientRect().right > w + 1)
  .slice(0, 5).map(e => e.tagName.toLowerCase() + '.' + e.className)"""


@pytest.mark.parametrize("size", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_every_page_opens_cleanly_and_is_photographed(browse: Browse, size: dict[str, int]) -> None:
    browse.site.components.accounts.create_admin("tour@example.com", PASSWORD)  # or promotes
    page, _ = browse.open("/", size=size)
    for label, path in GUEST_PAGES.items():
        page.goto(path)
        assert page.locator("main h1").count() == 1, path
        assert page.evaluate("document.documentElement.scrollWidth") <= size["width"], path
        assert serious_violations(page) == [], path
        browse.shot(page, label)
    sign_in(page, "tour@example.com")
    for label, path in ADMIN_PAGES.items():
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        page.wait_for_load_state("networkidle")
        # nothing wider than the screen: wide tables scroll inside their own box
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= size["width"], (
            f"{path} is {width} px wide: {page.evaluate(WIDE, size['width'])}"
        )
        found = serious_violations(page, exclude=VENDORED.get(path))
        assert found == [], f"{path}: " + " | ".join(found)
        browse.shot(page, label)
