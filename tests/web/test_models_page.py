"""The models page in Chromium: an administrator sees the catalogue as `rodeoai models list`
shows it (in use, pulled, half-downloaded, not pulled) with the command for each; anyone
else is refused. The files are written here, since the hub cannot be reached."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server.llm import catalog
from server.main import create_app
from tests.conftest import settings_for
from tests.helpers import PASSWORD
from tests.servers import copy_data, serving
from tests.web.conftest import DESKTOP, PHONE, Browse, Site, serious_violations
from tests.web.test_admin_page import sign_in

pytestmark = pytest.mark.one_pass  # see tests/web/conftest.py

PULLED, PARTIAL = catalog.CATALOG[0], catalog.CATALOG[1]


@pytest.fixture(scope="module")
def site(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A server whose models folder holds one pulled model and one unfinished download."""
    root = tmp_path_factory.mktemp("models-page")
    models = root / "models"
    models.mkdir()
    (models / PULLED.filename).write_bytes(catalog.GGUF_MAGIC + bytes(2_000_000))
    (models / f"{PARTIAL.filename}.0123abcd.part").write_bytes(bytes(3_000_000))
    app = create_app(settings_for(copy_data(shared_data, root / "data"), models_dir=models))
    with serving(app) as url:
        yield Site(url, app.state.components)
    app.state.components.close()


@pytest.mark.parametrize("size", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_an_admin_sees_what_is_in_use_pulled_and_how_to_get_the_rest(
    browse: Browse, size: dict[str, int]
) -> None:
    browse.site.components.accounts.create_admin("models@example.com", PASSWORD)
    page, watch = browse.open("/sign-in", size=size)
    sign_in(page, "models@example.com")
    page.goto("/admin")
    page.get_by_role("navigation", name="Admin").get_by_role("link", name="Models").click()
    page.wait_for_url("**/admin/models")
    assert "This server runs bundled" in page.locator("#in-use").inner_text()

    def row(name: str) -> str:
        return str(page.locator(f'tr[data-model="{name}"]').inner_text())

    assert "in use" in row(catalog.BUNDLED)
    assert "pulled" in row(PULLED.name) and f"rodeoai models use {PULLED.name}" in row(PULLED.name)
    assert "2.00 GB" not in row(PULLED.name) and "0.00 GB" in row(PULLED.name)  # its real size
    assert "3 MB downloaded" in row(PARTIAL.name)
    assert f"rodeoai models pull {PARTIAL.name}" in row(PARTIAL.name)
    for entry in catalog.CATALOG[2:]:
        text = row(entry.name)
        assert "not pulled" in text and f"rodeoai models pull {entry.name}" in text
        assert f"~{entry.est_ram_gb} GB" in text and entry.licence in text
    assert page.locator("tr[data-model]").count() == len(catalog.CATALOG) + 1
    assert serious_violations(page) == []
    assert watch.errors == [] and watch.external == []
    browse.shot(page, "catalogue")


def test_the_models_page_is_for_administrators_only(browse: Browse) -> None:
    page, watch = browse.open("/admin/models")
    watch.allowed_statuses.add(403)  # the refusal below is the point
    page.wait_for_url("**/sign-in?next=/admin/models")
    browse.site.components.accounts.register(
        email="roper@example.com", password=PASSWORD, display_name="Roper", ip="127.0.0.1"
    )
    sign_in(page, "roper@example.com")
    page.goto("/admin/models")
    assert page.get_by_role("heading", name="Administrators only").is_visible()
    assert page.locator("#models").count() == 0
