"""Request building: the right URL, parameters and body for each source, the ID derived from the number, the
credentials header, and the configuration errors that name file and key."""

from __future__ import annotations

import pytest

from adapters.base import HttpRequest, HttpResponse
from adapters.registry import build_adapter
from adapters.request import AdapterConfigError, query_vars
from aggregator.config import ConfigError, SourceConfig
from aggregator.models import Mode, Query
from tests.adapters.test_fixtures import load_source

ZHANG_ID = "110105199003071239"


def first_request(source_id: str, query: Query) -> HttpRequest:
    return next(build_adapter(load_source(source_id)).lookup(query))


def with_options(source_id: str, **changes: object) -> SourceConfig:
    source = load_source(source_id)
    return source.model_copy(update={"options": {**source.options, **changes}})


# --- which identifier is sent -------------------------------------------------------------------


def test_mem_is_asked_by_the_id_inside_a_t_number() -> None:
    req = first_request("mem_api", Query(number="T" + ZHANG_ID))
    assert req.method == "POST"
    assert req.url == "http://127.0.0.1:18701/prod-api/certsearch/certInfo/netQuery"
    assert req.json == {"idCard": ZHANG_ID}
    assert req.params is None and req.data is None


def test_mem_sends_the_name_only_when_given() -> None:
    req = first_request("mem_api", Query(number=ZHANG_ID, name="张伟"))
    assert req.json == {"idCard": ZHANG_ID, "name": "张伟"}


def test_an_explicit_id_number_wins_over_the_number() -> None:
    req = first_request("mem_api", Query(number="京A012019000939", id_number="220104198507153216"))
    assert req.json == {"idCard": "220104198507153216"}


def test_query_vars_tell_certificate_numbers_from_ids() -> None:
    assert query_vars(Query(number="T" + ZHANG_ID)) == {
        "number": "T" + ZHANG_ID,
        "id_number": ZHANG_ID,
        "cert_number": "",
        "name": "",
    }
    assert query_vars(Query(number="京A012019000939"))["cert_number"] == "京A012019000939"
    assert query_vars(Query(number="京A012019000939"))["id_number"] == ""
    # An 18-digit string with a wrong check character is not an ID: it is treated as a certificate number.
    assert query_vars(Query(number="110105199003071230"))["id_number"] == ""


def test_mohurd_is_asked_by_certificate_number_or_by_id() -> None:
    by_number = first_request("mohurd_api", Query(number="京A012019000939"))
    assert (by_number.method, by_number.url) == ("GET", "http://127.0.0.1:18704/api/v1/certs")
    assert by_number.params == {"certNum": "京A012019000939"}
    by_id = first_request("mohurd_api", Query(number=ZHANG_ID))
    assert by_id.params == {"identityCard": ZHANG_ID}


def test_mohrss_posts_the_form_with_what_the_query_has() -> None:
    req = first_request("mohrss_html", Query(number="S021537000101234000517", name="刘洋"))
    assert (req.method, req.url) == ("POST", "http://127.0.0.1:18703/zscx/query")
    assert req.data == {"name": "刘洋", "zsbh": "S021537000101234000517"}
    both = first_request("mohrss_html", Query(number="S021537000101234000517", id_number="37010219880412215X"))
    assert both.data == {"CID": "37010219880412215X", "zsbh": "S021537000101234000517"}
    by_id = first_request("mohrss_html", Query(number="37010219880412215X"))
    assert by_id.data == {"CID": "37010219880412215X"}


def test_samr_second_step_carries_the_per_id_of_the_first() -> None:
    flow = build_adapter(load_source("samr_api")).lookup(Query(number="220104198507153216"))
    step1 = next(flow)
    assert step1.url == "http://127.0.0.1:18702/info-pub/pub/remotePubQuery.json"
    assert step1.params == {"keyword": "220104198507153216"}
    person = '{"success": true, "messageText": "", "data": {"ryxm": "李建军", "perId": "ab12"}}'
    step2 = flow.send(HttpResponse(200, step1.url, {"Set-Cookie": "SESSION=x"}, person))
    assert step2.url == "http://127.0.0.1:18702/info-pub/pub/getPerInfoBySfzh.json"
    assert step2.params == {"sfzh": "220104198507153216", "perId": "ab12"}


def test_endpoint_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERTQ_MEM_URL", "http://10.0.0.5:8080/base/")
    req = first_request("mem_api", Query(number="T" + ZHANG_ID))
    assert req.url == "http://10.0.0.5:8080/base/prod-api/certsearch/certInfo/netQuery"


# --- credentials --------------------------------------------------------------------------------


@pytest.mark.parametrize("source_id", ["mem_api", "samr_api", "mohrss_html", "mohurd_api"])
def test_bearer_token_is_sent_when_the_variable_is_set(source_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    source = load_source(source_id)
    assert source.credentials_env
    monkeypatch.setenv(source.credentials_env, "s3cret-token")
    req = first_request(source_id, Query(number=ZHANG_ID))
    assert req.headers["Authorization"] == "Bearer s3cret-token"


@pytest.mark.parametrize("value", [None, "", "   "])
def test_no_authorization_header_without_a_token(value: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if value is None:
        monkeypatch.delenv("CERTQ_MEM_TOKEN", raising=False)
    else:
        monkeypatch.setenv("CERTQ_MEM_TOKEN", value)
    req = first_request("mem_api", Query(number=ZHANG_ID))
    assert "Authorization" not in req.headers


def test_a_token_set_after_start_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CERTQ_MOHURD_TOKEN", raising=False)
    adapter = build_adapter(load_source("mohurd_api"))
    monkeypatch.setenv("CERTQ_MOHURD_TOKEN", "rotated")
    assert next(adapter.lookup(Query(number=ZHANG_ID))).headers["Authorization"] == "Bearer rotated"


# --- link sources -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source_id", "url"),
    [
        ("mem_public", "https://cx.mem.gov.cn/"),
        ("samr_public", "https://cnse.samr.gov.cn/"),
        ("mohrss_public", "http://zscx.osta.org.cn/"),
        ("mohurd_public", "https://zlaq.mohurd.gov.cn/"),
    ],
)
def test_link_sources_point_at_the_public_page_with_instructions(source_id: str, url: str) -> None:
    link = build_adapter(load_source(source_id)).link(Query(number="T" + ZHANG_ID, name="张伟"))
    assert link.url == url
    assert "验证码" in link.instructions or "验证" in link.instructions
    assert "captcha" in link.instructions


def test_link_is_prefilled_and_encoded_where_the_site_takes_parameters() -> None:
    source = with_options("mem_public", path_with_id="/query?idCard={id_number}&name={name}")
    link = build_adapter(source).link(Query(number="T" + ZHANG_ID, name="张伟"))
    assert link.url == f"https://cx.mem.gov.cn/query?idCard={ZHANG_ID}&name=%E5%BC%A0%E4%BC%9F"
    bare = build_adapter(source).link(Query(number="京A012019000939"))
    assert bare.url == "https://cx.mem.gov.cn/"


# --- configuration errors -----------------------------------------------------------------------


def test_bad_options_name_the_file_and_key() -> None:
    source = with_options("mohurd_api", fields={"holder_name": "name"})
    with pytest.raises(AdapterConfigError) as err:
        build_adapter(source)
    assert "sources/mohurd_api.toml: options.fields" in str(err.value)
    assert "number" in str(err.value)
    assert isinstance(err.value, ValueError) and isinstance(err.value, ConfigError)


def test_unknown_option_keys_are_refused() -> None:
    with pytest.raises(AdapterConfigError, match=r"sources/mem_api.toml: options.recrods"):
        build_adapter(with_options("mem_api", recrods="data"))


def test_a_template_naming_an_unknown_variable_is_refused() -> None:
    requests = [{"method": "GET", "path": "/q", "params": {"id": "{idcard}"}, "requires": ["id_number"]}]
    with pytest.raises(AdapterConfigError, match=r"options.requests.0.params.*idcard"):
        build_adapter(with_options("mohurd_api", requests=requests))


def test_a_pattern_no_request_shape_can_ask_is_refused() -> None:
    only_by_id = [{"method": "GET", "path": "/api/v1/certs", "params": {"identityCard": "{id_number}"},
                   "requires": ["id_number"]}]  # fmt: skip
    with pytest.raises(AdapterConfigError, match=r"options.requests: no request shape can ask.*'mohurd'"):
        build_adapter(with_options("mohurd_api", requests=only_by_id))


def test_mohurd_status_table_must_cover_every_cert_state() -> None:
    status_map = {k: v for k, v in load_source("mohurd_api").options["status_map"].items() if k != "06"}
    with pytest.raises(AdapterConfigError, match=r"options.*status_map.*06"):
        build_adapter(with_options("mohurd_api", status_map=status_map))


def test_a_bad_condition_is_refused() -> None:
    with pytest.raises(AdapterConfigError, match=r"options.found.0"):
        build_adapter(with_options("mem_api", found=[{"path": "code", "equals": 200, "contains": ["x"]}]))


def test_records_sources_are_not_adapters() -> None:
    source = SourceConfig(
        id="mem_records", name="x", department="mem", mode="records", adapter="records",
        kinds=["mem_special_operation"], patterns=["*"],
    )  # fmt: skip
    with pytest.raises(AdapterConfigError, match="records store"):
        build_adapter(source)


def test_unknown_adapter_and_wrong_mode_are_refused() -> None:
    with pytest.raises(AdapterConfigError, match=r"sources/mem_api.toml: adapter: unknown adapter 'soap'"):
        build_adapter(load_source("mem_api").model_copy(update={"adapter": "soap"}))
    with pytest.raises(AdapterConfigError, match=r"sources/mem_public.toml: mode: adapter 'link' needs mode 'link'"):
        build_adapter(load_source("mem_public").model_copy(update={"mode": Mode.API}))
