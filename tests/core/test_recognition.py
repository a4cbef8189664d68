"""The recognition catalogue: each of entries 1-7, and only valid certificates earn anything."""

from __future__ import annotations

from datetime import date

import pytest

from aggregator.models import CertStatus, Department
from aggregator.recognition import recognise
from tests.helpers import catalogue, cert, make_id

TODAY = date(2026, 11, 25)
ID = make_id()

CASES = [
    # entry, certificate, expected target department, counts as, may apply for
    (1, cert(Department.MEM, "T" + ID, category="电工作业", operation_item="低压电工作业"), Department.MOHURD, "五级/初级工", "四级/中级工"),
    (2, cert(Department.MEM, "T" + ID, category="电工作业", operation_item="高压电工作业"), Department.MOHURD, "四级/中级工", "三级/高级工"),
    (3, cert(Department.MOHURD, "吉A012021000939", category="建筑电工", operation_item="建筑电工"), Department.MEM, "五级/初级工", "四级/中级工"),
    (6, cert(Department.MOHURD, "吉A992021000940", category="其他工种类别（建筑焊工）", operation_item="建筑焊工"), Department.MEM, "五级/初级工", "四级/中级工"),
    (7, cert(Department.SAMR, ID, category="特种设备焊接操作人员", items=["GTAW-FeII-6G-3/60-FefS-02/10/12"]), Department.MEM, "四级/中级工", "三级/高级工"),
]


@pytest.mark.parametrize(("entry", "c", "target", "counts", "next_level"), CASES, ids=[f"entry{c[0]}" for c in CASES])
def test_each_entry_grants_its_exemption_and_level(entry, c, target, counts, next_level) -> None:
    r = recognise(catalogue(), c, TODAY)
    assert r is not None and r.eligible
    assert [(e.entry, e.target_department) for e in r.exemptions] == [(entry, target)]
    assert [(s.counts_as, s.may_apply_for) for s in r.skill_levels] == [(counts, next_level)]
    assert r.exemptions[0].basis.endswith(f"序号{entry}")


def test_mem_fusion_welding_earns_entries_4_and_5() -> None:
    c = cert(Department.MEM, "T" + ID, category="焊接与热切割作业", operation_item="熔化焊接与热切割作业")
    r = recognise(catalogue(), c, TODAY)
    assert sorted(e.entry for e in r.exemptions) == [4, 5]
    by_entry = {e.entry: e for e in r.exemptions}
    assert by_entry[4].target_department == Department.MOHURD and "建筑焊工" in by_entry[4].target
    assert by_entry[4].note == "仅限颁发建筑焊工特种作业操作证的地区"
    assert by_entry[5].target_department == Department.SAMR and "动火作业安全管理考试" in by_entry[5].waived
    # Both entries say the same about the skill level: it is listed once.
    assert [(s.occupation, s.counts_as) for s in r.skill_levels] == [("焊工", "五级/初级工")]


def test_full_width_operation_names_still_match() -> None:
    c = cert(Department.MEM, "T" + ID, category="电工作业", operation_item="低压电工作业（ＬＶ）")
    assert recognise(catalogue(), c, TODAY).eligible


@pytest.mark.parametrize(
    ("status", "until", "why"),
    [
        (CertStatus.VALID, date(2025, 1, 1), "expired"),
        (CertStatus.SUSPENDED, date(2029, 1, 1), "suspended"),
        (CertStatus.REVOKED, date(2029, 1, 1), "revoked"),
        (CertStatus.UNKNOWN, date(2029, 1, 1), "unknown"),
    ],
)
def test_a_certificate_that_is_not_valid_earns_nothing_and_says_why(status, until, why) -> None:
    c = cert(Department.MEM, "T" + ID, category="电工作业", operation_item="低压电工作业", status=status, valid_until=until)
    r = recognise(catalogue(), c, TODAY)
    assert r is not None and not r.eligible
    assert r.exemptions == [] and r.skill_levels == []
    assert why in r.reason


def test_certificates_outside_the_catalogue_get_no_entry() -> None:
    c = cert(Department.MEM, "T" + ID, category="高处作业", operation_item="登高架设作业")
    assert recognise(catalogue(), c, TODAY) is None
    # Anti-explosion electrical work is 电工作业 but in no entry of the notice.
    c = cert(Department.MEM, "T" + ID, category="电工作业", operation_item="防爆电气作业")
    assert recognise(catalogue(), c, TODAY) is None


def test_samr_non_welding_certificate_earns_nothing() -> None:
    c = cert(Department.SAMR, ID, category="起重机司机", items=["Q2"])
    assert recognise(catalogue(), c, TODAY) is None
