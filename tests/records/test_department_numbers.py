"""One department cannot overturn another's verdict: uploads hold only numbers their department issues, and
where two departments' records claim one number, the issuing department decides (and the clash is shown)."""

from __future__ import annotations

from datetime import date

from aggregator.merge import build_answer, normalise_name
from aggregator.models import CertStatus, Department, Query, Verdict
from aggregator.numbers import classify, foreign_format
from aggregator.records import BatchStatus
from tests.helpers import catalogue, cert, found
from tests.records_support import ID_LI, ID_WANG, ID_ZHANG, mem_row, write_csv

TODAY = date(2026, 11, 25)
MEM_NUMBER = "T" + ID_ZHANG
SAMR_HEADER = ["证书编号", "姓名", "身份证号", "作业类别", "操作项目", "发证机关", "初领日期", "有效期起", "有效期至", "证书状态"]


def samr_row(number: str, id_number: str, name: str = "张小三", status: str = "有效") -> list[str]:
    return [number, name, id_number, "特种设备焊接作业", "GTAW-FeII-6G-3/60-FefS-02/10/12", "北京市市场监督管理局",
            "2021-03-04", "2021-03-04", "2029-03-03", status]


async def test_a_samr_upload_carrying_a_mem_number_is_refused_on_that_row(store, tmp_path) -> None:
    path = write_csv(
        tmp_path / "samr.csv",
        [samr_row(ID_LI, ID_LI, "李四"), samr_row(MEM_NUMBER, ID_ZHANG, status="有效")],
        SAMR_HEADER,
    )
    report = await store.import_file(path, department="samr", quarter="2026Q2")
    assert report.status == BatchStatus.REJECTED
    [problem] = report.problems
    assert problem.line == 3 and problem.value == MEM_NUMBER
    assert "应急管理部" in problem.reason and "mem_t_id" in problem.reason

    partial = await store.import_file(path, department="samr", quarter="2026Q2", partial=True)
    assert partial.status == BatchStatus.PARTIAL and partial.rows_imported == 1
    assert (await store.find("samr", number=MEM_NUMBER)).certificates == []
    assert [c.number for c in (await store.find("samr", number=ID_LI)).certificates] == [ID_LI]


async def test_a_mem_upload_with_a_mohurd_number_is_refused_and_its_own_numbers_pass(store, tmp_path) -> None:
    path = write_csv(tmp_path / "mem.csv", [mem_row(ID_WANG, "王五"), mem_row(ID_LI, "李四", number="京A012024000123")])
    report = await store.import_file(path, department="mem", quarter="2026Q2")
    assert report.status == BatchStatus.REJECTED
    assert [(p.line, p.value) for p in report.problems] == [(3, "京A012024000123")]
    assert "住房和城乡建设部" in report.problems[0].reason


def test_which_department_may_upload_which_number() -> None:
    assert foreign_format(MEM_NUMBER, Department.MEM) is None
    assert foreign_format(MEM_NUMBER, Department.SAMR) is not None
    assert foreign_format(ID_ZHANG, Department.SAMR) is None  # a SAMR number is the holder's ID number
    assert foreign_format(ID_ZHANG, Department.MEM) is None  # and so are older MEM cards
    assert foreign_format(ID_ZHANG, Department.MOHURD) is not None
    assert foreign_format("京A012024000123", Department.MOHRSS) is not None
    assert foreign_format("S000111000001241000001", Department.MOHRSS) is None
    assert foreign_format("ANY-LOCAL-NUMBER-123".replace("-", ""), Department.SAMR) is None  # fits no format


def test_where_two_departments_claim_a_number_the_issuing_one_decides_and_the_clash_is_shown() -> None:
    revoked = cert(Department.MEM, MEM_NUMBER, holder_name="张小三", holder_id_number=ID_ZHANG,
                   category="电工作业", operation_item="低压电工作业", status=CertStatus.REVOKED)
    forged = cert(Department.SAMR, MEM_NUMBER, holder_name="张小三", holder_id_number=ID_ZHANG,
                  category="特种设备焊接作业", status=CertStatus.VALID)
    a = build_answer(
        Query(number=MEM_NUMBER),
        classify(MEM_NUMBER),
        [found("mem_records", revoked), found("samr_records", forged)],
        catalogue(),
        TODAY,
    )
    assert a.verdict == Verdict.REVOKED
    assert [c.department for c in a.certificates] == [Department.MEM]
    [clash] = [c for c in a.conflicts if c.field == "department"]
    assert clash.chosen_source == "mem_records"
    assert {v.source: v.value for v in clash.values} == {"mem_records": "mem: revoked", "samr_records": "samr: valid"}


def test_a_claim_no_issuing_department_contradicts_is_left_alone() -> None:
    only = cert(Department.SAMR, MEM_NUMBER, holder_name="张小三", status=CertStatus.VALID)
    a = build_answer(Query(number=MEM_NUMBER), classify(MEM_NUMBER), [found("samr_records", only)], catalogue(), TODAY)
    assert a.verdict == Verdict.VALID and not a.conflicts


def test_a_zero_width_space_or_a_bom_in_a_name_does_not_break_the_match() -> None:
    assert normalise_name("张\u200b小三") == normalise_name("张小三")
    assert normalise_name("\ufeff张小三\u2060") == normalise_name("张 小 三")
    c = cert(Department.MEM, MEM_NUMBER, holder_name="张小三", holder_id_number=ID_ZHANG, status=CertStatus.VALID)
    a = build_answer(
        Query(number=MEM_NUMBER, name="张\u200b小三"), classify(MEM_NUMBER), [found("mem_records", c)], catalogue(), TODAY
    )
    assert a.verdict == Verdict.VALID and a.certificates[0].name_matches is True
