"""/docs and /redoc render their operations in a real Chromium with the network cut (only the server answers).

Playwright drives Debian's chromium (it cannot download its own here); without either the tests skip
and say why. Every request that does not go to the service on 127.0.0.1 is aborted, as on a machine
without internet; screenshots are kept in the test's temporary folder.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tools.loadtest.server import Server

CHROMIUM = os.environ.get("DIFFRES_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run", "--disable-sync"]


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Server, list[str]]]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[browser]'; `make test` does)")
    if not CHROMIUM:
        pytest.skip("no chromium (apt-get install chromium, as .ci/run does; or set DIFFRES_CHROMIUM)")
    folder = tmp_path_factory.mktemp("docs-offline")
    with Server({"DIFFRES_WARMUP": "false"}, folder / "server.log") as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        blocked: list[str] = []

        def only_the_service(route: Any) -> None:
            if route.request.url.startswith(server.url):
                route.continue_()
            else:
                blocked.append(route.request.url)
                route.abort("internetdisconnected")

        page.route("**/*", only_the_service)
        try:
            yield page, server, blocked
        finally:
            browser.close()


def test_swagger_ui_renders_the_operations_offline(browser_page: tuple[Any, Server, list[str]],
                                                  tmp_path: Path) -> None:
    page, server, blocked = browser_page
    page.goto(server.url + "/docs")
    page.wait_for_selector(".opblock", timeout=30_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/v1/classify" in [p.strip().replace("\u200b", "") for p in paths]
    page.screenshot(path=str(tmp_path / "docs.png"))
    assert not blocked, f"/docs asked the network for {blocked}"


def test_redoc_renders_the_operations_offline(browser_page: tuple[Any, Server, list[str]], tmp_path: Path) -> None:
    page, server, blocked = browser_page
    page.goto(server.url + "/redoc")
    page.wait_for_selector("[data-section-id^='tag/']", timeout=30_000)
    assert page.get_by_text("/v1/classify", exact=False).count() > 0
    page.screenshot(path=str(tmp_path / "redoc.png"))
    assert not blocked, f"/redoc asked the network for {blocked}"
