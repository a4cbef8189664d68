"""The pages in a real browser: headless Debian Chromium (driven by playwright) opens the pages served by
uvicorn on loopback: the public page (types a number, submits, sees the verdict), then every page (a result,
the employer's results, the department, the regulator, sources, docs, the catalogue, a past date's answer, a
receipt's verify page, the holder's form and lookups, a 404) at 390 px and
1,280 px wide, with screenshots saved in tests/artifacts/ (git-ignored) for a person to look at. Measured in
the page: nothing scrolls sideways, and no certificate number (`.certno`) is broken across lines.

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
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest

from aggregator.web.app import create_app
from tests.web.test_pages import MOHRSS_CSV, MOHRSS_NUMBER, page_settings
from tests.web_support import MEM_NUMBER, MOHURD_NUMBER, WebEnv, build_env, quiet_config

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
PHONE = {"width": 390, "height": 844}
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
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, WebEnv]]:
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
        yield f"http://127.0.0.1:{port}", env
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def base_url(server: tuple[str, WebEnv]) -> str:
    return server[0]


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


# Measured in the page: the page's own width, and every certificate number on one line.
_MEASURE = """() => {
  const doc = document.scrollingElement || document.documentElement;
  const broken = [...document.querySelectorAll('.certno, .nowrap')]
    .filter(el => el.getClientRects().length > 1)
    .map(el => el.textContent.trim());
  const tables = [...document.querySelectorAll('.table-scroll')]
    .filter(el => el.scrollWidth > el.clientWidth + 1)
    .map(el => (el.querySelector('caption') || el.querySelector('th') || el).textContent.trim().slice(0, 40));
  return {scroll: doc.scrollWidth, inner: window.innerWidth, certnos: document.querySelectorAll('.certno').length,
          broken, tables};
}"""


def _check(page, shot: str) -> dict:
    """The measurements of the page now shown, its screenshot saved; fails on sideways scroll or a broken number."""
    page.screenshot(path=str(_artifacts() / f"{shot}.png"), full_page=True)
    m = page.evaluate(_MEASURE)
    assert m["scroll"] <= m["inner"], f"{shot}: the page scrolls sideways ({m['scroll']} px in {m['inner']} px)"
    assert not m["broken"], f"{shot}: certificate numbers or dates broken across lines: {m['broken']}"
    assert not m["tables"], f"{shot}: a table is wider than its box and scrolls: {m['tables']}"
    return m


EMPLOYER_LIST = f"证书编号,姓名\n{MEM_NUMBER},张小三\n{MOHURD_NUMBER},王五\n{MOHRSS_NUMBER},孙丽\n=1+1,@x\n"


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["390", "1280"])
def test_every_page_fits_and_keeps_numbers_whole(browser, server: tuple[str, WebEnv], viewport: dict[str, int]) -> None:
    base, env = server
    width = viewport["width"]
    context = browser.new_context(viewport=viewport, device_scale_factor=1, locale="zh-CN")
    page = context.new_page()
    try:
        public = {
            "home": "/",
            "result": f"/lookup?number={MEM_NUMBER}&name=张小三",
            "mismatch": f"/lookup?number={quote(MOHURD_NUMBER)}&name=王五",
            "sources": "/sources",
            "docs": "/docs",
            "recognition": "/recognition",
            "holder-form": "/holder",
            "as-of": f"/lookup?number={MEM_NUMBER}&as_of={datetime.now(UTC).date().isoformat()}",
            "as-of-too-early": f"/lookup?number={MEM_NUMBER}&as_of=2020-01-01",
        }
        for shot, path in public.items():
            page.goto(base + path)
            page.locator("h1").first.wait_for()
            m = _check(page, f"{shot}-{width}")
            if shot in ("result", "mismatch"):
                assert m["certnos"] > 0, f"{shot}: no certificate number is marked .certno"
        assert page.goto(base + "/").ok and page.locator("#f-as_of").get_attribute("type") == "date"

        # a receipt's verify page (issued through the API), and a holder's lookups (one keyed lookup first)
        issued = page.request.post(base + "/api/v1/receipts", data={"number": MEM_NUMBER})
        assert issued.ok, issued.text()
        page.goto(base + f"/r/{issued.json()['id']}")
        page.locator("h1").first.wait_for()
        _check(page, f"receipt-{width}")
        looked = page.request.get(base + f"/api/v1/certificates/{MEM_NUMBER}?purpose=入职核验",
                                  headers=env.auth("employer"))
        assert looked.ok
        page.goto(base + "/holder")
        page.locator("#f-number").fill(MEM_NUMBER)
        page.locator("#f-name").fill("张小三")
        page.locator("#f-id_number").fill(MEM_NUMBER[1:])
        page.get_by_role("button", name="查看").click()
        page.locator("#keyed-title").wait_for()
        _check(page, f"holder-result-{width}")

        missing = page.goto(base + "/no-such-page")
        assert missing is not None and missing.status == 404
        assert "text/html" in missing.headers["content-type"]
        _check(page, f"404-{width}")

        # signed in (an admin key may use every signed-in page)
        page.goto(base + "/employer")
        page.locator("#f-key").fill(env.keys["admin"])
        page.get_by_role("button", name="登录").click()
        page.locator("#f-file").wait_for()
        page.set_input_files("#f-file", files=[{"name": "list.csv", "mimeType": "text/csv",
                                                "buffer": EMPLOYER_LIST.encode("utf-8-sig")}])
        page.get_by_role("button", name="核验").click()
        page.locator("#results-title").wait_for()
        m = _check(page, f"employer-{width}")
        assert m["certnos"] >= 4

        page.goto(base + "/regulator")
        page.locator("#f-number").fill(MEM_NUMBER)
        page.locator("#f-purpose").fill("工地抽查 2026-12")
        page.get_by_role("button", name="查询").click()
        page.locator("[data-verdict]").wait_for()
        _check(page, f"regulator-{width}")

        page.goto(base + "/regulator/campaigns")  # the spot-check campaigns: the create form and the list
        _check(page, f"campaigns-{width}")

        page.goto(base + "/department?department=mem&quarter=2026年第4季度")  # the preview of what it replaces
        page.locator("[data-preview]").wait_for()
        _check(page, f"department-{width}")
    finally:
        context.close()
