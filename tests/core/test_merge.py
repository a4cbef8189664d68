"""Merging: verdicts, conflicts between sources, and errors that never become "not found"."""

from __future__ import annotations

from datetime import UTC, date, datetime

from aggregator.merge import build_answer
from aggregator.models import CertStatus, Department, ErrorKind, Mode, Outcome, Query, Verdict
from aggregator.numbers import classify
from tests.helpers import catalogue, cert, found, make_id, not_found, unavailable

TODAY = date(2026, 11, 25)
ID = make_id()
NUMBER = "T" + ID
ELECTRICIAN = dict(category="电工作业", operation_item="低压电工作业", holder_name="张伟", holder_id_number=ID)


def answer(results, name=None, number=NUMBER, id_number=None):
    q = Query(number=number, name=name, id_number=id_number)
    return build_answer(q, classify(number), results, catalogue(), TODAY)


def test_valid_certificate_gives_valid_verdict_and_recognitions() -> None:
    a = answer([found("mem_records", cert(Department.MEM, NUMBER, **ELECTRICIAN))])
    assert a.verdict == Verdict.VALID and a.complete
    assert [r.exemptions[0].entry for r in a.recognitions] == [1]
    assert a.certificates[0].sources == ["mem_records"]


def test_expiry_date_in_the_past_makes_it_expired() -> None:
    a = answer([found("mem_records", cert(Department.MEM, NUMBER, **ELECTRICIAN, valid_until=date(2026, 1, 1)))])
    assert a.verdict == Verdict.EXPIRED
    assert a.certificates[0].effective == CertStatus.EXPIRED
    assert not a.recognitions[0].eligible


def test_nothing_anywhere_is_not_found() -> None:
    a = answer([not_found("mem_records", Department.MEM), not_found("mem_api", Department.MEM, Mode.API)])
    assert a.verdict == Verdict.NOT_FOUND and a.complete


def test_a_failing_source_makes_nothing_found_inconclusive_never_not_found() -> None:
    for kind in ErrorKind:
        a = answer([not_found("mem_records", Department.MEM), unavailable("mem_api", Department.MEM, kind)])
        assert a.verdict == Verdict.INCONCLUSIVE, kind
        assert not a.complete
        assert "mem_api" in a.verdict_reason


def test_found_while_another_source_fails_keeps_the_finding_but_says_incomplete() -> None:
    a = answer(
        [
            found("mem_records", cert(Department.MEM, NUMBER, **ELECTRICIAN)),
            unavailable("mem_api", Department.MEM, ErrorKind.TIMEOUT),
        ]
    )
    assert a.verdict == Verdict.VALID and not a.complete
    assert "may be incomplete" in a.verdict_reason
    assert {s.source: s.outcome for s in a.sources} == {"mem_records": Outcome.FOUND, "mem_api": Outcome.UNAVAILABLE}


def test_live_suspension_conflicts_with_upload_and_the_fresher_source_wins() -> None:
    uploaded = found("mem_records", cert(Department.MEM, NUMBER, **ELECTRICIAN), as_of=datetime(2026, 10, 1, tzinfo=UTC))
    live = found(
        "mem_api",
        cert(Department.MEM, NUMBER, **ELECTRICIAN, status=CertStatus.SUSPENDED),
        mode=Mode.API,
        as_of=datetime(2026, 11, 25, tzinfo=UTC),
    )
    a = answer([uploaded, live])
    assert a.verdict == Verdict.SUSPENDED
    assert len(a.certificates) == 1 and a.certificates[0].sources == ["mem_api", "mem_records"]
    [c] = a.conflicts
    assert c.field == "status" and c.chosen_source == "mem_api"
    assert {v.source: v.value for v in c.values} == {"mem_api": "suspended", "mem_records": "valid"}


def test_every_differing_field_is_listed() -> None:
    a = answer(
        [
            found("mem_records", cert(Department.MEM, NUMBER, **ELECTRICIAN, valid_until=date(2027, 3, 1), issuer="吉林省应急管理厅")),
            found(
                "mem_api",
                cert(Department.MEM, NUMBER, **ELECTRICIAN, valid_until=date(2030, 3, 1), issuer="吉林省应急管理厅"),
                mode=Mode.API,
                as_of=datetime(2026, 11, 25, tzinfo=UTC),
            ),
        ]
    )
    assert [c.field for c in a.conflicts] == ["valid_until"]
    assert a.certificates[0].valid_until == date(2030, 3, 1)


def test_missing_field_is_filled_from_another_source_without_a_conflict() -> None:
    a = answer(
        [
            found("mem_records", cert(Department.MEM, NUMBER, **ELECTRICIAN, issuer="吉林省应急管理厅")),
            found("mem_api", cert(Department.MEM, NUMBER, **ELECTRICIAN), mode=Mode.API, as_of=datetime(2026, 11, 25, tzinfo=UTC)),
        ]
    )
    assert a.conflicts == [] and a.certificates[0].issuer == "吉林省应急管理厅"


def test_name_compared_after_normalisation() -> None:
    c = cert(Department.MEM, NUMBER, **{**ELECTRICIAN, "holder_name": "阿卜杜·热合曼"})
    for typed in ("阿卜杜·热合曼", "阿卜杜 热合曼", "阿卜杜热合曼", "阿卜杜•热合曼"):
        a = answer([found("mem_records", c)], name=typed)
        assert a.verdict == Verdict.VALID, typed
        assert a.certificates[0].name_matches is True


def test_name_mismatch_does_not_reveal_the_recorded_name() -> None:
    a = answer([found("mem_records", cert(Department.MEM, NUMBER, **ELECTRICIAN))], name="李四")
    assert a.verdict == Verdict.NAME_MISMATCH
    dumped = a.model_dump_json()
    assert "张伟" not in dumped and ID not in dumped.replace(NUMBER, "")
    assert a.recognitions == []


def test_best_status_among_holders_certificates_decides() -> None:
    revoked = cert(Department.MEM, NUMBER, **{**ELECTRICIAN, "operation_item": "高压电工作业"}, status=CertStatus.REVOKED)
    valid = cert(Department.MEM, NUMBER, **ELECTRICIAN)
    a = answer([found("mem_records", revoked, valid)])
    assert a.verdict == Verdict.VALID
    assert [c.effective for c in a.certificates] == [CertStatus.VALID, CertStatus.REVOKED]


def test_only_link_sources_and_nothing_found_is_not_found_with_a_pointer() -> None:
    from aggregator.models import ManualLink, SourceResult

    link = SourceResult(
        source="mem_public", department=Department.MEM, mode=Mode.LINK, outcome=Outcome.MANUAL,
        link=ManualLink(url="https://example.invalid", instructions="solve the captcha"),
    )
    a = answer([not_found("mem_records", Department.MEM), link])
    assert a.verdict == Verdict.NOT_FOUND
    assert "public sites" in a.verdict_reason


def test_typo_warning_travels_with_the_answer() -> None:
    bad = ID[:-1] + ("0" if ID[-1] != "0" else "1")
    a = answer([not_found("mem_records", Department.MEM)], number=bad)
    assert a.query.warnings and "probably a typo" in a.verdict_reason


def test_another_certificate_of_the_same_holder_does_not_decide_the_verdict() -> None:
    revoked_mem = cert(Department.MEM, NUMBER, **ELECTRICIAN, status=CertStatus.REVOKED)
    valid_mohurd = cert(Department.MOHURD, "京A012019000939", operation_item="建筑电工", holder_name="张伟", holder_id_number=ID)
    a = answer([found("mem_records", revoked_mem), found("mohurd_records", valid_mohurd)])
    assert a.verdict == Verdict.REVOKED
    assert {c.number: c.matched_by for c in a.certificates} == {NUMBER: "number", "京A012019000939": "holder"}
    # The holder's other valid certificate still earns its recognitions.
    assert [e.entry for r in a.recognitions if r.eligible for e in r.exemptions] == [3]


def test_number_not_found_but_holder_known_is_not_found_with_the_other_certificates_shown() -> None:
    valid_mohurd = cert(Department.MOHURD, "京A012019000939", operation_item="建筑电工", holder_name="张伟", holder_id_number=ID)
    a = answer([not_found("mem_records", Department.MEM), found("mohurd_records", valid_mohurd)])
    assert a.verdict == Verdict.NOT_FOUND
    assert [c.matched_by for c in a.certificates] == ["holder"]
    assert "other certificates of the same holder" in a.verdict_reason


def test_an_id_number_asks_about_every_certificate_of_that_person() -> None:
    samr = cert(Department.SAMR, ID, category="特种设备焊接操作人员", holder_name="张伟", holder_id_number=ID)
    mem = cert(Department.MEM, NUMBER, **ELECTRICIAN, status=CertStatus.REVOKED)
    a = answer([found("samr_records", samr), found("mem_records", mem)], number=ID)
    assert a.verdict == Verdict.VALID
    assert {c.matched_by for c in a.certificates} == {"number"}


def test_name_mismatch_hides_the_holders_other_certificates() -> None:
    mem = cert(Department.MEM, NUMBER, **ELECTRICIAN)
    mohurd = cert(Department.MOHURD, "京A012019000939", operation_item="建筑电工", holder_name="张伟", holder_id_number=ID)
    a = answer([found("mem_records", mem), found("mohurd_records", mohurd)], name="李四")
    assert a.verdict == Verdict.NAME_MISMATCH
    assert [c.number for c in a.certificates] == [NUMBER]
    assert a.certificates[0].holder_name is None
