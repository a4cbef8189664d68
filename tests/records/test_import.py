"""Reading departments' files: encodings, header aliases, title rows, spreadsheets, dates, unreadable files.

Every test imports a real file through `RecordStore.import_file` and checks what a user would: the batch
status, the problems (line, column, value, reason) and what a lookup then finds. Each runs on SQLite and
on PostgreSQL (see `tests/records_support.py`).
"""

from __future__ import annotations

import zipfile
from datetime import date, datetime

import pytest

from aggregator.models import CertKind, CertStatus
from aggregator.records import BatchStatus, RecordStore
from tests.conftest import FIXTURES
from tests.records_support import (
    HEADER,
    ID_LI,
    ID_WANG,
    ID_ZHANG,
    mem_row,
    write_csv,
    write_xlsx,
)

MEM_NUMBER = "T" + ID_ZHANG


async def only_certificate(store: RecordStore, department: str, number: str):
    hit = await store.find(department, number=number)
    assert len(hit.certificates) == 1, hit
    return hit.certificates[0]


# --- CSV encodings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gbk", "gb18030"])
async def test_csv_in_gbk_or_gb18030_with_chinese_headers_imports(store, tmp_path, encoding) -> None:
    path = write_csv(tmp_path / "mem.csv", [mem_row(name="欧阳小明", issuer="河北省应急管理厅")], encoding=encoding)

    report = await store.import_file(path, department="mem", quarter="2026Q1")

    assert report.status == BatchStatus.IMPORTED, report.problems
    assert report.encoding == "gb18030"
    cert = await only_certificate(store, "mem", MEM_NUMBER)
    assert (cert.holder_name, cert.issuer, cert.category) == ("欧阳小明", "河北省应急管理厅", "电工作业")


async def test_csv_in_utf8_with_bom_imports_and_the_bom_is_not_part_of_the_first_header(store, tmp_path) -> None:
    path = write_csv(tmp_path / "mem.csv", [mem_row()], encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")

    report = await store.import_file(path, department="mem", quarter="2026Q1")

    assert report.status == BatchStatus.IMPORTED, report.problems
    assert not report.warnings  # 证书编号 was recognised, not reported as an unknown "\ufeff证书编号"
    assert (await only_certificate(store, "mem", MEM_NUMBER)).holder_name == "张小三"


async def test_csv_in_plain_utf8_imports(store, tmp_path) -> None:
    path = write_csv(tmp_path / "mem.csv", [mem_row(), mem_row(ID_LI, "李四")], encoding="utf-8")

    report = await store.import_file(path, department="mem", quarter="2026Q1")

    assert (report.status, report.rows_total, report.rows_imported) == (BatchStatus.IMPORTED, 2, 2)
    assert (await only_certificate(store, "mem", "T" + ID_LI)).holder_name == "李四"


async def test_tab_separated_text_imports(store, tmp_path) -> None:
    path = tmp_path / "mem.txt"
    path.write_text("\t".join(HEADER) + "\n" + "\t".join(mem_row()) + "\n", encoding="utf-8")

    report = await store.import_file(path, department="mem", quarter="2026Q1")

    assert report.status == BatchStatus.IMPORTED, report.problems
    assert (await only_certificate(store, "mem", MEM_NUMBER)).operation_item == "低压电工作业"


async def test_csv_in_an_encoding_none_of_the_departments_encodings_decodes_is_rejected_saying_so(
    store, tmp_path
) -> None:
    path = write_csv(tmp_path / "mem.csv", [mem_row()], encoding="utf-16")

    report = await store.import_file(path, department="mem", quarter="2026Q1")

    assert report.status == BatchStatus.REJECTED
    assert "cannot decode" in report.problems[0].reason and "GB18030" in report.problems[0].reason


# --- Headers -------------------------------------------------------------------------------------


async def test_english_headers_import(store, tmp_path) -> None:
    header = ["Certificate Number", "Name", "ID_Number", "Category", "Operation Item", "Valid Until", "Status"]
    row = [MEM_NUMBER, "张小三", ID_ZHANG, "电工作业", "高压电工作业", "2029-01-02", "暂扣"]
    path = write_csv(tmp_path / "mem.csv", [row], header)

    report = await store.import_file(path, department="mem", quarter="2026Q1")

    assert report.status == BatchStatus.IMPORTED, report.problems
    cert = await only_certificate(store, "mem", MEM_NUMBER)
    assert (cert.operation_item, cert.valid_until, cert.status) == ("高压电工作业", date(2029, 1, 2), CertStatus.SUSPENDED)


async def test_mem_pinyin_field_names_import(store, tmp_path) -> None:
    header = ["zsbh", "xm", "sfzh", "xb", "zylb", "czxm", "clrq", "yxqksrq", "yxqjsrq", "yfsrq", "qfjg", "zszt"]
    row = [MEM_NUMBER, "张小三", ID_ZHANG, "男", "电工作业", "低压电工作业", "2020-01-02", "2023-01-02",
           "2029-01-02", "2026-01-02", "北京市应急管理局", "有效"]
    path = write_csv(tmp_path / "mem.csv", [row], header)

    report = await store.import_file(path, department="mem", quarter="2026Q1")

    assert report.status == BatchStatus.IMPORTED, report.problems
    cert = await only_certificate(store, "mem", MEM_NUMBER)
    assert cert.gender == "男" and cert.issuer == "北京市应急管理局"
    assert (cert.issued_on, cert.next_review_on) == (date(2020, 1, 2), date(2026, 1, 2))


async def test_mohurd_exchange_schema_headers_and_certstate_codes_import(store, tmp_path) -> None:
    header = ["certNum", "name", "gender", "identityCard", "operationCategory", "categoryDescription", "issuAuth",
              "issuedDate", "effectiveDate", "expiringDate", "certState"]
    rows = [
        ["京A012024000123", "李四", "1", ID_LI, "建筑电工", "建筑电工", "北京市住房和城乡建设委员会", "2024-05-06",
         "2024-05-06", "2030-05-06", "01"],
        ["京A012024000124", "王五", "2", ID_WANG, "建筑电工", "建筑电工", "北京市住房和城乡建设委员会", "2024-05-06",
         "2024-05-06", "2030-05-06", "02"],
    ]
    path = write_csv(tmp_path / "mohurd.csv", rows, header)

    report = await store.import_file(path, department="mohurd", quarter="2026Q1")

    assert report.status == BatchStatus.IMPORTED, report.problems
    li = await only_certificate(store, "mohurd", "京A012024000123")
    wang = await only_certificate(store, "mohurd", "京A012024000124")
    assert (li.status, li.gender, li.holder_id_number) == (CertStatus.VALID, "男", ID_LI)
    assert (wang.status, wang.gender) == (CertStatus.SUSPENDED, "女")
    assert li.kind == CertKind.MOHURD_CONSTRUCTION


async def test_samr_field_names_and_joined_item_codes_import(store, tmp_path) -> None:
    header = ["zsbh", "ryxm", "sfzh", "ryxb", "cyzl", "czxm", "fzjg", "pzrq", "yxrqs", "yxrqz", "validFlag"]
    row = [ID_ZHANG, "张小三", ID_ZHANG, "男", "特种设备焊接作业", "GTAW-FeⅡ-6G-3/60-FefS-02/10/12和SMAW-FeⅡ-2G-12-Fef3J",
           "北京市市场监督管理局", "2022-01-01", "2022-01-01", "2030-01-01", "1"]
    path = write_csv(tmp_path / "samr.csv", [row], header)

    report = await store.import_file(path, department="samr", quarter="2026Q1")

    assert report.status == BatchStatus.IMPORTED, report.problems
    cert = await only_certificate(store, "samr", ID_ZHANG)
    assert cert.items == ["GTAW-FeII-6G-3/60-FefS-02/10/12", "SMAW-FeII-2G-12-Fef3J"]
    assert cert.status == CertStatus.VALID


async def test_mohrss_headers_and_an_older_16_digit_number_import_as_a_qualification(store, tmp_path) -> None:
    header = ["证书编码", "姓名", "证件号码（身份证）", "职业（工种）名称", "职业技能等级", "评价机构", "发证时间"]
    rows = [
        ["S000111000001264000123", "李四", ID_LI, "电工", "四级/中级工", "某评价机构", "2026-03-01"],
        ["0511011001300012", "王五", ID_WANG, "焊工", "中级", "某鉴定站", "2005-06-01"],
    ]
    path = write_csv(tmp_path / "mohrss.csv", rows, header)

    report = await store.import_file(path, department="mohrss", quarter="2026Q1")

    assert report.status == BatchStatus.IMPORTED, report.problems
    skill = await only_certificate(store, "mohrss", "S000111000001264000123")
    older = await only_certificate(store, "mohrss", "0511011001300012")
    assert (skill.kind, skill.category, skill.level) == (CertKind.MOHRSS_SKILL_LEVEL, "电工", "四级/中级工")
    assert older.kind == CertKind.MOHRSS_QUALIFICATION


async def test_headers_with_spaces_asterisks_and_full_width_colons_are_recognised(store, tmp_path) -> None:
    header = ["*证书编号：", " 姓 名 ", "身份证号码", "有效期至"]
    path = write_csv(tmp_path / "mem.csv", [[MEM_NUMBER, "张小三", ID_ZHANG, "2029-01-02"]], header)

    report = await store.import_file(path, department="mem", quarter="2026Q1")

    assert report.status == BatchStatus.IMPORTED, report.problems
    assert (await only_certificate(store, "mem", MEM_NUMBER)).valid_until == date(2029, 1, 2)


async def test_a_title_row_above_the_header_is_skipped_and_lines_are_counted_from_the_top_of_the_file(
    store, tmp_path
) -> None:
    rows = [mem_row(), mem_row(ID_LI, "李四", valid_until="2029-02-30")]
    path = write_csv(tmp_path / "mem.csv", rows, above=["北京市2026年第一季度特种作业操作证数据,,,,"])

    rejected = await store.import_file(path, department="mem", quarter="2026Q1")

    assert rejected.status == BatchStatus.REJECTED
    [problem] = rejected.problems
    assert (problem.line, problem.column, problem.value) == (4, "有效期至", "2029-02-30")  # title 1, header 2
    assert any("line 2" in w for w in rejected.warnings)

    write_csv(path, rows[:1], above=["北京市2026年第一季度特种作业操作证数据,,,,"])
    report = await store.import_file(path, department="mem", quarter="2026Q1")
    assert report.status == BatchStatus.IMPORTED, report.problems
    assert (await only_certificate(store, "mem", MEM_NUMBER)).holder_name == "张小三"


async def test_unknown_columns_are_ignored_with_a_warning(store, tmp_path) -> None:
    path = write_csv(tmp_path / "mem.csv", [[*mem_row(), "备注内容"]], [*HEADER, "备注"])

    report = await store.import_file(path, department="mem", quarter="2026Q1")

    assert report.status == BatchStatus.IMPORTED, report.problems
    assert any("备注" in w for w in report.warnings)


# --- Spreadsheets --------------------------------------------------------------------------------


async def test_xlsx_with_numbers_as_text_keeps_leading_zeros(store, tmp_path) -> None:
    header = ["证书编码", "姓名", "身份证号", "职业（工种）名称", "发证时间"]
    path = write_xlsx(tmp_path / "mohrss.xlsx", [["0511011001300012", "王五", ID_WANG, "焊工", "2005-06-01"]], header)

    report = await store.import_file(path, department="mohrss", quarter="2026Q1")

    assert (report.status, report.file_format) == (BatchStatus.IMPORTED, "xlsx"), report.problems
    cert = await only_certificate(store, "mohrss", "0511011001300012")
    assert cert.holder_id_number == ID_WANG
    assert (await store.find("mohrss", id_number=ID_WANG)).certificates[0].number == "0511011001300012"


async def test_xlsx_with_an_id_number_stored_as_a_number_cell_is_refused_telling_to_format_the_column_as_text(
    store, tmp_path
) -> None:
    rows = [
        [MEM_NUMBER, "张小三", ID_ZHANG, "电工作业", "低压电工作业"],
        ["T" + ID_LI, "李四", int(ID_LI), "电工作业", "低压电工作业"],  # Excel keeps 15 significant digits
    ]
    path = write_xlsx(tmp_path / "mem.xlsx", rows, HEADER[:5])

    report = await store.import_file(path, department="mem", quarter="2026Q1")

    assert report.status == BatchStatus.REJECTED
    [problem] = report.problems  # only the ID cell: the row's number and name are not blamed
    assert (problem.line, problem.column) == (3, "身份证号")
    assert "lost digits" in problem.reason and "format the column as text" in problem.reason
    assert problem.value is not None and "e+17" in problem.value
    assert report.rejected_rows[0].line == 3 and report.rejected_rows[0].cells["姓名"] == "李四"
    assert (await store.find("mem", number=MEM_NUMBER)).certificates == []


async def test_xlsx_date_cells_and_excel_serial_numbers_parse(store, tmp_path) -> None:
    header = ["证书编号", "姓名", "身份证号", "初领日期", "有效期起", "有效期至", "复审日期"]
    row = [MEM_NUMBER, "张小三", ID_ZHANG, 45293, datetime(2024, 1, 2, 9, 30), date(2030, 1, 2), 46000.75]
    path = write_xlsx(tmp_path / "mem.xlsx", [row], header)

    report = await store.import_file(path, department="mem", quarter="2026Q1")

    assert report.status == BatchStatus.IMPORTED, report.problems
    cert = await only_certificate(store, "mem", MEM_NUMBER)
    assert cert.issued_on == date(2024, 1, 2)  # serial 45293
    assert cert.valid_from == date(2024, 1, 2)  # a datetime cell: the time of day is dropped
    assert cert.valid_until == date(2030, 1, 2)
    assert cert.next_review_on == date(2025, 12, 9)  # serial 46000, the fraction (a time) dropped


async def test_xlsx_with_text_dates_in_chinese_form_parse(store, tmp_path) -> None:
    header = ["证书编号", "姓名", "身份证号", "有效期至"]
    path = write_xlsx(tmp_path / "mem.xlsx", [[MEM_NUMBER, "张小三", ID_ZHANG, "2030年1月2日"]], header)

    report = await store.import_file(path, department="mem", quarter="2026Q1")

    assert report.status == BatchStatus.IMPORTED, report.problems
    assert (await only_certificate(store, "mem", MEM_NUMBER)).valid_until == date(2030, 1, 2)


async def test_xlsx_with_a_date_in_the_id_column_is_refused(store, tmp_path) -> None:
    path = write_xlsx(tmp_path / "mem.xlsx", [[MEM_NUMBER, "张小三", date(1990, 3, 7)]], HEADER[:3])

    report = await store.import_file(path, department="mem", quarter="2026Q1")

    assert report.status == BatchStatus.REJECTED
    [problem] = report.problems
    assert problem.column == "身份证号" and "a date in an identifier column" in problem.reason


# --- Dates ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "written",
    ["2024-01-02", "2024/1/2", "2024/01/02", "2024.1.2", "2024年1月2日", "2024年01月02日", "20240102", "45293",
     "2024-01-02 00:00:00", "２０２４－０１－０２"],
)
async def test_dates_in_every_common_form_parse(sqlite_store, tmp_path, written) -> None:
    path = write_csv(tmp_path / "mem.csv", [mem_row(issued=written)])

    report = await sqlite_store.import_file(path, department="mem", quarter="2026Q1")

    assert report.status == BatchStatus.IMPORTED, report.problems
    assert (await only_certificate(sqlite_store, "mem", MEM_NUMBER)).issued_on == date(2024, 1, 2)


@pytest.mark.parametrize(
    ("written", "why"),
    [("2024-02-30", "no such date"), ("next year", "not a date"), ("1024-01-02", "implausible date"),
     ("01/02/2024", "not a date")],
)
async def test_a_date_that_cannot_be_read_is_a_problem_naming_the_cell(sqlite_store, tmp_path, written, why) -> None:
    path = write_csv(tmp_path / "mem.csv", [mem_row(issued=written)])

    report = await sqlite_store.import_file(path, department="mem", quarter="2026Q1")

    assert report.status == BatchStatus.REJECTED
    [problem] = report.problems
    assert (problem.line, problem.column, problem.value) == (2, "初领日期", written)
    assert why in problem.reason


# --- Unreadable files ----------------------------------------------------------------------------


async def assert_rejected_as_a_batch(store: RecordStore, report, words: str) -> None:
    assert report.status == BatchStatus.REJECTED
    assert report.rows_imported == 0
    assert report.problems and words in report.problems[0].reason, report.problems
    listed = await store.list_batches("mem")
    assert [(b.id, b.status) for b in listed] == [(report.id, BatchStatus.REJECTED)]
    shown = await store.get_batch(report.id)
    assert shown is not None and shown.problems == report.problems


async def test_a_file_with_an_unsupported_extension_is_a_rejected_batch(store, tmp_path) -> None:
    path = tmp_path / "mem.pdf"
    path.write_bytes(b"%PDF-1.4 not a table")

    report = await store.import_file(path, department="mem", quarter="2026Q1")

    await assert_rejected_as_a_batch(store, report, "unsupported file type .pdf")


async def test_an_xlsx_that_is_not_a_workbook_is_a_rejected_batch(store, tmp_path) -> None:
    path = tmp_path / "mem.xlsx"
    path.write_text(",".join(HEADER) + "\n", encoding="utf-8")  # a CSV renamed to .xlsx

    report = await store.import_file(path, department="mem", quarter="2026Q1")

    await assert_rejected_as_a_batch(store, report, "is not a workbook")


async def test_a_zip_file_named_xlsx_that_holds_no_workbook_is_a_rejected_batch(store, tmp_path) -> None:
    path = tmp_path / "mem.xlsx"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "not a workbook")

    report = await store.import_file(path, department="mem", quarter="2026Q1")

    await assert_rejected_as_a_batch(store, report, "cannot read the workbook")


async def test_a_truncated_workbook_is_a_rejected_batch(store, tmp_path) -> None:
    good = write_xlsx(tmp_path / "good.xlsx", [mem_row()])
    path = tmp_path / "mem.xlsx"
    path.write_bytes(good.read_bytes()[:600])

    report = await store.import_file(path, department="mem", quarter="2026Q1")

    await assert_rejected_as_a_batch(store, report, "cannot read the workbook")


async def test_an_empty_file_is_a_rejected_batch(store, tmp_path) -> None:
    path = tmp_path / "mem.csv"
    path.write_bytes(b"")

    report = await store.import_file(path, department="mem", quarter="2026Q1")

    await assert_rejected_as_a_batch(store, report, "the file is empty")


async def test_a_header_without_data_rows_is_a_rejected_batch(store, tmp_path) -> None:
    path = write_csv(tmp_path / "mem.csv", [])

    report = await store.import_file(path, department="mem", quarter="2026Q1")

    await assert_rejected_as_a_batch(store, report, "no data rows")


async def test_a_header_missing_a_required_column_is_a_rejected_batch_naming_the_column(store, tmp_path) -> None:
    header = ["姓名", "身份证号", "有效期至"]
    path = write_csv(tmp_path / "mem.csv", [["张小三", ID_ZHANG, "2029-01-02"]], header)

    report = await store.import_file(path, department="mem", quarter="2026Q1")

    await assert_rejected_as_a_batch(store, report, "required column missing: number")
    assert "证书编号" in report.problems[0].reason


async def test_two_columns_meaning_the_same_field_are_a_rejected_batch(store, tmp_path) -> None:
    header = ["证书编号", "姓名", "身份证号", "公民身份号码"]
    path = write_csv(tmp_path / "mem.csv", [[MEM_NUMBER, "张小三", ID_ZHANG, ID_ZHANG]], header)

    report = await store.import_file(path, department="mem", quarter="2026Q1")

    await assert_rejected_as_a_batch(store, report, "two columns map to id_number")


async def test_a_csv_with_an_unterminated_quote_is_a_rejected_batch_not_a_crash(store, tmp_path) -> None:
    path = tmp_path / "mem.csv"
    text = ",".join(HEADER) + "\n" + ",".join(mem_row()) + "\n" + '"T' + ID_LI + ',李四\n'
    path.write_text(text, encoding="utf-8")

    report = await store.import_file(path, department="mem", quarter="2026Q1")

    assert report.status == BatchStatus.REJECTED
    assert (await store.find("mem", number=MEM_NUMBER)).certificates == []



async def test_xlsx_rows_are_counted_as_the_spreadsheet_numbers_them_even_below_empty_rows(store, tmp_path) -> None:
    from openpyxl import Workbook

    bad = ID_WANG[:17] + ("0" if ID_WANG[17] != "0" else "1")
    book = Workbook()
    sheet = book.active
    for row, values in ((3, HEADER[:3]), (4, [MEM_NUMBER, "张小三", ID_ZHANG]), (5, ["T" + bad, "王五", bad])):
        for col, value in enumerate(values, start=2):  # from column B, below two empty rows
            sheet.cell(row=row, column=col, value=value)
    path = tmp_path / "mem.xlsx"
    book.save(path)

    report = await store.import_file(path, department="mem", quarter="2026Q1")

    assert report.status == BatchStatus.REJECTED
    assert [(p.line, p.column, p.value) for p in report.problems] == [(5, "身份证号", bad)]


async def test_only_the_first_visible_sheet_of_a_workbook_is_read_with_a_warning_naming_the_others(
    store, tmp_path
) -> None:
    from openpyxl import Workbook

    book = Workbook()
    notes = book.active
    notes.title, notes.sheet_state = "填表说明", "hidden"
    notes.append(["请勿修改表头"])
    data = book.create_sheet("数据")
    data.append(HEADER[:3])
    data.append([MEM_NUMBER, "张小三", ID_ZHANG])
    book.create_sheet("备注").append(["随便写写"])
    path = tmp_path / "mem.xlsx"
    book.save(path)

    report = await store.import_file(path, department="mem", quarter="2026Q1")

    assert report.status == BatchStatus.IMPORTED, report.problems
    assert any("备注" in w and "数据" in w for w in report.warnings)
    assert (await only_certificate(store, "mem", MEM_NUMBER)).holder_id_number == ID_ZHANG


async def test_xlsx_with_a_16_digit_number_stored_as_a_number_cell_keeps_it_exactly(store, tmp_path) -> None:
    path = write_xlsx(tmp_path / "mohrss.xlsx", [[1511011001300012, "王五"]], ["证书编码", "姓名"])

    report = await store.import_file(path, department="mohrss", quarter="2026Q1")

    assert report.status == BatchStatus.IMPORTED, report.problems
    cert = await only_certificate(store, "mohrss", "1511011001300012")
    assert cert.kind == CertKind.MOHRSS_QUALIFICATION


# --- What one column says about another ----------------------------------------------------------


async def test_a_mem_file_without_an_id_column_takes_the_id_from_the_t_number(store, tmp_path) -> None:
    path = write_csv(tmp_path / "mem.csv", [[MEM_NUMBER, "张小三"]], ["证书编号", "姓名"])

    report = await store.import_file(path, department="mem", quarter="2026Q1")

    assert report.status == BatchStatus.IMPORTED, report.problems
    [cert] = (await store.find("mem", id_number=ID_ZHANG)).certificates
    assert cert.number == MEM_NUMBER


async def test_a_samr_file_without_an_id_column_takes_the_id_from_the_number(store, tmp_path) -> None:
    path = write_csv(tmp_path / "samr.csv", [[ID_LI, "李四", "特种设备焊接作业"]], ["证书编号", "姓名", "作业类别"])

    report = await store.import_file(path, department="samr", quarter="2026Q1")

    assert report.status == BatchStatus.IMPORTED, report.problems
    assert [c.number for c in (await store.find("samr", id_number=ID_LI)).certificates] == [ID_LI]


async def test_a_mem_number_whose_id_part_differs_from_the_id_column_is_a_problem(store, tmp_path) -> None:
    path = write_csv(tmp_path / "mem.csv", [mem_row(ID_LI, "李四", number=MEM_NUMBER)])

    report = await store.import_file(path, department="mem", quarter="2026Q1")

    assert report.status == BatchStatus.REJECTED
    [problem] = report.problems
    assert (problem.column, problem.value) == ("证书编号", MEM_NUMBER) and ID_LI in problem.reason


async def test_lines_are_counted_as_in_the_file_across_blank_lines_and_multi_line_cells(store, tmp_path) -> None:
    bad = ID_WANG[:17] + ("0" if ID_WANG[17] != "0" else "1")
    text = (
        ",".join(HEADER) + "\n"
        + ",".join(mem_row(issuer='"北京市\n应急管理局"')) + "\n"  # lines 2-3
        + "\n"  # line 4, blank
        + ",".join(mem_row(bad, "王五")) + "\n"  # line 5
    )
    path = tmp_path / "mem.csv"
    path.write_text(text, encoding="utf-8")

    report = await store.import_file(path, department="mem", quarter="2026Q1", partial=True)

    assert report.rows_total == 2
    assert [p.line for p in report.problems] == [5]
    assert (await only_certificate(store, "mem", MEM_NUMBER)).issuer == "北京市\n应急管理局"


async def test_legacy_xls_reads_text_ids_and_date_cells(store, tmp_path) -> None:
    # Written by tests/fixtures/records/make_xls.py (xlwt): BIFF8, as older department systems export.
    path = tmp_path / "mem-2026Q1.xls"
    path.write_bytes((FIXTURES / "records" / "mem-2026Q1.xls").read_bytes())

    report = await store.import_file(path, department="mem", quarter="2026Q1")

    assert (report.status, report.file_format, report.rows_imported) == (BatchStatus.IMPORTED, "xls", 2), report.problems
    zhang = await only_certificate(store, "mem", "T110105199003071239")
    assert (zhang.holder_name, zhang.issued_on, zhang.valid_until) == ("张小三", date(2020, 1, 2), date(2099, 1, 1))
    ouyang = await only_certificate(store, "mem", "t31010119851212106x")  # found however it is typed
    assert ouyang.holder_id_number == "31010119851212106X" and ouyang.valid_until == date(2021, 3, 1)


async def test_xlsx_certificate_number_stored_as_a_number_that_lost_its_leading_zero_is_refused(store, tmp_path) -> None:
    header = ["证书编码", "姓名", "身份证号", "职业（工种）名称", "发证时间"]
    rows = [
        ["0511011001300012", "王五", ID_WANG, "焊工", "2005-06-01"],  # text: kept as written
        [511011001300013, "王五", ID_WANG, "电工", "2005-06-01"],  # Excel dropped the 0 of 0511011001300013
    ]
    path = write_xlsx(tmp_path / "mohrss.xlsx", rows, header)

    report = await store.import_file(path, department="mohrss", quarter="2026Q1")

    assert report.status == BatchStatus.REJECTED
    [problem] = report.problems
    assert (problem.line, problem.column) == (3, "证书编码") and problem.value.startswith("511011001300013")
    assert "leading 0" in problem.reason and "format the column as text" in problem.reason
    assert (await store.find("mohrss", number="0511011001300012")).certificates == []
