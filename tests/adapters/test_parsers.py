"""Parsers, behaviour by behaviour: positive evidence only, loud parse errors, and each department's quirks."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest

from adapters.base import Captcha, HttpResponse, NotFound, ParseError, SourceError
from adapters.mem import MemAdapter
from adapters.mohurd import CERT_STATES, trade_of
from adapters.parsing import StatusTable, dotted_get, label_values, parse_date, soup_of
from adapters.registry import build_adapter
from adapters.request import replay
from adapters.samr import SamrAdapter, canonical_item, split_items
from aggregator.models import CertStatus, Query
from tests.adapters.test_fixtures import load_source
from tests.conftest import FIXTURES, TODAY

ZHANG = Query(number="T110105199003071239")


def run(source_id: str, *bodies: str | dict[str, Any], status: int = 200, query: Query = ZHANG) -> list[Any]:
    """Parse canned answers with a source's adapter (every step with `status`)."""
    source = load_source(source_id)
    adapter = SamrAdapter(source, today=lambda: TODAY) if source.adapter == "samr" else build_adapter(source)
    texts = [b if isinstance(b, str) else json.dumps(b, ensure_ascii=False) for b in bodies]
    responses = [HttpResponse(status, "http://sandbox.test/", {}, t) for t in texts]
    _, certs = replay(adapter.lookup(query), responses)
    return certs


def fixture(source_id: str, name: str) -> str:
    return (FIXTURES / source_id / name).read_text(encoding="utf-8")


SAMR_PERSON = {"success": True, "messageText": "", "data": {"ryxm": "李建军", "perId": "p1"}}


def samr_licence(**changes: str) -> dict[str, str]:
    base = {"ryxm": "李建军", "sfzh": "220104198507153216", "ryxb": "男", "zsbh": "220104198507153216",
            "zslb": "特种设备作业人员证", "cyzl": "特种设备焊接操作人员", "fzjg": "吉林省市场监督管理局",
            "fzjgszd": "吉林省", "czxm": "SMAW-FeⅡ-2G-12-Fef3J", "pzrq": "2021-04-08", "yxrqs": "2025-04-08",
            "yxrqz": "2029-04-07", "validFlag": "1"}  # fmt: skip
    return {**base, **changes}


def samr_licences(*licences: dict[str, str]) -> dict[str, Any]:
    return {"success": True, "messageText": "", "data": {"licList": list(licences)}}


# --- positive evidence --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source_id", "body"),
    [
        ("mem_api", fixture("mem_api", "captcha.json")),
        ("mem_api", fixture("mem_api", "captcha_page.html")),
        ("mohrss_html", fixture("mohrss_html", "captcha.html")),
        ("mohurd_api", fixture("mohurd_api", "captcha.html")),
        ("mohurd_api", fixture("mohurd_api", "captcha_json.json")),
        ("samr_api", fixture("samr_api", "captcha.step1.html")),
        ("samr_api", fixture("samr_api", "captcha_json.step1.json")),
    ],
)
def test_a_captcha_page_is_not_a_not_found(source_id: str, body: str) -> None:
    with pytest.raises(Captcha):
        run(source_id, body)


@pytest.mark.parametrize(
    ("source_id", "body", "where"),
    [
        ("mohrss_html", fixture("mohrss_html", "layout_changed.html"), "table.tab_info1"),
        ("mohrss_html", fixture("mohrss_html", "label_changed.html"), "table.tab_info1[1] 证书编号"),
        ("mem_api", fixture("mem_api", "layout_changed.json"), "data[0].zsbh"),
        ("mohurd_api", fixture("mohurd_api", "layout_changed.json"), "data[0].certNum"),
    ],
)
def test_a_changed_layout_is_a_parse_error_naming_the_selector(source_id: str, body: str, where: str) -> None:
    with pytest.raises(ParseError) as err:
        run(source_id, body)
    assert err.value.where == where
    assert f"parsing error at {where}" in str(err.value)


@pytest.mark.parametrize("source_id", ["mem_api", "mohurd_api"])
def test_truncated_json_is_a_parse_error(source_id: str) -> None:
    whole = fixture(source_id, "several.json")
    for cut in (1, len(whole) // 3, len(whole) - 3):
        with pytest.raises(ParseError) as err:
            run(source_id, whole[:cut])
        assert err.value.where == "body"


def test_a_truncated_html_page_is_a_parse_error_even_when_its_tables_parse() -> None:
    page = fixture("mohrss_html", "one.html")
    cut = page[: page.index("</html>")]  # every table complete, the end of the page missing
    with pytest.raises(ParseError, match="cut short"):
        run("mohrss_html", cut)


@pytest.mark.parametrize(
    ("source_id", "body"),
    [
        ("mem_api", {"code": 200, "msg": "查询成功", "data": []}),
        ("mem_api", {"code": 200, "msg": "查询成功"}),
        ("mem_api", {"status": "ok"}),
        ("mohurd_api", {"code": "0", "message": "success"}),
        ("mohurd_api", {"code": "0", "message": "success", "data": "none"}),
        ("mohrss_html", "<html><body><div id='nores_txt'><h2>请输入查询条件</h2></div></body></html>"),
        ("mohrss_html", "<html><body><p>加载中，请稍候……</p></body></html>"),
        ("mohrss_html", ""),
    ],
)
def test_an_answer_without_markers_is_never_not_found(source_id: str, body: str | dict[str, Any]) -> None:
    with pytest.raises(SourceError) as err:
        run(source_id, body)
    assert not isinstance(err.value, NotFound)
    assert err.value.kind.value == "parse_error"


def test_the_not_found_marker_needs_its_text() -> None:
    with pytest.raises(NotFound):
        run("mohrss_html", "<html><body><div id='nores_txt'><h2>对不起，没有查到相关信息！</h2></div></body></html>")


def test_a_record_that_is_not_an_object_is_a_parse_error() -> None:
    with pytest.raises(ParseError) as err:
        run("mohurd_api", {"code": "0", "message": "success", "data": ["京A012019000939"]})
    assert err.value.where == "data[0]"


@pytest.mark.parametrize("status", [500, 502, 504])
def test_server_errors_are_retryable_upstream_errors(status: int) -> None:
    with pytest.raises(SourceError) as err:
        run("mohurd_api", "<html><body><h1>Bad Gateway</h1></body></html>", status=status)
    assert err.value.kind.value == "upstream_error" and err.value.retryable


def test_a_404_is_an_upstream_error_that_is_not_retried() -> None:
    with pytest.raises(SourceError) as err:
        run("mohurd_api", "<html><body>Not Found</body></html>", status=404)
    assert err.value.kind.value == "upstream_error" and not err.value.retryable


def test_a_401_is_blocked() -> None:
    with pytest.raises(SourceError) as err:
        run("mohurd_api", {"code": "1", "message": "未授权：缺少或无效的访问令牌"}, status=401)
    assert err.value.kind.value == "blocked"


def test_429_keeps_retry_after() -> None:
    source = load_source("mem_api")
    flow = build_adapter(source).lookup(ZHANG)
    next(flow)
    with pytest.raises(SourceError) as err:
        flow.send(HttpResponse(429, "http://sandbox.test/", {"retry-after": "30"}, "<h2>请求过于频繁</h2>"))
    assert err.value.kind.value == "rate_limited" and err.value.suspend_s == 30


# --- MEM: current and history -------------------------------------------------------------------


def mem_record(**changes: str | None) -> dict[str, str | None]:
    base = json.loads(fixture("mem_api", "one.json"))["data"][0]
    return {**base, **changes}


def test_history_never_shows_as_the_current_certificate() -> None:
    current = mem_record()
    older = mem_record(yxqksrq="2018-10-30", yxqjsrq="2024-10-29", zszt="有效", sjlx="history")
    certs = run("mem_api", {"code": 200, "msg": "查询成功", "data": [older, current]})
    assert len(certs) == 1
    assert certs[0].valid_until == date(2030, 10, 29) and certs[0].status == CertStatus.VALID


def test_an_item_only_in_history_is_reported_marked_and_not_valid() -> None:
    weld = mem_record(zylb="焊接与热切割作业", czxm="熔化焊接与热切割作业", zszt="有效", sjlx="history")
    revoked = mem_record(zylb="高处作业", czxm="登高架设作业", zszt="吊销", sjlx="history")
    certs = run("mem_api", {"code": 200, "msg": "查询成功", "data": [weld, revoked]})
    by_item = {c.operation_item: c for c in certs}
    assert by_item["熔化焊接与热切割作业"].status == CertStatus.EXPIRED
    assert by_item["熔化焊接与热切割作业"].status_text == "历史数据：有效"
    assert by_item["登高架设作业"].status == CertStatus.REVOKED


def test_an_unknown_record_type_is_a_parse_error() -> None:
    with pytest.raises(ParseError) as err:
        run("mem_api", {"code": 200, "msg": "查询成功", "data": [mem_record(sjlx="archived")]})
    assert err.value.where == "data[0].sjlx"


def test_mem_status_words_map_through_the_config_table() -> None:
    expected = {"有效": "valid", "暂扣": "suspended", "吊销": "revoked", "撤销": "revoked", "注销": "revoked",
                "过期": "expired", "冻结": "unknown"}  # fmt: skip
    for word, status in expected.items():
        (cert,) = run("mem_api", {"code": 200, "msg": "查询成功", "data": [mem_record(zszt=word)]})
        assert (cert.status.value, cert.status_text) == (status, word)


def test_mem_adapter_is_the_registered_one() -> None:
    assert isinstance(build_adapter(load_source("mem_api")), MemAdapter)


# --- SAMR: items and flags ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "written",
    [
        "GTAW-FeⅡ-6G-3/60-FefS-02/10/12",  # as on the card
        "GTAW-FeII-6G-3/60-FefS-02/10/12",  # ASCII Roman numerals
        "GTAW-FEII-6G-3/60-FEFS-02/10/12",  # upper-cased by the platform
        "gtaw-feⅱ-6g-3/60-fefs-02/10/12",  # lower-case Roman numeral character
        "ＧＴＡＷ－ＦｅⅡ－６Ｇ－３／６０－ＦｅｆＳ－０２／１０／１２",  # full-width
        " GTAW - FeII - 6G-3/60-FefS-02/10/12 ",
    ],
)
def test_samr_item_spellings_become_one(written: str) -> None:
    assert canonical_item(written) == "GTAW-FeⅡ-6G-3/60-FefS-02/10/12"


def test_samr_items_split_on_he_and_keep_order() -> None:
    text = "GTAW-FeⅣ-6G-3/60-FefS-02/10/12和SMAW-FEII-3G(K)-12-FEF3J和SAW-1G(K)-07/09/19"
    assert split_items(text) == ["GTAW-FeⅣ-6G-3/60-FefS-02/10/12", "SMAW-FeⅡ-3G(K)-12-Fef3J", "SAW-1G(K)-07/09/19"]
    assert split_items("q2") == ["Q2"]
    assert split_items("GTAW-FeIV-6G-3/60-FefS-02/10/12和GTAW-FeⅣ-6G-3/60-FefS-02/10/12") == [
        "GTAW-FeⅣ-6G-3/60-FefS-02/10/12"
    ]
    assert split_items("") == [] and split_items(None) == []


def test_samr_certificate_carries_split_items_and_their_join() -> None:
    licence = samr_licence(czxm="GTAW-FEII-6G-3/60-FEFS-02/10/12和SMAW-FeII-2G-12-Fef3J")
    (cert,) = run("samr_api", SAMR_PERSON, samr_licences(licence), query=Query(number="220104198507153216"))
    assert cert.items == ["GTAW-FeⅡ-6G-3/60-FefS-02/10/12", "SMAW-FeⅡ-2G-12-Fef3J"]
    assert cert.operation_item == "GTAW-FeⅡ-6G-3/60-FefS-02/10/12和SMAW-FeⅡ-2G-12-Fef3J"
    assert cert.number == "220104198507153216" and cert.category == "特种设备焊接操作人员"


@pytest.mark.parametrize(
    ("flag", "until", "status"),
    [("1", "2029-04-07", "valid"), ("0", "2024-05-31", "expired"), ("0", "2029-04-07", "unknown")],
)
def test_samr_valid_flag(flag: str, until: str, status: str) -> None:
    licence = samr_licence(validFlag=flag, yxrqz=until)
    (cert,) = run("samr_api", SAMR_PERSON, samr_licences(licence), query=Query(number="220104198507153216"))
    assert cert.status.value == status


def test_samr_empty_licence_list_after_a_found_person_is_a_parse_error() -> None:
    with pytest.raises(ParseError) as err:
        run("samr_api", SAMR_PERSON, samr_licences(), query=Query(number="220104198507153216"))
    assert err.value.where == "data.licList"


# --- MOHURD: states and trades ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "status", "text"),
    [("01", "valid", "有效"), ("02", "suspended", "暂扣"), ("03", "revoked", "吊销"), ("04", "revoked", "撤销"),
     ("05", "revoked", "注销"), ("06", "expired", "失效"), ("99", "unknown", "其他"), ("07", "unknown", "07")],
)  # fmt: skip
def test_mohurd_cert_state_mapping(state: str, status: str, text: str) -> None:
    record = json.loads(fixture("mohurd_api", "one.json"))["data"][0] | {"certState": state}
    (cert,) = run("mohurd_api", {"code": "0", "message": "success", "data": [record]})
    assert (cert.status.value, cert.status_text) == (status, text)


def test_mohurd_cert_states_are_the_schema_codes() -> None:
    assert list(CERT_STATES) == ["01", "02", "03", "04", "05", "06", "99"]


@pytest.mark.parametrize(("gender", "words"), [("1", "男"), ("2", "女"), (1, "男")])
def test_mohurd_gender_codes(gender: object, words: str) -> None:
    record = json.loads(fixture("mohurd_api", "one.json"))["data"][0] | {"gender": gender}
    (cert,) = run("mohurd_api", {"code": "0", "message": "success", "data": [record]})
    assert cert.gender == words


def test_mohurd_other_trade_is_named_by_its_brackets() -> None:
    assert trade_of("其他工种类别（建筑焊工）", "99") == ("其他工种类别（建筑焊工）", "建筑焊工")
    assert trade_of("其他工种类别(建筑焊工)", "99") == ("其他工种类别(建筑焊工)", "建筑焊工")
    assert trade_of("建筑起重机械司机（塔式起重机）", "05") == (
        "建筑起重机械司机（塔式起重机）",
        "建筑起重机械司机（塔式起重机）",
    )
    assert trade_of("", "11") == ("高处作业吊篮安装拆卸工", "高处作业吊篮安装拆卸工")
    assert trade_of(None, None) == (None, None)


# --- helpers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2023-06-30", date(2023, 6, 30)), ("2023/6/3", date(2023, 6, 3)), ("2023.06.30", date(2023, 6, 30)),
     ("2023年6月30日", date(2023, 6, 30)), ("20230630", date(2023, 6, 30)), ("2023-06-30 00:00:00", date(2023, 6, 30)),
     ("２０２３－０６－３０", date(2023, 6, 30)), ("", None), (None, None)],
)  # fmt: skip
def test_dates_as_departments_write_them(text: str | None, expected: date | None) -> None:
    assert parse_date(text, "f") == expected


@pytest.mark.parametrize("text", ["2023-02-30", "30/06/2023", "长期", "2023-06"])
def test_a_value_that_is_not_a_date_names_its_field(text: str) -> None:
    with pytest.raises(ParseError) as err:
        parse_date(text, "data[0].yxqjsrq")
    assert err.value.where == "data[0].yxqjsrq"


def test_dotted_paths() -> None:
    body = {"data": {"licList": [{"zsbh": "1"}, {"zsbh": None}]}}
    assert dotted_get(body, "data.licList[0].zsbh") == "1"
    assert dotted_get(body, "data.licList.1.zsbh") is None
    assert dotted_get(body, "data.licList[2].zsbh", "absent") == "absent"
    assert dotted_get(body, "data.perId", "absent") == "absent"


def test_an_unmapped_status_is_unknown_never_valid() -> None:
    table = StatusTable({"有效": CertStatus.VALID})
    assert table.map("有效") == CertStatus.VALID
    assert table.map(" 有效 ") == CertStatus.VALID
    assert table.map("有效期内") == CertStatus.UNKNOWN
    assert table.map(None) == CertStatus.UNKNOWN


def test_label_value_cells() -> None:
    table = soup_of(
        "<table><tr><th>姓名</th><td>张伟</td><th>性别：</th><td> 男 </td></tr>"
        "<tr><td class='lab'>职业（工种）</td><td>电工</td><td class='lab'>等级</td></tr></table>"
    ).select_one("table")
    assert table is not None
    assert label_values(table, "th, td.lab") == [("姓名", "张伟"), ("性别", "男"), ("职业(工种)", "电工"), ("等级", "")]
