"""The sandbox sites: each endpoint in its documented shape (docs/sources.md), and every fault switch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from bs4 import BeautifulSoup
from click.testing import CliRunner

from aggregator.models import CertStatus, Department
from aggregator.sandbox.cli import parse_faults, sandbox_command
from aggregator.sandbox.dataset import FIXED_HOLDERS, MOHRSS_LIU, MOHURD_YANG, MOHURD_ZHANG, MOHURD_ZHOU, generate
from aggregator.sandbox.faults import BAN_MESSAGE, FaultState
from aggregator.sandbox.server import Sandbox, default_ports
from tests.conftest import TODAY

ZHANG, LI, LIU = FIXED_HOLDERS[0], FIXED_HOLDERS[1], FIXED_HOLDERS[2]
MEM_PATH = "/prod-api/certsearch/certInfo/netQuery"
SAMR_STEP1 = "/info-pub/pub/remotePubQuery.json"
SAMR_STEP2 = "/info-pub/pub/getPerInfoBySfzh.json"
MOHRSS_PATH = "/zscx/query"
MOHURD_PATH = "/api/v1/certs"
MEM_FIELDS = {"xm", "xb", "sfzh", "zsbh", "zylb", "czxm", "clrq", "yxqksrq", "yxqjsrq", "yfsrq", "sjfsrq", "qfjg",
              "zszt", "sjlx"}  # fmt: skip
SAMR_FIELDS = {"ryxm", "sfzh", "ryxb", "zsbh", "zslb", "cyzl", "fzjg", "fzjgszd", "czxm", "pzrq", "yxrqs", "yxrqz",
               "validFlag"}  # fmt: skip
MOHURD_FIELDS = {"certNum", "name", "gender", "identityCard", "operationCategory", "categoryDescription", "issuAuth",
                 "issuedDate", "effectiveDate", "expiringDate", "certState"}  # fmt: skip


@pytest.fixture(scope="module")
def dataset():
    return generate(seed=2026, holders=300, today=TODAY)


@pytest.fixture
async def sb(dataset) -> AsyncIterator[Sandbox]:
    async with Sandbox(dataset) as sandbox:
        yield sandbox


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # Cookies from an IP address (127.0.0.1) need unsafe=True in aiohttp's jar.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


async def mem(http: aiohttp.ClientSession, sb: Sandbox, id_card: str) -> tuple[int, Any]:
    async with http.post(sb.urls["mem_api"] + MEM_PATH, json={"idCard": id_card}) as r:
        return r.status, await r.json(content_type=None)


async def mohurd(http: aiohttp.ClientSession, sb: Sandbox, **params: str) -> tuple[int, Any]:
    async with http.get(sb.urls["mohurd_api"] + MOHURD_PATH, params=params) as r:
        return r.status, await r.json(content_type=None)


async def mohrss(http: aiohttp.ClientSession, sb: Sandbox, **form: str) -> tuple[int, str]:
    async with http.post(sb.urls["mohrss_html"] + MOHRSS_PATH, data=form) as r:
        return r.status, await r.text()


async def samr_step1(http: aiohttp.ClientSession, sb: Sandbox, keyword: str) -> tuple[int, Any]:
    async with http.get(sb.urls["samr_api"] + SAMR_STEP1, params={"keyword": keyword}) as r:
        return r.status, await r.json(content_type=None)


async def samr_step2(http: aiohttp.ClientSession, sb: Sandbox, sfzh: str, per_id: str) -> tuple[int, Any]:
    async with http.get(sb.urls["samr_api"] + SAMR_STEP2, params={"sfzh": sfzh, "perId": per_id}) as r:
        return r.status, await r.json(content_type=None)


# --- endpoints in their documented shapes ---------------------------------------------------------------


async def test_urls_name_the_four_sources_on_loopback(sb: Sandbox) -> None:
    assert set(sb.urls) == {"mem_api", "samr_api", "mohrss_html", "mohurd_api"}
    assert all(u.startswith("http://127.0.0.1:") for u in sb.urls.values())
    assert len(set(sb.urls.values())) == 4


async def test_mem_found_has_current_and_history_records(sb: Sandbox, http) -> None:
    status, body = await mem(http, sb, ZHANG.id_number)
    assert status == 200 and body["code"] == 200 and body["msg"] == "查询成功"
    kinds = [r["sjlx"] for r in body["data"]]
    assert kinds.count("current") == 1 and kinds.count("history") >= 1
    current = next(r for r in body["data"] if r["sjlx"] == "current")
    assert set(current) == MEM_FIELDS
    assert current["zsbh"] == "T" + ZHANG.id_number and current["xm"] == "张伟" and current["xb"] == "男"
    assert current["zylb"] == "电工作业" and current["czxm"] == "低压电工作业" and current["zszt"] == "有效"
    assert current["qfjg"] == "北京市应急管理局"
    history = next(r for r in body["data"] if r["sjlx"] == "history")
    assert history["zszt"] == "过期" and history["yxqjsrq"] < current["yxqksrq"]


async def test_mem_not_found_and_bad_id(sb: Sandbox, http, dataset) -> None:
    status, body = await mem(http, sb, dataset.canaries[Department.MEM][1][1:])
    assert (status, body) == (200, {"code": 200, "msg": "未查询到相关证书信息", "data": []})
    status, body = await mem(http, sb, "12345")
    assert status == 200 and body["code"] == 500 and "身份证号" in body["msg"]


async def test_mem_serves_live_state_where_the_upload_differs(sb: Sandbox, http, dataset) -> None:
    wu = FIXED_HOLDERS[7]
    _, body = await mem(http, sb, wu.id_number)
    uploaded = next(c for c in dataset.uploaded[Department.MEM] if c.holder_id_number == wu.id_number)
    assert body["data"][0]["yxqjsrq"] > uploaded.valid_until.isoformat()


async def test_samr_two_steps_with_session_cookie(sb: Sandbox, http) -> None:
    status, body = await samr_step1(http, sb, LI.id_number)
    assert status == 200 and body["success"] is True and body["messageText"] == ""
    person = body["data"]
    assert person["ryxm"] == "李建军" and person["zsbh"] == LI.id_number and person["perId"]
    assert any(c.key == "SESSION" for c in http.cookie_jar)
    status, body = await samr_step2(http, sb, LI.id_number, person["perId"])
    assert status == 200 and body["success"] is True
    [lic] = body["data"]["licList"]
    assert set(lic) == SAMR_FIELDS
    assert lic["zsbh"] == LI.id_number and lic["cyzl"] == "特种设备焊接操作人员" and lic["validFlag"] == "1"
    assert lic["czxm"] == "GTAW-FeⅡ-6G-3/60-FefS-02/10/12和SMAW-FeⅡ-2G-12-Fef3J"
    assert lic["zslb"] == "特种设备作业人员证" and lic["fzjgszd"] == "吉林省"


async def test_samr_step2_rejects_a_missing_or_wrong_cookie(sb: Sandbox, http) -> None:
    _, body = await samr_step1(http, sb, LI.id_number)
    per_id = body["data"]["perId"]
    async with aiohttp.ClientSession() as fresh:  # no cookie at all
        status, body = await samr_step2(fresh, sb, LI.id_number, per_id)
    assert status == 401 and body == {"success": False, "messageText": "会话已失效"}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as forged:
        forged.cookie_jar.update_cookies(
            {"SESSION": "not-a-session"}, response_url=aiohttp.client.URL(sb.urls["samr_api"])
        )
        status, _ = await samr_step2(forged, sb, LI.id_number, per_id)
    assert status == 401


async def test_samr_step2_refuses_a_per_id_from_another_person(sb: Sandbox, http, dataset) -> None:
    _, body = await samr_step1(http, sb, LI.id_number)
    other = FIXED_HOLDERS[10].id_number
    status, body = await samr_step2(http, sb, other, body["data"]["perId"])
    assert status == 200 and body["success"] is False and "licList" not in str(body)


async def test_samr_not_found(sb: Sandbox, http, dataset) -> None:
    status, body = await samr_step1(http, sb, dataset.canaries[Department.SAMR][1])
    assert (status, body) == (200, {"success": True, "messageText": "未查询到该人员的持证信息", "data": None})


async def test_samr_valid_flag_is_0_for_certificates_not_in_force(sb: Sandbox, http, dataset) -> None:
    holder = next(c for c in dataset.live[Department.SAMR] if c.effective_status(TODAY) != CertStatus.VALID)
    _, body = await samr_step1(http, sb, holder.holder_id_number)
    _, body = await samr_step2(http, sb, holder.holder_id_number, body["data"]["perId"])
    assert [lic["validFlag"] for lic in body["data"]["licList"]] == ["0"]


def _tables(html: str) -> list[dict[str, str]]:
    soup = BeautifulSoup(html, "lxml")
    out = []
    for table in soup.select("table.tab_info1"):
        cells: dict[str, str] = {}
        for label in table.select("th, td.lab"):
            value = label.find_next_sibling("td")
            cells[label.get_text(strip=True)] = value.get_text(strip=True) if value else ""
        out.append(cells)
    return out


async def test_mohrss_by_id_and_by_number(sb: Sandbox, http) -> None:
    for form in (
        {"CID": LIU.id_number},
        {"zsbh": MOHRSS_LIU},
        {"CID": LIU.id_number, "zsbh": MOHRSS_LIU, "name": "刘洋"},
    ):
        status, html = await mohrss(http, sb, **form)
        assert status == 200
        person, cert = _tables(html)
        assert person == {"姓名": "刘洋", "性别": "男", "身份证号": LIU.id_number}
        assert cert["证书编号"] == MOHRSS_LIU and cert["职业（工种）"] == "电工" and cert["等级"] == "四级/中级工"
        assert cert["证书类型"] == "职业技能等级证书" and cert["评价机构"] and cert["发证日期"] == "2023-07-20"


async def test_mohrss_older_qualification_names_its_issuer(sb: Sandbox, http) -> None:
    _, html = await mohrss(http, sb, zsbh="0813011023400571")
    _, cert = _tables(html)
    assert cert["证书类型"] == "职业资格证书" and cert["发证机关"].endswith("职业技能鉴定指导中心")


async def test_mohrss_not_found_and_empty_form(sb: Sandbox, http, dataset) -> None:
    status, html = await mohrss(http, sb, zsbh=dataset.canaries[Department.MOHRSS][1])
    soup = BeautifulSoup(html, "lxml")
    assert status == 200 and soup.select_one("#nores_txt h2").get_text() == "对不起，没有查到相关信息！"
    assert not soup.select("table.tab_info1")
    status, _ = await mohrss(http, sb, name="刘洋")
    assert status == 400


async def test_mohurd_by_number_and_by_id(sb: Sandbox, http) -> None:
    status, body = await mohurd(http, sb, certNum=MOHURD_ZHANG)
    assert status == 200 and body["code"] == "0" and body["message"] == "success"
    [cert] = body["data"]
    assert set(cert) == MOHURD_FIELDS
    assert cert["certNum"] == MOHURD_ZHANG and cert["operationCategory"] == "01" and cert["gender"] == "1"
    assert cert["categoryDescription"] == "建筑电工" and cert["certState"] == "01"
    _, by_id = await mohurd(http, sb, identityCard=ZHANG.id_number)
    assert by_id["data"] == body["data"]


async def test_mohurd_states_and_not_found(sb: Sandbox, http, dataset) -> None:
    _, body = await mohurd(http, sb, certNum=MOHURD_YANG)
    assert body["data"][0]["certState"] == "02"
    _, body = await mohurd(http, sb, certNum=MOHURD_ZHOU)  # uploaded as valid, suspended live since
    assert body["data"][0]["certState"] == "02"
    assert next(c for c in dataset.uploaded[Department.MOHURD] if c.number == MOHURD_ZHOU).status == CertStatus.VALID
    status, body = await mohurd(http, sb, certNum=dataset.canaries[Department.MOHURD][1])
    assert (status, body) == (200, {"code": "0", "message": "无数据", "data": []})
    status, body = await mohurd(http, sb)
    assert status == 400 and body["code"] == "1"


# --- fault switches ---------------------------------------------------------------------------------------


async def _post_faults(http, sb: Sandbox, site: str, payload: Any) -> tuple[int, Any]:
    async with http.post(sb.urls[site] + "/_sandbox/faults", json=payload) as r:
        return r.status, await r.json()


async def test_faults_endpoint_sets_shows_and_clears(sb: Sandbox, http) -> None:
    url = sb.urls["mohurd_api"] + "/_sandbox/faults"
    async with http.get(url) as r:
        assert (await r.json())["captcha"] is False
    status, body = await _post_faults(http, sb, "mohurd_api", {"captcha": True, "latency_ms": 5})
    assert status == 200 and body["captcha"] is True and body["latency_ms"] == 5
    status, body = await _post_faults(http, sb, "mohurd_api", {"ban": True})
    assert body["captcha"] is True and body["ban"] is True  # earlier switches stay on
    async with http.delete(url) as r:
        assert (await r.json())["captcha"] is False
    _, body = await mohurd(http, sb, certNum=MOHURD_ZHANG)
    assert body["code"] == "0"


async def test_faults_endpoint_rejects_unknown_switches_and_bad_values(sb: Sandbox, http) -> None:
    status, body = await _post_faults(http, sb, "mem_api", {"captchaa": True})
    assert status == 400 and "captchaa" in body["error"]
    status, body = await _post_faults(http, sb, "mem_api", {"error_kinds": ["418"]})
    assert status == 400 and "error_kinds" in body["error"]
    status, body = await _post_faults(http, sb, "mem_api", ["captcha"])
    assert status == 400
    assert sb.faults("mem") == (await (await http.get(sb.urls["mem_api"] + "/_sandbox/faults")).json())
    assert sb.faults("mem")["error_kinds"] == ["500", "502", "504"]


@pytest.mark.parametrize("kind", ["500", "502", "504"])
async def test_error_rate_answers_the_chosen_status(sb: Sandbox, http, kind: str) -> None:
    await sb.set_faults("mohurd", error_rate=1.0, error_kinds=[kind])
    status, _ = await _raw(http, "GET", sb.urls["mohurd_api"] + MOHURD_PATH, params={"certNum": MOHURD_ZHANG})
    assert status == int(kind)


async def _raw(http, method: str, url: str, **kw: Any) -> tuple[int, str]:
    async with http.request(method, url, **kw) as r:
        return r.status, await r.text(errors="replace")


async def test_error_rate_is_a_fraction_of_requests(sb: Sandbox, http) -> None:
    await sb.set_faults("mohurd", error_rate=0.5, error_kinds="502")
    statuses = [(await _first_request(http, sb, "mohurd_api"))[0] for _ in range(40)]
    assert 5 <= statuses.count(502) <= 35 and 5 <= statuses.count(200) <= 35


async def test_reset_closes_the_connection(sb: Sandbox, http) -> None:
    await sb.set_faults("mem", error_rate=1.0, error_kinds=["reset"])
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await mem(http, sb, ZHANG.id_number)
    assert sb.stats("mem")["faults"]["reset"] == 1


async def test_hang_is_cut_by_the_client_timeout(sb: Sandbox, http) -> None:
    await sb.set_faults("samr", error_rate=1.0, error_kinds=["hang"])
    with pytest.raises(asyncio.TimeoutError):
        async with http.get(
            sb.urls["samr_api"] + SAMR_STEP1, params={"keyword": LI.id_number}, timeout=aiohttp.ClientTimeout(total=0.3)
        ) as r:
            await r.read()
    assert sb.stats("samr")["faults"]["hang"] == 1
    await sb.clear_faults("samr")
    status, _ = await samr_step1(http, sb, LI.id_number)  # the site still answers others
    assert status == 200


async def test_latency_delays_beyond_a_short_client_timeout(sb: Sandbox, http) -> None:
    await sb.set_faults("mohurd", latency_ms=5000)
    with pytest.raises(asyncio.TimeoutError):
        await http.get(sb.urls["mohurd_api"] + MOHURD_PATH, params={"certNum": MOHURD_ZHANG},
                       timeout=aiohttp.ClientTimeout(total=0.2))  # fmt: skip


def test_latency_draws_fixed_uniform_and_exponential_delays() -> None:
    state = FaultState("t", {"latency_ms": 150})
    assert state.delay_s() == pytest.approx(0.150)
    state.update({"latency_jitter_ms": 50})
    draws = [state.delay_s() for _ in range(200)]
    assert all(0.150 <= d <= 0.200 for d in draws) and len(set(draws)) > 100
    state.update({"latency_distribution": "exponential"})
    draws = [state.delay_s() for _ in range(500)]
    assert min(draws) >= 0.150 and max(draws) > 0.250  # a tail past the uniform range


@pytest.mark.parametrize(
    ("site", "check"),
    [
        ("mem_api", lambda status, text: '"code": 500' in text and "验证码" in text),
        ("samr_api", lambda status, text: '"success": false' in text and "验证码" in text),
        ("mohrss_html", lambda status, text: "<form" in text and "<img" in text and "验证码" in text),
        ("mohurd_api", lambda status, text: '"code": "1"' in text and "验证码" in text),
    ],
)
async def test_captcha_page_comes_with_http_200_in_each_sites_way(sb: Sandbox, http, site: str, check) -> None:
    await sb.set_faults(site, captcha=True)
    status, text = await _first_request(http, sb, site)
    assert status == 200 and check(status, text)
    assert "查询成功" not in text and "未查询到" not in text and "没有查到" not in text


async def _first_request(http, sb: Sandbox, site: str) -> tuple[int, str]:
    url = sb.urls[site]
    if site == "mem_api":
        return await _raw(http, "POST", url + MEM_PATH, json={"idCard": ZHANG.id_number})
    if site == "samr_api":
        return await _raw(http, "GET", url + SAMR_STEP1, params={"keyword": LI.id_number})
    if site == "mohrss_html":
        return await _raw(http, "POST", url + MOHRSS_PATH, data={"CID": LIU.id_number})
    return await _raw(http, "GET", url + MOHURD_PATH, params={"certNum": MOHURD_ZHANG})


@pytest.mark.parametrize("site", ["mem_api", "samr_api", "mohrss_html", "mohurd_api"])
async def test_ban_maintenance_and_rate_limit(sb: Sandbox, http, site: str) -> None:
    await sb.set_faults(site, ban=True)
    status, text = await _first_request(http, sb, site)
    assert status == 403 and BAN_MESSAGE in text
    await sb.clear_faults(site)
    await sb.set_faults(site, maintenance=True)
    status, text = await _first_request(http, sb, site)
    assert status == 503 and "系统维护" in text
    await sb.clear_faults(site)
    await sb.set_faults(site, rate_limit_retry_after=30)
    async with http.get(sb.urls[site] + "/anything") as r:
        assert r.status == 429 and r.headers["Retry-After"] == "30"


@pytest.mark.parametrize("site", ["mem_api", "samr_api", "mohrss_html", "mohurd_api"])
async def test_garbage_is_neither_a_result_nor_a_not_found(sb: Sandbox, http, site: str) -> None:
    await sb.set_faults(site, garbage=True)
    markers = ("zsbh", "licList", "perId", "tab_info1", "certNum", "未查询到", "没有查到", "无数据", "验证码")
    for _ in range(8):
        status, text = await _first_request(http, sb, site)
        assert status == 200 and not any(m in text for m in markers)
    assert sb.stats(site)["faults"]["garbage"] == 8


async def test_layout_changed_renames_fields_and_classes(sb: Sandbox, http) -> None:
    for site in ("mem", "samr", "mohrss", "mohurd"):
        await sb.set_faults(site, layout_changed=True)
    _, body = await mem(http, sb, ZHANG.id_number)
    assert body["code"] == 200 and body["data"] and "zsbh" not in body["data"][0] and "certNo" in body["data"][0]
    _, person = await samr_step1(http, sb, LI.id_number)
    _, body = await samr_step2(http, sb, LI.id_number, person["data"]["perId"])
    assert "licList" not in body["data"] and body["data"]["certList"][0]["certNo"] == LI.id_number
    _, html = await mohrss(http, sb, CID=LIU.id_number)
    assert "tab_info1" not in html and MOHRSS_LIU in html and "没有查到" not in html
    _, body = await mohurd(http, sb, certNum=MOHURD_ZHANG)
    assert "certNum" not in body["data"][0] and body["data"][0]["certificateNo"] == MOHURD_ZHANG


async def test_fail_next_fails_n_requests_with_502_then_recovers(sb: Sandbox, http) -> None:
    await sb.set_faults("mohurd", fail_next=2)
    statuses = [(await _first_request(http, sb, "mohurd_api"))[0] for _ in range(4)]
    assert statuses == [502, 502, 200, 200]
    assert sb.faults("mohurd")["fail_next"] == 0


async def test_faults_given_at_start_by_site_or_source_id(dataset, http) -> None:
    async with Sandbox(dataset, faults={"mem_api": {"captcha": True}, "mohurd": {"ban": "1"}}) as sb:
        assert (await mem(http, sb, ZHANG.id_number))[1]["msg"] == "验证码错误或已失效"
        assert (await _first_request(http, sb, "mohurd_api"))[0] == 403
        assert (await _first_request(http, sb, "samr_api"))[0] == 200
    with pytest.raises(ValueError, match="unknown sandbox site"):
        Sandbox(dataset, faults={"nowhere": {"captcha": True}})


async def test_require_token(dataset, http) -> None:
    async with Sandbox(dataset, require_token="s3cret") as sb:
        status, body = await mem(http, sb, ZHANG.id_number)
        assert status == 401 and body["code"] == 401
        async with http.post(sb.urls["mem_api"] + MEM_PATH, json={"idCard": ZHANG.id_number},
                             headers={"Authorization": "Bearer s3cret"}) as r:  # fmt: skip
            assert r.status == 200 and (await r.json())["data"]


async def test_any_token_is_accepted_by_default(sb: Sandbox, http) -> None:
    async with http.post(sb.urls["mem_api"] + MEM_PATH, json={"idCard": ZHANG.id_number},
                         headers={"Authorization": "Bearer whatever"}) as r:  # fmt: skip
        assert r.status == 200


async def test_stats_count_requests_per_endpoint_but_not_control_calls(sb: Sandbox, http) -> None:
    for _ in range(3):
        await samr_step1(http, sb, LI.id_number)
    _, body = await samr_step1(http, sb, LI.id_number)
    await samr_step2(http, sb, LI.id_number, body["data"]["perId"])
    await sb.set_faults("samr", fail_next=1)
    assert (await _first_request(http, sb, "samr_api"))[0] == 502
    async with http.get(sb.urls["samr_api"] + "/_sandbox/stats") as r:
        stats = await r.json()
    assert stats == sb.stats("samr")
    assert stats["endpoints"] == {SAMR_STEP1: 5, SAMR_STEP2: 1}
    assert stats["total"] == 6 and stats["faults"] == {"fail_next": 1}
    assert sb.stats("mem")["total"] == 0


def test_default_ports_and_port_bases() -> None:
    assert default_ports() == {"mem": 18701, "samr": 18702, "mohrss": 18703, "mohurd": 18704}
    assert set(default_ports(0).values()) == {0}


def test_fault_options_parse_and_bad_ones_are_refused() -> None:
    assert parse_faults(("mem:captcha=1", "samr:latency_ms=200", "samr:error_kinds=500,reset")) == {
        "mem": {"captcha": "1"},
        "samr": {"latency_ms": "200", "error_kinds": "500,reset"},
    }
    runner = CliRunner()
    for bad, says in (("mem-captcha", "SITE:KEY=VALUE"), ("moon:captcha=1", "unknown sandbox site"),
                      ("mem:captcha=maybe", "captcha"), ("mem:error_rate=2", "error_rate")):  # fmt: skip
        result = runner.invoke(sandbox_command, ["--holders", "0", "--fault", bad])
        assert result.exit_code == 2 and says in result.output, (bad, result.output)
