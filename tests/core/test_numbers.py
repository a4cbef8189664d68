"""Numbers: what people type is normalised, and each format is recognised with its parts decoded."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.numbers import (
    MAX_INPUT_LENGTH,
    NumberError,
    classify,
    id_check_character,
    is_valid_id_number,
    normalise,
    parse_number,
)


def make_id(region: str = "110105", birth: str = "19900307", seq: str = "123") -> str:
    first = region + birth + seq
    return first + id_check_character(first)


ids = st.builds(
    make_id,
    region=st.sampled_from(["110105", "220102", "440305", "650102", "310115"]),
    birth=st.dates(min_value=__import__("datetime").date(1940, 1, 1), max_value=__import__("datetime").date(2010, 12, 31)).map(
        lambda d: d.strftime("%Y%m%d")
    ),
    seq=st.integers(0, 999).map(lambda i: f"{i:03d}"),
)


def to_fullwidth(s: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in s)


@given(st.text(max_size=40))
def test_normalise_is_idempotent(text: str) -> None:
    assert normalise(normalise(text)) == normalise(text)


@given(ids)
def test_every_well_formed_id_is_recognised(id_number: str) -> None:
    assert [f.format for f in classify(id_number).formats] == ["id18"]
    assert is_valid_id_number(id_number)


@given(ids, st.sampled_from(["", " ", "-", "  ", "\u3000"]))
def test_what_people_type_normalises_to_the_same_id(id_number: str, sep: str) -> None:
    typed = to_fullwidth(id_number[:6]) + sep + id_number[6:14] + sep + id_number[14:].lower()
    assert normalise(typed) == id_number


@given(ids, st.sampled_from(string.digits + "X"))
def test_a_wrong_check_character_is_a_probable_typo(id_number: str, wrong: str) -> None:
    if wrong == id_number[-1]:
        return
    c = classify(id_number[:-1] + wrong)
    assert c.formats == []
    assert f"should be {id_number[-1]}" in c.warnings[0]


@given(ids)
def test_mem_number_is_t_plus_id(id_number: str) -> None:
    c = classify("T" + id_number)
    assert c.names == {"mem_t_id"}
    assert c.formats[0].parts["birth_date"].replace("-", "") == id_number[6:14]


def test_gender_from_the_17th_digit() -> None:
    assert classify(make_id(seq="121")).formats[0].parts["gender"] == "男"
    assert classify(make_id(seq="122")).formats[0].parts["gender"] == "女"


def test_legacy_15_digit_id() -> None:
    c = classify("110105900307123")
    assert "id15" in c.names
    assert next(f for f in c.formats if f.format == "id15").parts["birth_date"] == "1990-03-07"


def test_mohurd_number_decoded() -> None:
    c = parse_number("吉a-01-2021-000939")
    f = c.formats[0]
    assert c.number == "吉A012021000939"
    assert (f.format, f.parts["province"], f.parts["trade"], f.parts["year"]) == ("mohurd", "吉", "建筑电工", "2021")


def test_mohrss_skill_level_number_decoded() -> None:
    f = classify("S000144123456244000123").formats[0]
    assert f.format == "mohrss_skill"
    assert f.parts["body_type"] == "社会培训评价组织"
    assert f.parts["level"] == "四级/中级工"
    assert f.parts["year"] == "2024"


def test_mohrss_old_qualification_number_decoded() -> None:
    f = next(f for f in classify("1944010123345012").formats if f.format == "mohrss_qual")
    assert f.parts["level"] == "高级"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "enter a certificate number"),
        ("   ", "enter a certificate number"),
        ("1" * (MAX_INPUT_LENGTH + 1), "longer than"),
        ("11010519900307123X; DROP TABLE", "characters no certificate number uses"),
        ("<script>", "characters no certificate number uses"),
        ("12", "too short"),
    ],
)
def test_bad_input_is_rejected_with_a_reason(raw: str, why: str) -> None:
    with pytest.raises(NumberError) as e:
        parse_number(raw)
    assert why in e.value.reason


def test_unknown_but_plausible_number_is_accepted_without_formats() -> None:
    # Uploaded records may hold numbers of provincial formats nobody classified.
    c = parse_number("XJ-2020-88431")
    assert c.number == "XJ202088431" and c.formats == []
