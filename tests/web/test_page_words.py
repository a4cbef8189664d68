"""What the pages say, in words a person reads (issue 10, "Pages"): no internal ids or codes, the sources asked
first and the skipped ones folded, "需人工查询" only when it is needed, the name check said in words, and no
green "valid" badge under a name mismatch. The page model (`pages.view`) is tested directly; the pages
through the app."""

from __future__ import annotations

import re

from aggregator.web.pages import view as v
from tests.web.test_pages import client, env, page_settings, sign_in, text_of  # noqa: F401 - fixtures
from tests.web_support import MEM_NUMBER, MOHURD_NUMBER, TestClient, WebEnv

NAMES = {"mohurd_api": "住房和城乡建设部 全国建筑市场监管平台", "mem_api": "应急管理部 特种作业操作证查询", "mem_records": "应急管理部 上报证书数据"}


def _answer(**kw: object) -> dict:
    base: dict = {
        "verdict": "inconclusive",
        "verdict_reason": "无法得出结论 (no conclusion could be reached)；以下数据源暂不可用：mohurd_api(captcha)、mem_api(timeout) "
        "(sources unavailable: the answer may be incomplete)",
        "query": {"number": "T1", "name_given": False, "id_number_given": False},
        "certificates": [],
        "sources": [
            {"source": "mem_records", "department": "mem", "mode": "records", "outcome": "not_found"},
            {"source": "mohurd_api", "department": "mohurd", "mode": "api", "outcome": "unavailable", "error_kind": "captcha"},
            {"source": "mem_api", "department": "mem", "mode": "api", "outcome": "unavailable", "error_kind": "timeout"},
            {"source": "samr_link", "department": "samr", "mode": "link", "outcome": "skipped"},
            {"source": "mem_link", "department": "mem", "mode": "link", "outcome": "manual"},
        ],
        "view": {"role": "public", "masked": True},
    }
    base.update(kw)
    return base


def test_the_reason_names_sources_and_says_what_happened_in_words() -> None:
    page = v.answer_page(_answer(), NAMES)
    reason = page["page_reason"]
    assert "mohurd_api" not in reason and "captcha" not in reason and "mem_api" not in reason
    assert "住房和城乡建设部 全国建筑市场监管平台（数据源要求人工验证码）" in reason
    assert "应急管理部 特种作业操作证查询（数据源响应超时）" in reason
    assert v.answer_page(_answer(), NAMES)["verdict_reason"].count("mohurd_api") == 1  # the answer itself keeps ids


def test_sources_asked_first_skipped_folded_and_manual_only_when_no_live_source_answered() -> None:
    page = v.answer_page(_answer(), NAMES)
    assert [s["source"] for s in page["asked"]] == ["mem_records", "mohurd_api", "mem_api", "mem_link"]
    assert [s["source"] for s in page["skipped"]] == ["samr_link"]
    assert all("name" in s for s in page["asked"])
    manual = page["asked"][-1]
    assert page["manual_needed"] and v.source_outcome_badge(manual, page["manual_needed"]).zh == "需人工查询"
    answered = _answer(verdict="valid")
    answered["sources"][1] = {"source": "mohurd_api", "department": "mohurd", "mode": "api", "outcome": "found"}
    page = v.answer_page(answered, NAMES)
    assert not page["manual_needed"] and v.source_outcome_badge(manual, False).zh != "需人工查询"


def test_name_check_in_words() -> None:
    assert v.answer_page(_answer(), NAMES)["name_check"] is None  # no name given, nothing said
    given = {"number": "T1", "name_given": True, "id_number_given": False}
    mismatch = v.answer_page(_answer(verdict="name_mismatch", query=given), NAMES)
    assert mismatch["holder_differs"] and mismatch["name_check"][1].zh == "姓名不符"
    employer = v.answer_page(_answer(verdict="valid", query=given, name_matches=True), NAMES)
    assert employer["name_check"][1].zh == "姓名一致"


def test_conflict_values_are_words() -> None:
    assert v.conflict_value("status", "suspended") == "暂扣"
    assert v.conflict_value("valid_until", None) == "（空）"


def test_result_page_has_no_ids_and_folds_the_skipped_sources(client: TestClient) -> None:  # noqa: F811
    r = client.get("/lookup", params={"number": MEM_NUMBER})
    page = text_of(r.text)
    for s in page_settings().sources:
        assert s.id not in page, f"the source id {s.id} is shown on the result page"
    assert "个数据源未询问" in page
    assert re.search(r"\bnot_found\b|\bsuspended\b|\bname_mismatch\b", page) is None
    assert "需人工查询" not in page  # a source answered: no one needs to check by hand
    for number in re.findall(r'<code class="certno">([^<]+)</code>', r.text):
        assert number.strip()


def test_a_name_mismatch_card_never_shows_a_green_valid_badge(client: TestClient) -> None:  # noqa: F811
    r = client.get("/lookup", params={"number": MOHURD_NUMBER, "name": "王五"})
    card = r.text[r.text.index('<article class="cert"') :]
    assert "badge-ok" not in card.split("</header>")[0]
    assert "持证人不符" in text_of(card)
    assert "所填姓名与证书记录不符" in text_of(r.text)


def test_with_a_name_the_page_says_whether_it_matches(client: TestClient) -> None:  # noqa: F811
    r = client.get("/lookup", params={"number": MEM_NUMBER, "name": "张小三"})
    assert 'class="name-check"' in r.text and "姓名" in text_of(r.text.split('class="name-check"')[1][:400])


def test_the_audit_table_shows_the_organisation_not_the_key_id(client: TestClient, env: WebEnv) -> None:  # noqa: F811
    sign_in(client, env, "regulator", "/regulator")
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/regulator").text).group(1)
    r = client.post("/regulator", data={"csrf": token, "number": MEM_NUMBER, "purpose": "抽查"})
    audit = r.text[r.text.index('id="audit-title"') :]
    assert "test regulator" in audit and env.key_ids["regulator"] not in audit


def test_docs_are_rendered_in_the_site_layout(client: TestClient) -> None:  # noqa: F811
    r = client.get("/docs")
    page = text_of(r.text)
    assert r.status_code == 200 and 'aria-label="主导航 Main"' in r.text and "/static/certq.css" in r.text
    assert "`" not in page, "literal backticks on /docs"
    assert "{exc" not in page, "an unformatted placeholder on /docs"
    assert "<code>" in r.text


def test_the_recognition_catalogue_has_a_readable_page(client: TestClient) -> None:  # noqa: F811
    r = client.get("/recognition")
    page = text_of(r.text)
    assert r.status_code == 200 and "互通互认对应目录" in page
    assert "建筑电工特种作业操作证" in page and "五级/初级工" in page and "应急管理部" in page
    assert 'id="entry-1"' in r.text and "mohurd" not in page


def test_an_unknown_page_is_html_for_a_browser_and_problem_json_for_api_clients(client: TestClient) -> None:  # noqa: F811
    browser = client.get("/no-such-page", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert browser.status_code == 404 and browser.headers["content-type"].startswith("text/html")
    assert "未找到" in text_of(browser.text) and 'aria-label="主导航 Main"' in browser.text
    api = client.get("/no-such-page", headers={"Accept": "application/json"})
    assert api.status_code == 404 and api.headers["content-type"] == "application/problem+json"
    assert api.json()["title"] == "not-found" or "not-found" in api.json()["type"]
    under_api = client.get("/api/v1/nothing", headers={"Accept": "text/html"})
    assert under_api.headers["content-type"] == "application/problem+json"


def test_the_forms_examples_exist_in_the_demo_data(client: TestClient) -> None:  # noqa: F811
    from aggregator.sandbox.fixed import examples

    demo = {e.number: e.name for e in examples()}
    hint = re.search(r'id="h-number">如 ([^；]+)；', client.get("/").text)
    assert hint, "no examples on the lookup form"
    for number in hint.group(1).split("、"):
        assert number in demo, f"the form's example {number} is not in the demo data"
    template = client.get("/employer/template.csv").text.lstrip("\ufeff").splitlines()[1:]
    for line in template:
        number, name = line.split(",")
        assert any(e.number == number and e.name == name for e in examples()), line


# --- the employer's batch: XLSX in, typo hints, Chinese CSV / XLSX out ------------------------------------


def _xlsx(rows: list[list[str]]) -> bytes:
    import io

    from openpyxl import Workbook

    book = Workbook()
    for row in rows:
        book.active.append(row)
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


def _upload(client: TestClient, content: bytes, name: str, output: str):  # noqa: F811
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/employer").text).group(1)
    return client.post("/employer", data={"csrf": token, "output": output}, files={"file": (name, content, "application/octet-stream")})


TYPO = "T110105199003071230"  # 张伟's MEM number with a wrong ID check character


def test_an_xlsx_list_is_accepted_and_the_typo_hints_are_shown(client: TestClient, env: WebEnv) -> None:  # noqa: F811
    sign_in(client, env, "employer", "/employer")
    book = _xlsx([["证书编号", "姓名"], [MEM_NUMBER, "张小三"], [TYPO, "张伟"], ["+1+1", "@x"]])
    r = _upload(client, book, "list.xlsx", "html")
    assert r.status_code == 200, text_of(r.text)[:400]
    page = text_of(r.text)
    assert "核验结果 Results (3)" in page
    assert 'class="hint typo-hint"' in r.text and "可能输错了" in page
    assert "download=\"certq-results.xlsx\"" in r.text


def test_a_broken_workbook_is_refused_beside_the_file_field(client: TestClient, env: WebEnv) -> None:  # noqa: F811
    sign_in(client, env, "employer", "/employer")
    r = _upload(client, b"PK\x03\x04 not really a workbook", "list.xlsx", "html")
    assert r.status_code == 422 and 'id="e-file"' in r.text


def test_xlsx_results_in_chinese_with_formulas_neutralised(client: TestClient, env: WebEnv) -> None:  # noqa: F811
    import io

    from openpyxl import load_workbook

    sign_in(client, env, "employer", "/employer")
    book = _xlsx([["证书编号", "姓名"], [MEM_NUMBER, "张小三"], [MOHURD_NUMBER, "王五"], ["+1+1", "@x"]])
    r = _upload(client, book, "list.xlsx", "xlsx")
    assert r.status_code == 200 and "spreadsheetml" in r.headers["content-type"]
    sheet = load_workbook(io.BytesIO(r.content)).active
    rows = [[c.value for c in row] for row in sheet.iter_rows()]
    header = rows[0]
    assert header[:5] == ["行号", "证书编号", "姓名", "结论", "姓名核对"]
    by_number = {row[1]: dict(zip(header, row, strict=True)) for row in rows[1:]}
    assert by_number[MEM_NUMBER]["结论"] == "有效" and by_number[MOHURD_NUMBER]["结论"] == "姓名不符"
    assert "持证人不符" in by_number[MOHURD_NUMBER]["证书状态"] and "有效" not in by_number[MOHURD_NUMBER]["证书状态"]
    assert by_number["'+1+1"]["姓名"] == "'@x"
    for row in sheet.iter_rows():
        for c in row:
            assert c.data_type != "f" and not str(c.value or "").startswith(("=", "+", "-", "@"))


# --- quarters and the department page ----------------------------------------------------------------------


def test_quarters_are_read_as_people_write_them() -> None:
    import pytest

    from aggregator.records.report import InvalidQuarter, parse_quarter

    for text in ("2026Q4", "2026 Q4", "2026q4", "2026-Q4", "2026年第4季度", "2026年4季度", "2026年第四季度", "２０２６Ｑ４", " 2026q4 "):
        assert parse_quarter(text) == "2026Q4", text
    for text in ("2026Q5", "26Q4", "2026", "Q4 2026", "2026年第5季度", ""):
        with pytest.raises(InvalidQuarter):
            parse_quarter(text)


def test_department_page_has_history_columns_template_and_a_preview(client: TestClient, env: WebEnv) -> None:  # noqa: F811
    from tests.web.test_pages import BAD_UPLOAD, upload_records

    sign_in(client, env, "department-mem", "/department")
    page = client.get("/department")
    text = text_of(page.text)
    assert "上传记录 Upload history" in text and 'href="/department?batch=' in page.text  # its own uploads
    assert "列说明 Columns" in text and "证书编号" in text and "必填 required" in text
    template = client.get("/department/template.csv")
    assert template.status_code == 200 and template.text.lstrip("\ufeff").startswith("证书编号,姓名,身份证号")

    current = re.search(r"当前数据 Current data：应急管理部 (\d{4}Q\d) ([\d,]+) 条", text)
    assert current, "the current data is not shown"
    preview = client.get("/department", params={"quarter": "2026年第4季度"})
    shown = text_of(preview.text)
    assert f"上传 2026Q4 将替换 {current.group(1)} 的 {current.group(2)} 条记录" in shown
    assert 'data-preview="replace"' in preview.text
    bad = client.get("/department", params={"quarter": "2026Q9"})
    assert bad.status_code == 422 and 'id="e-quarter"' in bad.text

    # a quarter typed as people write it is accepted by the upload too
    r = upload_records(client, BAD_UPLOAD, "2026 q2", partial=True)
    assert r.status_code == 200 and 'data-status="partial"' in r.text and "2026Q2" in text_of(r.text)
    batch = re.search(r'href="/department\?batch=(\d+)#rep-title"', r.text)
    assert batch
    report = client.get("/department", params={"batch": batch.group(1)})
    assert report.status_code == 200 and 'data-status="partial"' in report.text


def test_a_department_key_cannot_read_anothers_report(client: TestClient, env: WebEnv) -> None:  # noqa: F811
    from tests.web.test_pages import BAD_UPLOAD, upload_records

    sign_in(client, env, "department-mem", "/department")
    r = upload_records(client, BAD_UPLOAD, "2026Q2", partial=True)
    batch = re.search(r'href="/department\?batch=(\d+)#rep-title"', r.text).group(1)
    client.post("/logout", data={"csrf": re.search(r'name="csrf" value="([^"]+)"', r.text).group(1), "next": "/department"})
    sign_in(client, env, "department-samr", "/department")
    other = client.get("/department", params={"batch": batch})
    assert other.status_code == 403 and 'data-status="partial"' not in other.text
