"""The web pages as a person (and a browser without JavaScript) uses them: each page for its role, the
lookup card, escaping of what sources said, bad input, the employer's CSV round trip and the upload report."""

from __future__ import annotations

import csv
import html
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregator.config import Settings
from aggregator.errors import describe
from aggregator.models import Mode
from aggregator.numbers import NumberError, parse_number
from aggregator.web.app import create_app
from tests.web_support import (
    MEM_EXPIRED,
    MEM_NUMBER,
    MOHURD_NUMBER,
    TestClient,
    WebEnv,
    build_env,
    quiet_config,
)

SCRIPT = "<script>alert('x')</script>"
MOHRSS_NUMBER = "S0001110000012450000017"[:22]
MOHRSS_CSV = (
    "证书编号,姓名,身份证号,职业,等级,发证机关,发证日期,证书状态\n"
    f"{MOHRSS_NUMBER},孙{SCRIPT}丽,,电工,五级/初级工,{SCRIPT}评价中心,2024-06-01,有效\n"
)


def page_settings() -> Settings:
    """Uploaded records and the captcha-protected public sites (link-outs): nothing leaves the machine."""
    settings = Settings.load()
    return settings.with_sources([s for s in settings.sources if s.mode in (Mode.RECORDS, Mode.LINK)])


@pytest.fixture()
def env(tmp_path: Path) -> WebEnv:
    env = build_env(tmp_path)

    async def add_mohrss() -> None:
        store = await env.open_store()
        try:
            path = tmp_path / "mohrss-2026Q1.csv"
            path.write_text(MOHRSS_CSV, encoding="utf-8")
            report = await store.import_file(path, department="mohrss", quarter="2026Q1", uploaded_by="test")
            assert report.status == "imported", report.problems
        finally:
            await store.close()

    env.run(add_mohrss())
    return env


@pytest.fixture()
def client(env: WebEnv) -> Iterator[TestClient]:
    app = create_app(page_settings(), database_url=env.database_url, redis_url="", web=quiet_config())
    with TestClient(app, follow_redirects=False) as c:
        yield c


def csrf(client: TestClient, path: str) -> str:
    """The CSRF token a page's forms carry (its cookie is set on the client by the same response)."""
    page = client.get(path)
    m = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert m, f"no CSRF field on {path}"
    return m.group(1)


def sign_in(client: TestClient, env: WebEnv, who: str, page: str) -> None:
    r = client.post("/login", data={"csrf": csrf(client, page), "key": env.keys[who], "next": page})
    assert r.status_code == 303 and r.headers["location"] == page
    cookie = r.headers["set-cookie"]
    assert "certq_key=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")


def text_of(html: str) -> str:
    """The visible text of a page, roughly (tags removed), to assert on what a person reads."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# --- public lookup ------------------------------------------------------------------------------------


def test_home_shows_a_labelled_lookup_form(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<label for="f-number">' in r.text and 'id="f-number" name="number"' in r.text
    assert '<html lang="zh-CN">' in r.text and 'name="viewport"' in r.text
    assert "/static/certq.css" in r.text and "http://" not in r.text.split("<body")[0]  # no CDN in <head>
    assert client.get("/static/certq.css").status_code == 200


def test_lookup_shows_verdict_certificate_recognition_and_every_source(client: TestClient) -> None:
    r = client.get("/lookup", params={"number": MEM_NUMBER})
    assert r.status_code == 200
    page = text_of(r.text)
    assert 'data-verdict="valid"' in r.text
    assert "结论 Verdict：有效" in page and "VALID" in page  # words, not colour alone
    assert "特种作业操作证" in page and "低压电工作业" in page and "北京市应急管理局" in page
    assert "张*三" in page and "张小三" not in page  # the public sees a masked name
    assert "身份证号 ID number" not in page  # and no ID number field at all
    assert "建筑电工" in page and "免予" in page  # recognition entry 1: target and what is waived
    assert "五级/初级工" in page and "四级/中级工" in page  # counts as / may apply for
    # every source is accounted for: records asked, link-outs with a link and instructions, others skipped
    assert "应急管理部 上报证书数据" in page  # sources by their names
    assert 'href="https://cx.mem.gov.cn' in r.text and "验证码" in page
    assert "查到" in page and "未询问" in page
    assert "查询于 Asked" in page and "数据截至 Data as of" in page  # freshness of the records source


def test_expired_certificate_says_so_and_why_it_earns_nothing(client: TestClient) -> None:
    r = client.get("/lookup", params={"number": MEM_EXPIRED})
    page = text_of(r.text)
    assert 'data-verdict="expired"' in r.text and "已过期" in page
    assert "不能用于互通互认" in page


def test_name_check_against_the_records(client: TestClient) -> None:
    mismatch = client.get("/lookup", params={"number": MOHURD_NUMBER, "name": "王五"})
    assert 'data-verdict="name_mismatch"' in mismatch.text and "姓名不符" in text_of(mismatch.text)
    assert "李四" not in mismatch.text  # the recorded holder is not revealed


def test_upstream_markup_is_escaped_never_rendered(client: TestClient) -> None:
    r = client.get("/lookup", params={"number": MOHRSS_NUMBER})
    assert r.status_code == 200 and 'data-verdict="valid"' in r.text
    assert "<script>" not in r.text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;评价中心" in r.text


def test_bad_number_is_a_422_page_with_the_reason_next_to_the_field(client: TestClient) -> None:
    bad = "T1101&lt;05"
    with pytest.raises(NumberError) as e:
        parse_number(bad)
    r = client.get("/lookup", params={"number": bad})
    assert r.status_code == 422 and r.headers["content-type"].startswith("text/html")
    field = r.text[r.text.index('id="f-number"') :]
    assert 'aria-invalid="true"' in field.split(">")[0]
    error = re.search(r'<p class="error" id="e-number" role="alert">(.*?)</p>', r.text, re.S)
    assert error and describe(e.value).zh in html.unescape(error.group(1))
    assert 'value="T1101&amp;lt;05"' in r.text  # what was typed stays in the box, escaped


def test_empty_number_is_explained_not_looked_up(client: TestClient) -> None:
    r = client.get("/lookup", params={"number": "  "})
    assert r.status_code == 422 and "请输入证书编号" in r.text


# --- employer ---------------------------------------------------------------------------------------------


def test_employer_page_asks_for_a_key_and_rejects_a_wrong_one(client: TestClient, env: WebEnv) -> None:
    r = client.get("/employer")
    assert r.status_code == 401 and 'name="key"' in r.text and 'type="password"' in r.text
    token = csrf(client, "/employer")
    bad = client.post("/login", data={"csrf": token, "key": "cq_000000000000_" + "x" * 43, "next": "/employer"})
    assert bad.status_code == 401 and "API 密钥无效或已吊销" in bad.text
    assert "certq_key" not in bad.headers.get("set-cookie", "")
    revoked = client.post("/login", data={"csrf": token, "key": env.keys["revoked"], "next": "/employer"})
    assert revoked.status_code == 401


def test_sign_in_without_the_csrf_token_is_refused(client: TestClient, env: WebEnv) -> None:
    client.get("/employer")  # has the CSRF cookie now, but the form value is missing / wrong
    r = client.post("/login", data={"key": env.keys["employer"], "next": "/employer"})
    assert r.status_code == 403 and "certq_key" not in r.headers.get("set-cookie", "")
    r = client.post("/login", data={"csrf": "forged" * 5, "key": env.keys["employer"], "next": "/employer"})
    assert r.status_code == 403


def test_login_never_redirects_off_site(client: TestClient, env: WebEnv) -> None:
    r = client.post("/login", data={"csrf": csrf(client, "/employer"), "key": env.keys["employer"],
                                    "next": "https://evil.example/"})
    assert r.status_code == 303 and r.headers["location"] == "/"


def upload_list(client: TestClient, rows: str, output: str) -> object:
    token = csrf(client, "/employer")
    return client.post(
        "/employer",
        data={"csrf": token, "output": output},
        files={"file": ("list.csv", rows.encode("utf-8-sig"), "text/csv")},
    )


EMPLOYER_LIST = f"证书编号,姓名\n{MEM_NUMBER},张小三\n{MOHURD_NUMBER},王五\n=HYPERLINK(\"x\"),@SUM(1)\n{MEM_EXPIRED},欧阳小明\n"


def test_employer_csv_round_trip_with_formulas_neutralised(client: TestClient, env: WebEnv) -> None:
    sign_in(client, env, "employer", "/employer")
    template = client.get("/employer/template.csv")
    assert template.status_code == 200 and template.text.lstrip("\ufeff").startswith("证书编号,姓名")

    # the default CSV: Chinese headers and words (issue 10)
    r = upload_list(client, EMPLOYER_LIST, "csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    by_number = {row["证书编号"]: row for row in rows}
    assert by_number[MEM_NUMBER]["结论"] == "有效" and by_number[MEM_NUMBER]["姓名核对"] == "一致"
    assert by_number[MOHURD_NUMBER]["结论"] == "姓名不符" and by_number[MOHURD_NUMBER]["姓名核对"] == "不符"
    assert by_number[MEM_EXPIRED]["结论"] == "已过期"
    # each certificate's department, number, status and valid-until on the same line of their cells
    mem = by_number[MEM_NUMBER]
    columns = [mem[k].split("\n") for k in ("发证部门", "查到的证书编号", "证书状态", "有效期至")]
    assert len({len(c) for c in columns}) == 1 and MEM_NUMBER in columns[1]
    line = columns[1].index(MEM_NUMBER)
    assert columns[0][line] == "应急管理部" and columns[2][line] == "有效" and columns[3][line] == "2099-01-01"
    formula_rows = [row for row in rows if row["结论"] == "输入有误"]
    assert len(formula_rows) == 1
    assert formula_rows[0]["证书编号"] == "'=HYPERLINK(\"x\")" and formula_rows[0]["姓名"] == "'@SUM(1)"
    for row in rows:  # no cell a spreadsheet would run
        assert not any(cell.startswith(("=", "+", "-", "@")) for cell in row.values())

    # for programs: the API's columns and codes
    r = upload_list(client, EMPLOYER_LIST, "csv_codes")
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    by_number = {row["number"]: row for row in rows}
    assert by_number[MEM_NUMBER]["verdict"] == "valid" and by_number[MEM_NUMBER]["name_matches"] == "yes"
    assert by_number[MOHURD_NUMBER]["verdict"] == "name_mismatch" and by_number[MOHURD_NUMBER]["name_matches"] == "no"
    assert by_number[MEM_EXPIRED]["verdict"] == "expired"
    formula_rows = [row for row in rows if row["verdict"] == "error"]
    assert len(formula_rows) == 1
    assert formula_rows[0]["number"] == "'=HYPERLINK(\"x\")" and formula_rows[0]["name"] == "'@SUM(1)"
    for row in rows:
        assert not any(cell.startswith(("=", "+", "-", "@")) for cell in row.values())


def test_employer_results_table_on_the_page(client: TestClient, env: WebEnv) -> None:
    sign_in(client, env, "employer", "/employer")
    r = upload_list(client, EMPLOYER_LIST, "html")
    assert r.status_code == 200
    page = text_of(r.text)
    assert "核验结果 Results (4)" in page
    assert "一致 match" in page and "不符 mismatch" in page and "输入有误" in page
    assert "=HYPERLINK" in page  # shown as text on the page
    link = re.search(r'href="data:text/csv;charset=utf-8,([^"]+)" download="certq-results.csv"', r.text)
    assert link, "no download link for the results"
    from urllib.parse import unquote

    downloaded = unquote(link.group(1).replace("&amp;", "&"))
    assert "'=HYPERLINK" in downloaded and "\n=" not in downloaded


def test_employer_upload_needs_the_csrf_token(client: TestClient, env: WebEnv) -> None:
    sign_in(client, env, "employer", "/employer")
    r = client.post("/employer", data={"output": "csv"}, files={"file": ("l.csv", b"x,y\n", "text/csv")})
    assert r.status_code == 403


def test_employer_file_problems_show_next_to_the_file_field(client: TestClient, env: WebEnv) -> None:
    sign_in(client, env, "employer", "/employer")
    r = upload_list(client, "证书编号,姓名\n,张三\n", "html")
    assert r.status_code == 422 and 'id="e-file"' in r.text and "缺少证书编号" in r.text


def test_signed_in_with_the_wrong_role_is_told_so(client: TestClient, env: WebEnv) -> None:
    sign_in(client, env, "employer", "/employer")
    r = client.get("/regulator")
    assert r.status_code == 403 and "不能使用此页面" in r.text and 'name="key"' in r.text


def test_sign_out_forgets_the_key(client: TestClient, env: WebEnv) -> None:
    sign_in(client, env, "employer", "/employer")
    r = client.post("/logout", data={"csrf": csrf(client, "/employer"), "next": "/employer"})
    assert r.status_code == 303
    assert client.get("/employer").status_code == 401


# --- regulator --------------------------------------------------------------------------------------------


def test_regulator_sees_full_records_conflicts_and_the_audit_log(client: TestClient, env: WebEnv) -> None:
    sign_in(client, env, "regulator", "/regulator")
    page = client.get("/regulator")
    assert page.status_code == 200 and 'name="purpose"' in page.text and "审计日志" in page.text

    token = csrf(client, "/regulator")
    no_purpose = client.post("/regulator", data={"csrf": token, "number": MEM_NUMBER, "purpose": ""})
    assert no_purpose.status_code == 400 and 'id="e-purpose"' in no_purpose.text
    assert "data-verdict" not in no_purpose.text  # nothing shown without a purpose

    r = client.post("/regulator", data={"csrf": token, "number": MEM_NUMBER, "purpose": "工地抽查 2026-11"})
    assert r.status_code == 200
    text = text_of(r.text)
    assert "张小三" in text and "身份证号 ID number" in text  # full record
    # the lookup is in the log, with its purpose, on the same page
    audit = r.text[r.text.index('id="audit-title"') :]
    assert "工地抽查 2026-11" in audit and MEM_NUMBER in audit
    # the organisation's label, not the key's hex id (issue 10)
    assert "test regulator" in audit and env.key_ids["regulator"] not in audit


def test_regulator_bad_id_number_is_named_on_its_own_field(client: TestClient, env: WebEnv) -> None:
    sign_in(client, env, "regulator", "/regulator")
    token = csrf(client, "/regulator")
    r = client.post("/regulator", data={"csrf": token, "number": MEM_NUMBER, "id_number": "12#4", "purpose": "x"})
    assert r.status_code == 422 and 'id="e-id_number"' in r.text and 'id="e-number"' not in r.text


def test_regulator_page_with_a_bearer_key_works_without_signing_in(client: TestClient, env: WebEnv) -> None:
    assert client.get("/regulator", headers=env.auth("regulator")).status_code == 200


# --- department --------------------------------------------------------------------------------------------


BAD_UPLOAD = (
    "证书编号,姓名,身份证号,性别,作业类别,操作项目,发证机关,初领日期,有效期起,有效期至,复审日期,证书状态\n"
    f"{MEM_NUMBER},张小三,{MEM_NUMBER[1:]},男,电工作业,高压电工作业,北京市应急管理局,2020-01-02,2023-01-02,2099-01-01,,有效\n"
    f"{MEM_NUMBER},张小三,{MEM_NUMBER[1:]},男,电工作业,防爆电气作业,北京市应急管理局,2020-01-02,2023-01-02,明年,,有效\n"
)


def upload_records(client: TestClient, content: str, quarter: str, partial: bool = False) -> object:
    data = {"csrf": csrf(client, "/department"), "quarter": quarter}
    if partial:
        data["partial"] = "1"
    return client.post("/department", data=data, files={"file": ("mem-q2.csv", content.encode(), "text/csv")})


def test_department_upload_rejected_rows_are_listed(client: TestClient, env: WebEnv) -> None:
    sign_in(client, env, "department-mem", "/department")
    page = client.get("/department")
    assert page.status_code == 200 and 'name="quarter"' in page.text and "应急管理部" in page.text

    r = upload_records(client, BAD_UPLOAD, "2026Q2")
    assert r.status_code == 422 and 'data-status="rejected"' in r.text
    row = re.search(r"<tr><td data-label=\"行 Line\">(\d+)</td><td data-label=\"列 Column\">(.*?)</td>\s*"
                    r"<td data-label=\"值 Value\"><code>(.*?)</code></td><td data-label=\"原因 Reason\">(.*?)</td>", r.text)
    assert row, "no rejected row in the report"
    assert row.group(1) == "3" and row.group(2) == "有效期至" and row.group(3) == "明年" and row.group(4)

    r = upload_records(client, BAD_UPLOAD, "2026Q2", partial=True)
    assert r.status_code == 200 and 'data-status="partial"' in r.text
    again = upload_records(client, BAD_UPLOAD, "2026Q2", partial=True)
    assert again.status_code == 409 and "已导入" in again.text


def test_department_upload_checks_the_quarter(client: TestClient, env: WebEnv) -> None:
    sign_in(client, env, "department-mem", "/department")
    r = upload_records(client, BAD_UPLOAD, "2026Q5")
    assert r.status_code == 422 and 'id="e-quarter"' in r.text


# --- sources --------------------------------------------------------------------------------------------


def test_sources_page_lists_every_source_with_its_health(client: TestClient) -> None:
    client.get("/lookup", params={"number": MEM_NUMBER})  # some recent calls to summarise
    r = client.get("/sources")
    assert r.status_code == 200
    for s in page_settings().sources:
        assert f'data-source="{s.id}"' in r.text
    mem = r.text[r.text.index('data-source="mem_records"') :].split("</tr>")[0]
    assert "2026Q1" in mem and "100%" in mem


def test_the_certificate_asked_about_comes_first_and_the_holders_others_are_marked(client: TestClient) -> None:
    # 张小三's MEM card is asked about; his SAMR card (whose number, his ID number, sorts first) is found through it
    r = client.get("/lookup", params={"number": MEM_NUMBER})
    cards = re.findall(r'<article class="cert" aria-label="证书 ([^"]+)" data-matched-by="(\w*)">', r.text)
    assert [m for _, m in cards] == ["number", "holder"] and cards[0][0] == MEM_NUMBER
    other = r.text[r.text.index('data-matched-by="holder"') :].split("</header>")[0]
    assert "同一持证人的其他证书" in other
