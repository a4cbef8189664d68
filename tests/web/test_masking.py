"""What each role sees of an answer: masked names, no ID numbers for the public, full records for regulators."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.merge import build_answer
from aggregator.models import Answer, Department, Mode, Query
from aggregator.numbers import classify
from aggregator.web.masking import is_id_like, mask_answer, mask_id_like, mask_name, typed_forms
from aggregator.web.roles import Role
from tests.helpers import catalogue, cert, found, make_id

TODAY = date(2026, 11, 25)
ID = make_id("110105", "19900307", "123")
OTHER_ID = make_id("440104", "19781120", "789")
MEM_NUMBER = "T" + ID
MOHURD_NUMBER = "京A012024000123"
MASKED_ROLES = (Role.PUBLIC, Role.DEPARTMENT, Role.EMPLOYER)
FULL_ROLES = (Role.REGULATOR, Role.ADMIN)


def answer(results, *, number: str, name: str | None = None, id_number: str | None = None) -> Answer:
    q = Query(number=number, name=name, id_number=id_number)
    return build_answer(q, classify(number), results, catalogue(), TODAY)


def mem_answer(name: str | None = None) -> Answer:
    """张小三's MEM electrician card and his SAMR welder card, whose number is his ID number."""
    mem = cert(Department.MEM, MEM_NUMBER, holder_name="张小三", holder_id_number=ID, gender="男",
               category="电工作业", operation_item="低压电工作业")
    samr = cert(Department.SAMR, ID, holder_name="张小三", holder_id_number=ID, gender="男",
                operation_item="GTAW-FeII-6G-3/60-FefS-02/10/12")
    return answer([found("mem_records", mem), found("samr_records", samr)], number=MEM_NUMBER, name=name)


def mohurd_answer_with_conflicts() -> Answer:
    """Two sources disagree about the holder of one MOHURD certificate (name, ID number and gender)."""
    upload = cert(Department.MOHURD, MOHURD_NUMBER, holder_name="李四", holder_id_number=OTHER_ID, gender="男",
                  category="建筑电工")
    live = cert(Department.MOHURD, MOHURD_NUMBER, holder_name="李思", holder_id_number=ID, gender="女",
                category="建筑电工")
    results = [
        found("mohurd_records", upload, as_of=datetime(2026, 10, 1, tzinfo=UTC)),
        found("mohurd_api", live, mode=Mode.API, as_of=datetime(2026, 11, 24, tzinfo=UTC)),
    ]
    return answer(results, number=MOHURD_NUMBER)


def dump(view: dict) -> str:
    return json.dumps(view, ensure_ascii=False)


# --- names and numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "masked"),
    [
        ("张三", "张*"),
        ("张小三", "张*三"),
        ("欧阳小明", "欧**明"),
        ("阿卜杜·热合曼", "阿*****曼"),
        ("李", "*"),
        (" 张小三 ", "张*三"),
        ("", None),
        (None, None),
    ],
)
def test_names_keep_only_first_and_last_character(name: str | None, masked: str | None) -> None:
    assert mask_name(name) == masked


@given(st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=3, max_size=12))
def test_a_masked_name_has_the_same_length_and_hides_every_middle_character(name: str) -> None:
    masked = mask_name(name)
    assert masked is not None
    assert len(masked) == len(name)
    assert masked[0] == name[0] and masked[-1] == name[-1]
    assert set(masked[1:-1]) == {"*"}


def test_id_numbers_and_t_numbers_are_recognised_and_masked() -> None:
    assert is_id_like(ID) and is_id_like(MEM_NUMBER) and is_id_like("110105900307123")
    assert not is_id_like(MOHURD_NUMBER) and not is_id_like("Y1234110000012324000001")
    assert mask_id_like(ID) == ID[:3] + "*" * 13 + ID[-2:]
    assert mask_id_like(MEM_NUMBER) == "T" + ID[:3] + "*" * 13 + ID[-2:]


def test_a_typed_t_number_also_counts_as_its_id_number_and_back() -> None:
    assert typed_forms({"t" + ID}) == {MEM_NUMBER, ID}
    assert typed_forms({ID}) == {MEM_NUMBER, ID}
    assert typed_forms({MOHURD_NUMBER, ""}) == {MOHURD_NUMBER}


# --- the public ------------------------------------------------------------------------------------


def test_the_public_sees_a_masked_name_and_no_id_number_or_gender() -> None:
    view = mask_answer(mem_answer(), Role.PUBLIC, {MEM_NUMBER})
    assert view["view"] == {"role": "public", "masked": True}
    assert [c["holder_name"] for c in view["certificates"]] == ["张*三", "张*三"]
    for c in view["certificates"]:
        assert "holder_id_number" not in c and "gender" not in c and "name_matches" not in c
    assert "张小三" not in dump(view)
    assert view["verdict"] == "valid"


def test_the_id_number_inside_a_typed_t_number_may_be_echoed() -> None:
    view = mask_answer(mem_answer(), Role.PUBLIC, {MEM_NUMBER})
    assert sorted(c["number"] for c in view["certificates"]) == sorted([ID, MEM_NUMBER])


def test_a_certificate_number_that_is_an_id_number_nobody_typed_is_masked_everywhere() -> None:
    samr = cert(Department.SAMR, OTHER_ID, holder_name="李四", holder_id_number=OTHER_ID,
                operation_item="GTAW-FeII-6G-3/60-FefS-02/10/12")
    mohurd = cert(Department.MOHURD, MOHURD_NUMBER, holder_name="李四", holder_id_number=OTHER_ID, category="建筑电工")
    a = answer([found("mohurd_records", mohurd), found("samr_records", samr)], number=MOHURD_NUMBER)
    assert OTHER_ID in a.model_dump_json()  # the raw answer has it: the test can fail
    for role in MASKED_ROLES:
        view = mask_answer(a, role, {MOHURD_NUMBER})
        assert OTHER_ID not in dump(view), role
        assert mask_id_like(OTHER_ID) in [c["number"] for c in view["certificates"]]
        assert MOHURD_NUMBER in [c["number"] for c in view["certificates"]]


def test_recognitions_name_an_untyped_id_number_certificate_only_masked() -> None:
    a = mem_answer()
    assert any(r.certificate == MEM_NUMBER for r in a.recognitions)
    view = mask_answer(a, Role.PUBLIC, set())
    assert MEM_NUMBER not in dump(view.get("recognitions"))
    assert "T" + ID[:3] + "*" * 13 + ID[-2:] in [r["certificate"] for r in view["recognitions"]]


def test_conflicts_show_masked_names_and_never_id_numbers_or_gender() -> None:
    a = mohurd_answer_with_conflicts()
    assert {c.field for c in a.conflicts} >= {"holder_name", "holder_id_number", "gender"}
    view = mask_answer(a, Role.PUBLIC, {MOHURD_NUMBER})
    fields = {c["field"] for c in view["conflicts"]}
    assert "holder_name" in fields
    assert "holder_id_number" not in fields and "gender" not in fields
    names = next(c for c in view["conflicts"] if c["field"] == "holder_name")["values"]
    assert sorted(v["value"] for v in names) == ["李*", "李*"]
    text = dump(view)
    assert ID not in text and OTHER_ID not in text and "李四" not in text and "李思" not in text


def test_a_department_key_sees_lookups_like_the_public() -> None:
    a = mohurd_answer_with_conflicts()
    public = mask_answer(a, Role.PUBLIC, {MOHURD_NUMBER})
    department = mask_answer(a, Role.DEPARTMENT, {MOHURD_NUMBER})
    public.pop("view")
    department.pop("view")
    assert department == public


# --- employers -----------------------------------------------------------------------------------------


def test_an_employer_learns_whether_the_name_it_supplied_matches() -> None:
    matching = mask_answer(mem_answer(name="张小三"), Role.EMPLOYER, {MEM_NUMBER})
    assert matching["name_matches"] is True
    assert all(c["name_matches"] is True for c in matching["certificates"])
    assert all(c["holder_name"] == "张*三" for c in matching["certificates"])
    assert "holder_id_number" not in dump(matching)

    wrong = mask_answer(mem_answer(name="王五"), Role.EMPLOYER, {MEM_NUMBER})
    assert wrong["verdict"] == "name_mismatch"
    assert wrong["name_matches"] is False
    assert "张" not in dump(wrong["certificates"])

    no_name = mask_answer(mem_answer(), Role.EMPLOYER, {MEM_NUMBER})
    assert no_name["name_matches"] is None


def test_the_public_is_not_told_the_per_certificate_name_check() -> None:
    view = mask_answer(mem_answer(name="张小三"), Role.PUBLIC, {MEM_NUMBER})
    assert "name_matches" not in view
    assert all("name_matches" not in c for c in view["certificates"])


# --- regulators and admins ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", FULL_ROLES)
def test_regulators_and_admins_see_full_records_and_conflicts(role: Role) -> None:
    a = mohurd_answer_with_conflicts()
    view = mask_answer(a, role, {MOHURD_NUMBER})
    assert view.pop("view") == {"role": role.value, "masked": False}
    assert view == a.model_dump(mode="json")
    assert {c["field"] for c in view["conflicts"]} >= {"holder_name", "holder_id_number", "gender"}
    assert view["certificates"][0]["holder_id_number"] in (ID, OTHER_ID)


def test_masking_does_not_change_the_answer_itself() -> None:
    a = mem_answer()
    before = a.model_dump(mode="json")
    mask_answer(a, Role.PUBLIC, set())
    assert a.model_dump(mode="json") == before
