"""The public page in a real browser: headless Debian Chromium (driven by playwright) opens the page served by
uvicorn on loopback, types a number, submits, and sees the verdict; on a phone-size and a desktop viewport,
with screenshots saved in tests/artifacts/ (git-ignored) for a person to look at.

Chromium comes from Debian (`apt-get install chromium`), never from `playwright install`. Without it the test
skips with the reason, except under CERTQ_REQUIRE_SERVICES=1 (CI), where a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from aggregator.web.app import create_app
from tests.web.test_pages import MOHRSS_CSV, page_settings
from tests.web_support import MEM_NUMBER, WebEnv, build_env, quiet_config

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).parents[1] / "artifacts"
PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1280, "height": 900}
STARTUP_S = 20.0
REQUIRE = os.environ.get("CERTQ_REQUIRE_SERVICES") == "1"


def _unavailable(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"{reason} (CERTQ_REQUIRE_SERVICES=1: the browser test must run here)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def playwright_api():
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        _unavailable(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the python package playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright_api):
    b = playwright_api.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        yield b
    finally:
        b.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The whole app under uvicorn on 127.0.0.1, on a small imported data set, in a background thread."""
    import uvicorn

    root = tmp_path_factory.mktemp("browser")

    def prepare() -> WebEnv:
        env = build_env(root)

        async def add_mohrss() -> None:
            store = await env.open_store()
            try:
                path = root / "mohrss.csv"
                path.write_text(MOHRSS_CSV, encoding="utf-8")
                await store.import_file(path, department="mohrss", quarter="2026Q1", uploaded_by="test")
            finally:
                await store.close()

        env.run(add_mohrss())
        return env

    # In a thread of its own: playwright's sync API may already run an event loop in this one.
    with ThreadPoolExecutor(max_workers=1) as pool:
        env = pool.submit(prepare).result()
    app = create_app(page_settings(), database_url=env.database_url, redis_url="", web=quiet_config())
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn-browser-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    ignore = ARTIFACTS / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n", encoding="utf-8")
    return ARTIFACTS


def _no_horizontal_scroll(page) -> None:
    widths = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page scrolls sideways: content {widths[0]} px in a {widths[1]} px window"


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_public_page_lookup_shows_the_verdict(browser, base_url: str, viewport: dict[str, int]) -> None:
    context = browser.new_context(viewport=viewport, device_scale_factor=1, locale="zh-CN")
    page = context.new_page()
    outside: list[str] = []
    page.on("request", lambda req: None if req.url.startswith(base_url) else outside.append(req.url))
    try:
        page.goto(base_url + "/")
        page.get_by_label("证书编号或身份证号").fill(f" {MEM_NUMBER[:7]} {MEM_NUMBER[7:]} ")  # spaces as typed
        page.get_by_role("button", name="查询").click()
        verdict = page.locator("[data-verdict]")
        verdict.wait_for()
        assert verdict.get_attribute("data-verdict") == "valid"
        heading = page.get_by_role("heading", level=2).first.inner_text()
        assert "有效" in heading and "VALID" in heading.upper()
        assert "张*三" in page.inner_text("main")
        _no_horizontal_scroll(page)
        name = "phone" if viewport is PHONE else "desktop"
        page.screenshot(path=str(_artifacts() / f"lookup-{name}.png"), full_page=True)

        page.goto(base_url + "/lookup?number=" + "T1101%3C05")  # a bad number: the reason beside the field
        assert page.locator("#e-number").is_visible()
        assert page.locator("#f-number").get_attribute("aria-invalid") == "true"
        _no_horizontal_scroll(page)
        page.screenshot(path=str(_artifacts() / f"bad-number-{name}.png"), full_page=True)
    finally:
        context.close()
    assert outside == [], f"the page fetched from elsewhere: {outside}"


@pytest.mark.parametrize("path", ["/sources", "/employer", "/regulator", "/department", "/docs"])
def test_other_pages_fit_a_phone(browser, base_url: str, path: str) -> None:
    context = browser.new_context(viewport=PHONE, device_scale_factor=1, locale="zh-CN")
    page = context.new_page()
    try:
        page.goto(base_url + path)
        page.locator("h1").first.wait_for()
        _no_horizontal_scroll(page)
        page.screenshot(path=str(_artifacts() / f"phone{path.replace('/', '-')}.png"), full_page=True)
    finally:
        context.close()
