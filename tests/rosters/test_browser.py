"""The rosters section of the employer page in a real browser (headless Debian Chromium, as
tests/web/test_browser.py drives it): upload a roster, start the run, watch the progress bar fill without a
reload, see the results table, download the CSV; screenshots at 390 and 1,280 px in tests/artifacts/."""

from __future__ import annotations

import csv
import io

import pytest

from tests.web.test_browser import (  # noqa: F401 - the fixtures, shared
    DESKTOP,
    PHONE,
    _check,
    browser,
    playwright_api,
    server,
)
from tests.web_support import MEM_NUMBER, MOHURD_NUMBER, WebEnv

ROSTER = f"证书编号,姓名,工号,部门/班组\n{MEM_NUMBER},张小三,E001,电工一班\n{MOHURD_NUMBER},李四,E002,=1+1\n"


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["390", "1280"])
def test_roster_upload_progress_results_and_download(browser, server: tuple[str, WebEnv], viewport) -> None:  # noqa: F811
    base, env = server
    width = viewport["width"]
    context = browser.new_context(viewport=viewport, device_scale_factor=1, locale="zh-CN", accept_downloads=True)
    page = context.new_page()
    try:
        page.goto(base + "/employer")
        page.locator("#f-key").fill(env.keys["employer"])
        page.get_by_role("button", name="登录").click()
        page.locator("#r-file").wait_for()
        page.locator("#r-name").fill(f"二标段 {width}")
        page.set_input_files("#r-file", files=[{"name": "roster.csv", "mimeType": "text/csv",
                                                "buffer": ROSTER.encode("utf-8")}])
        page.get_by_role("button", name="上传名单").click()
        page.locator("#roster-title").wait_for()
        assert "2 人" in page.locator("#roster-title").inner_text()

        page.get_by_role("button", name="核验全部成员").click()
        page.locator("#job-progress").wait_for()
        page.evaluate("() => { window.__sameDocument = true; }")  # gone if the page reloads
        page.wait_for_function("() => document.getElementById('job').dataset.status === 'finished'", timeout=30_000)
        bar = page.evaluate("() => [document.getElementById('job-progress').value, document.getElementById('job-progress').max]")
        assert bar == [2, 2]
        assert "已完成" in page.locator("#job-text").inner_text()
        page.locator("#dl-csv").wait_for()  # the results arrived without a reload
        assert page.evaluate("() => window.__sameDocument === true")
        table = page.locator("#roster-results table").inner_text()
        assert "E001" in table and "有效" in table

        with page.expect_download() as info:
            page.locator("#dl-csv").click()
        text = open(info.value.path(), encoding="utf-8-sig").read()
        rows = list(csv.DictReader(io.StringIO(text)))
        assert [r["工号"] for r in rows] == ["E001", "E002"]
        assert rows[0]["结论"] == "有效" and rows[1]["部门/班组"] == "'=1+1"
        _check(page, f"employer-roster-{width}")
    finally:
        context.close()


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["390", "1280"])
def test_monitoring_form_and_a_webhook_endpoint_created_and_listed(browser, server: tuple[str, WebEnv], viewport) -> None:  # noqa: F811
    base, env = server
    width = viewport["width"]
    context = browser.new_context(viewport=viewport, device_scale_factor=1, locale="zh-CN")
    page = context.new_page()
    try:
        page.goto(base + "/employer")
        page.locator("#f-key").fill(env.keys["employer"])
        page.get_by_role("button", name="登录").click()
        page.locator("#r-file").wait_for()
        page.locator("#r-name").fill(f"监控 {width}")
        page.set_input_files("#r-file", files=[{"name": "roster.csv", "mimeType": "text/csv",
                                                "buffer": ROSTER.encode("utf-8")}])
        page.get_by_role("button", name="上传名单").click()
        page.locator("#m-enabled").check()
        page.locator("#m-every").fill("12")
        page.locator("#m-warn").fill("60,7")
        page.get_by_role("button", name="保存监控设置").click()
        page.locator("#monitoring .badge-info").wait_for()
        assert "每 12 小时" in page.locator("#monitoring").inner_text()
        assert page.locator("#m-warn").input_value() == "60,7" and page.locator("#m-enabled").is_checked()

        host = f"93.184.215.{width % 250}"
        page.locator("#wh-url").fill(f"https://{host}/certq-hook")
        page.locator("#wh-desc").fill("人事系统 HR")
        page.get_by_label("状态变化 status changed").check()
        page.get_by_role("button", name="添加 Add endpoint").click()
        secret = page.locator("#webhook-secret-value").inner_text()
        assert secret.startswith("whsec_")
        row = page.locator("table.webhooks tr", has_text=host)
        assert "启用 enabled" in row.inner_text() and "状态变化" in row.inner_text()
        _check(page, f"employer-webhook-created-{width}")

        page.reload()  # the page after the redirect: a reload shows a note, never the secret or a second endpoint
        page.locator("#webhooks").wait_for()
        assert page.locator("#webhook-secret-value").count() == 0 and secret not in page.content()
        assert "只显示一次" in page.locator("#webhooks").inner_text()
        assert page.locator("table.webhooks tr", has_text=host).count() == 1
        _check(page, f"employer-webhook-reloaded-{width}")

        page.goto(base + "/employer#webhooks")  # listed, and the secret is not shown again
        row = page.locator("table.webhooks tr", has_text=host)
        row.wait_for()
        assert "人事系统 HR" in row.inner_text() and page.locator("#webhook-secret-value").count() == 0
        row.get_by_role("link", name="推送记录").click()
        page.locator("#deliveries").wait_for()
        assert "暂无推送" in page.locator("#webhooks").inner_text()
        _check(page, f"employer-webhooks-{width}")
    finally:
        context.close()
