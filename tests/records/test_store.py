"""The records store: all-or-nothing imports and their reports, --partial, duplicates, re-imports, newer
quarters superseding older ones, failures half-way, lookups and the generation that invalidates caches.

Every test runs on SQLite and on PostgreSQL (bulk insert by COPY there); see `tests/records_support.py`.
"""

from __future__ import annotations

from datetime import date, datetime

import pytest
import sqlalchemy as sa

from aggregator.models import CertStatus, Department
from aggregator.records import AlreadyImported, BatchStatus, InvalidQuarter, RecordStore
from aggregator.records import ingest as ingest_module
from aggregator.records.report import CHINA_TIME
from aggregator.records.schema import LOOKUP_INDEXES, metadata
from tests.records_support import (
    BACKENDS,
    HEADER,
    ID_LI,
    ID_WANG,
    ID_X,
    ID_ZHANG,
    ID_ZHAO,
    csv_text,
    make_id,
    mem_row,
    open_store,
    problems_on,
    write_csv,
)

ZHANG, LI, WANG = "T" + ID_ZHANG, "T" + ID_LI, "T" + ID_WANG
BAD_CHECK = ID_WANG[:17] + ("0" if ID_WANG[17] != "0" else "1")  # a typo in the check character


async def numbers_found(store: RecordStore, *numbers: str, department: str = "mem") -> set[str]:
    found = set()
    for number in numbers:
        found |= {c.number for c in (await store.find(department, number=number)).certificates}
    return found


async def import_rows(store: RecordStore, tmp_path, name: str, rows, *, quarter: str = "2026Q1", **kw):
    path = write_csv(tmp_path / name, rows, kw.pop("header", HEADER))
    return await store.import_file(path, department=kw.pop("department", "mem"), quarter=quarter, **kw)


# --- Invalid rows --------------------------------------------------------------------------------


async def test_a_file_with_one_invalid_row_is_rejected_whole_and_nothing_is_imported(store, tmp_path) -> None:
    rows = [mem_row(), mem_row(ID_LI, "李四"), mem_row(BAD_CHECK, "王五")]

    report = await import_rows(store, tmp_path, "mem.csv", rows)

    assert report.status == BatchStatus.REJECTED
    assert (report.rows_total, report.rows_imported, report.rows_rejected) == (3, 0, 1)
    assert await numbers_found(store, ZHANG, LI) == set()
    assert (await store.find("mem", id_number=ID_ZHANG)).certificates == []
    assert await store.generation("mem") == 0


async def test_the_report_gives_line_column_value_and_reason_of_every_problem(store, tmp_path) -> None:
    rows = [
        mem_row(),
        mem_row(BAD_CHECK, "王五"),  # line 3
        mem_row(ID_LI, "  "),  # line 4
        mem_row(ID_ZHAO, "赵六", status="冻结"),  # line 5
        mem_row(ID_X, "钱七", valid_from="2025-01-01", valid_until="2024-12-31"),  # line 6
    ]

    report = await import_rows(store, tmp_path, "mem.csv", rows)

    assert report.status == BatchStatus.REJECTED and report.problems_total == 4
    [bad_id] = problems_on(report, 3)
    assert (bad_id.column, bad_id.value) == ("身份证号", BAD_CHECK)
    assert f"should be {ID_WANG[17]}" in bad_id.reason
    [no_name] = problems_on(report, 4)
    assert (no_name.column, no_name.reason) == ("姓名", "姓名为空 (name is empty)")
    [status] = problems_on(report, 5)
    assert (status.column, status.value) == ("证书状态", "冻结") and "status_map" in status.reason
    [order] = problems_on(report, 6)
    assert (order.column, order.value) == ("有效期至", "2024-12-31") and "before valid_from" in order.reason
    assert problems_on(report, 2) == []
    kept = await store.get_batch(report.id)
    assert kept is not None and kept.problems == report.problems and kept.status == BatchStatus.REJECTED


async def test_with_partial_the_good_rows_are_imported_and_the_rejected_ones_kept_with_reasons(store, tmp_path) -> None:
    rows = [mem_row(), mem_row(BAD_CHECK, "王五"), mem_row(ID_LI, "李四")]

    report = await import_rows(store, tmp_path, "mem.csv", rows, partial=True)

    assert report.status == BatchStatus.PARTIAL and report.partial
    assert (report.rows_total, report.rows_imported, report.rows_rejected) == (3, 2, 1)
    assert await numbers_found(store, ZHANG, LI, "T" + BAD_CHECK) == {ZHANG, LI}
    kept = await store.get_batch(report.id)
    assert kept is not None and kept.status == BatchStatus.PARTIAL
    [rejected] = kept.rejected_rows
    assert rejected.line == 3
    assert rejected.cells["身份证号"] == BAD_CHECK and rejected.cells["姓名"] == "王五"
    assert [(p.line, p.column) for p in kept.problems] == [(3, "身份证号")]


async def test_with_partial_a_file_without_any_good_row_is_rejected(store, tmp_path) -> None:
    report = await import_rows(store, tmp_path, "mem.csv", [mem_row(BAD_CHECK, "王五")], partial=True)

    assert report.status == BatchStatus.REJECTED and report.rows_imported == 0
    assert await store.generation("mem") == 0


async def test_a_row_with_more_cells_than_the_header_is_reported_as_misaligned_and_nothing_else(
    store, tmp_path
) -> None:
    path = tmp_path / "mem.csv"
    path.write_text(csv_text([mem_row()]) + ",".join(mem_row(ID_LI, "李四")) + ",多出来,的列\n", encoding="utf-8")

    report = await store.import_file(path, department="mem", quarter="2026Q1")

    assert report.status == BatchStatus.REJECTED
    [problem] = report.problems  # not also "name is empty" about the row set aside
    assert problem.line == 3 and "misaligned" in problem.reason


async def test_bytes_in_another_encoding_far_into_a_utf8_file_are_reported_on_their_row(store, tmp_path) -> None:
    filler_ids = [make_id("110105", "19900307", f"{i:03d}") for i in range(800)]
    filler = [mem_row(id_number, name=f"张{i:04d}") for i, id_number in enumerate(filler_ids)]  # > 64 KiB
    head = csv_text(filler).encode("utf-8")
    assert len(head) > 64 * 1024
    path = tmp_path / "mem.csv"
    path.write_bytes(head + ",".join(mem_row(ID_LI, "李四")).encode("gbk") + b"\n")

    report = await store.import_file(path, department="mem", quarter="2026Q1", partial=True)

    assert report.status == BatchStatus.PARTIAL and report.encoding in ("utf-8", "utf-8-sig")
    line = len(filler) + 2
    assert {p.line for p in report.problems} == {line}
    assert "mixes encodings" in report.problems[0].reason
    assert await numbers_found(store, LI) == set()
    assert await numbers_found(store, "T" + filler_ids[-1]) == {"T" + filler_ids[-1]}


# --- Duplicates ----------------------------------------------------------------------------------


async def test_a_file_repeating_a_certificate_is_rejected_naming_the_first_occurrence(store, tmp_path) -> None:
    rows = [mem_row(), mem_row(ID_LI, "李四"), mem_row(name="张小三（重复）")]

    report = await import_rows(store, tmp_path, "mem.csv", rows)

    assert report.status == BatchStatus.REJECTED
    [dup] = report.problems
    assert (dup.line, dup.column, dup.value) == (4, "证书编号", ZHANG)
    assert "line 2" in dup.reason and "duplicate" in dup.reason
    assert await numbers_found(store, ZHANG, LI) == set()


async def test_with_partial_a_repeated_certificate_keeps_its_first_row(store, tmp_path) -> None:
    rows = [mem_row(), mem_row(ID_LI, "李四"), mem_row(name="张小三（重复）")]

    report = await import_rows(store, tmp_path, "mem.csv", rows, partial=True)

    assert report.status == BatchStatus.PARTIAL and (report.rows_imported, report.rows_rejected) == (2, 1)
    [cert] = (await store.find("mem", number=ZHANG)).certificates
    assert cert.holder_name == "张小三"
    [rejected] = (await store.get_batch(report.id)).rejected_rows
    assert rejected.line == 4 and rejected.cells["姓名"] == "张小三（重复）"


async def test_one_mem_holder_with_two_operation_items_is_two_certificates_not_a_duplicate(store, tmp_path) -> None:
    rows = [mem_row(item="低压电工作业"), mem_row(item="高压电工作业")]

    report = await import_rows(store, tmp_path, "mem.csv", rows)

    assert report.status == BatchStatus.IMPORTED, report.problems
    hit = await store.find("mem", number=ZHANG)
    assert sorted(c.operation_item for c in hit.certificates) == ["低压电工作业", "高压电工作业"]


async def test_every_imported_record_carries_the_frame_key_of_its_certificate(store, tmp_path) -> None:
    from aggregator.records.frame_key import frame_key

    rows = [mem_row(item="低压电工作业"), mem_row(item="高压电工作业")]
    assert (await import_rows(store, tmp_path, "mem.csv", rows)).status == BatchStatus.IMPORTED
    async with store.engine.connect() as conn:
        stored = (await conn.execute(sa.text("SELECT number, operation_item, holder_id_number, frame_key "
                                             "FROM records ORDER BY operation_item"))).all()  # fmt: skip
    assert [r.frame_key for r in stored] == [
        frame_key("mem", r.number, r.operation_item, r.holder_id_number) for r in stored
    ]
    assert len({r.frame_key for r in stored}) == 2 and all(0 < r.frame_key < 2**63 for r in stored)


async def test_a_repeated_mohurd_number_is_a_duplicate(store, tmp_path) -> None:
    rows = [
        ["京A012024000123", "李四", ID_LI, "建筑电工", "建筑电工"],
        ["京A012024000123", "李四", ID_LI, "建筑电工", "建筑电工"],
    ]

    report = await import_rows(store, tmp_path, "mohurd.csv", rows, header=HEADER[:5], department="mohurd")

    assert report.status == BatchStatus.REJECTED
    assert [(p.line, p.value) for p in report.problems] == [(3, "京A012024000123")]


# --- Importing again -----------------------------------------------------------------------------


async def test_the_same_file_imported_twice_raises_already_imported_and_adds_nothing(store, tmp_path) -> None:
    path = write_csv(tmp_path / "mem.csv", [mem_row(), mem_row(ID_LI, "李四")])
    first = await store.import_file(path, department="mem", quarter="2026Q1")
    generation = await store.generation("mem")

    with pytest.raises(AlreadyImported) as caught:  # for a newer quarter it is that quarter's upload (issue 14,
        await store.import_file(path, department="mem", quarter="2026Q1")  # tests/records/test_upload_freshness.py)

    assert caught.value.batch_id == first.id
    assert [b.id for b in await store.list_batches()] == [first.id]
    assert await store.generation("mem") == generation
    assert (await store.find("mem", number=ZHANG)).quarter == "2026Q1"


async def test_the_same_content_under_another_file_name_is_already_imported(store, tmp_path) -> None:
    first = await import_rows(store, tmp_path, "mem-2026Q1.csv", [mem_row()])
    copy = tmp_path / "copy of mem-2026Q1.csv"
    copy.write_bytes((tmp_path / "mem-2026Q1.csv").read_bytes())

    with pytest.raises(AlreadyImported) as caught:
        await store.import_file(copy, department="mem", quarter="2026Q1")

    assert caught.value.batch_id == first.id


async def test_a_rejected_file_can_be_imported_after_a_fix(store, tmp_path) -> None:
    path = write_csv(tmp_path / "mem.csv", [mem_row(), mem_row(BAD_CHECK, "王五")])
    rejected = await store.import_file(path, department="mem", quarter="2026Q1")
    assert rejected.status == BatchStatus.REJECTED

    write_csv(path, [mem_row(), mem_row(ID_WANG, "王五")])
    fixed = await store.import_file(path, department="mem", quarter="2026Q1")

    assert fixed.status == BatchStatus.IMPORTED, fixed.problems
    assert await numbers_found(store, ZHANG, WANG) == {ZHANG, WANG}
    assert [(b.id, b.status) for b in await store.list_batches("mem")] == [
        (fixed.id, BatchStatus.IMPORTED),
        (rejected.id, BatchStatus.REJECTED),
    ]


async def test_a_rejected_file_can_be_imported_unchanged_with_partial(store, tmp_path) -> None:
    path = write_csv(tmp_path / "mem.csv", [mem_row(), mem_row(BAD_CHECK, "王五")])
    await store.import_file(path, department="mem", quarter="2026Q1")

    report = await store.import_file(path, department="mem", quarter="2026Q1", partial=True)

    assert report.status == BatchStatus.PARTIAL
    assert await numbers_found(store, ZHANG) == {ZHANG}


async def test_a_malformed_quarter_is_refused_before_anything_is_recorded(store, tmp_path) -> None:
    path = write_csv(tmp_path / "mem.csv", [mem_row()])

    with pytest.raises(InvalidQuarter):
        await store.import_file(path, department="mem", quarter="2026Q5")

    assert await store.list_batches() == []


# --- Quarters ------------------------------------------------------------------------------------


async def test_a_newer_quarter_supersedes_the_departments_older_rows_and_older_batches_stay_history(
    store, tmp_path
) -> None:
    q1 = await import_rows(store, tmp_path, "q1.csv", [mem_row(), mem_row(ID_LI, "李四")], quarter="2026Q1")

    q2 = await import_rows(store, tmp_path, "q2.csv", [mem_row(status="暂扣")], quarter="2026Q2")

    assert q2.superseded == 1 and q2.outdated == 0
    [zhang] = (hit := await store.find("mem", number=ZHANG)).certificates
    assert (zhang.status, hit.quarter) == (CertStatus.SUSPENDED, "2026Q2")
    [li] = (hit := await store.find("mem", number=LI)).certificates  # not in Q2: Q1's row stays current
    assert (li.status, hit.quarter) == (CertStatus.VALID, "2026Q1")
    history = await store.list_batches("mem")
    assert [(b.id, b.quarter, b.status) for b in history] == [
        (q2.id, "2026Q2", BatchStatus.IMPORTED),
        (q1.id, "2026Q1", BatchStatus.IMPORTED),
    ]
    old = await store.get_batch(q1.id)
    assert old is not None and old.rows_imported == 2


async def test_an_older_quarter_imported_after_a_newer_one_stays_history(store, tmp_path) -> None:
    await import_rows(store, tmp_path, "q3.csv", [mem_row(status="暂扣")], quarter="2026Q3")

    late = await import_rows(store, tmp_path, "q2.csv", [mem_row(), mem_row(ID_LI, "李四")], quarter="2026Q2")

    assert late.status == BatchStatus.IMPORTED and (late.outdated, late.superseded) == (1, 0)
    [zhang] = (hit := await store.find("mem", number=ZHANG)).certificates
    assert (zhang.status, hit.quarter) == (CertStatus.SUSPENDED, "2026Q3")
    assert (await store.find("mem", number=LI)).quarter == "2026Q2"  # only Q2 knows 李四: current
    assert {b.quarter for b in await store.list_batches("mem")} == {"2026Q2", "2026Q3"}


async def test_a_corrected_file_for_the_same_quarter_replaces_the_first_upload(store, tmp_path) -> None:
    await import_rows(store, tmp_path, "q1.csv", [mem_row(name="张小二")], quarter="2026Q1")

    corrected = await import_rows(store, tmp_path, "q1-fixed.csv", [mem_row(name="张小三")], quarter="2026Q1")

    assert corrected.superseded == 1
    [cert] = (await store.find("mem", number=ZHANG)).certificates
    assert cert.holder_name == "张小三"


async def test_a_newer_quarter_replaces_only_the_same_operation_item_of_a_mem_number(store, tmp_path) -> None:
    rows = [mem_row(item="低压电工作业"), mem_row(item="高压电工作业")]
    await import_rows(store, tmp_path, "q1.csv", rows, quarter="2026Q1")

    await import_rows(store, tmp_path, "q2.csv", [mem_row(item="低压电工作业", status="吊销")], quarter="2026Q2")

    hit = await store.find("mem", number=ZHANG)
    assert {c.operation_item: c.status for c in hit.certificates} == {
        "低压电工作业": CertStatus.REVOKED,
        "高压电工作业": CertStatus.VALID,
    }


async def test_a_departments_new_quarter_leaves_other_departments_rows_alone(store, tmp_path) -> None:
    samr_header = ["证书编号", "姓名", "身份证号", "作业类别", "操作项目", "证书状态"]
    samr = [[ID_ZHANG, "张小三", ID_ZHANG, "特种设备焊接作业", "GTAW-FeII-6G-3/60-FefS-02/10/12", "有效"]]
    await import_rows(store, tmp_path, "samr.csv", samr, header=samr_header, department="samr", quarter="2026Q1")
    await import_rows(store, tmp_path, "mem-q1.csv", [mem_row()], quarter="2026Q1")

    report = await import_rows(store, tmp_path, "mem-q2.csv", [mem_row(status="暂扣")], quarter="2026Q2")

    assert report.superseded == 1
    [welder] = (await store.find("samr", number=ID_ZHANG)).certificates
    assert welder.status == CertStatus.VALID


# --- Failures half-way ---------------------------------------------------------------------------


class Boom(Exception):
    pass


def fail_on_second_call():
    calls: list[tuple[int, int, int]] = []

    def progress(rows: int, done: int, total: int) -> None:
        calls.append((rows, done, total))
        if len(calls) == 2:
            raise Boom("interrupted")

    return progress, calls


async def test_a_failure_half_way_leaves_nothing_of_the_batch(store, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(ingest_module, "CHUNK_ROWS", 2)
    ids = [ID_ZHANG, ID_LI, ID_WANG, ID_ZHAO, ID_X]
    path = write_csv(tmp_path / "mem.csv", [mem_row(i, f"持证人{k}") for k, i in enumerate(ids)])
    progress, calls = fail_on_second_call()

    with pytest.raises(Boom):
        await store.import_file(path, department="mem", quarter="2026Q1", progress=progress)

    assert calls[0][0] == 2  # the first chunk had been written when the failure came
    assert await numbers_found(store, *("T" + i for i in ids)) == set()
    assert await store.list_batches() == []
    assert await store.generation("mem") == 0
    again = await store.import_file(path, department="mem", quarter="2026Q1")  # not "already imported"
    assert again.status == BatchStatus.IMPORTED and again.rows_imported == 5
    assert await numbers_found(store, "T" + ID_X) == {"T" + ID_X}


async def test_a_failure_half_way_leaves_the_older_quarter_current(store, tmp_path, monkeypatch) -> None:
    q1 = await import_rows(store, tmp_path, "q1.csv", [mem_row(), mem_row(ID_LI, "李四")], quarter="2026Q1")
    monkeypatch.setattr(ingest_module, "CHUNK_ROWS", 1)
    progress, _calls = fail_on_second_call()
    path = write_csv(tmp_path / "q2.csv", [mem_row(status="吊销"), mem_row(ID_LI, "李四", status="吊销")])

    with pytest.raises(Boom):
        await store.import_file(path, department="mem", quarter="2026Q2", progress=progress)

    for number in (ZHANG, LI):
        [cert] = (hit := await store.find("mem", number=number)).certificates
        assert (cert.status, hit.quarter) == (CertStatus.VALID, "2026Q1")
    assert [b.id for b in await store.list_batches()] == [q1.id]


async def test_the_lookup_indexes_survive_a_failed_first_import(store, tmp_path, monkeypatch) -> None:
    # On an empty SQLite table the importer drops the lookup indexes and rebuilds them at the end.
    monkeypatch.setattr(ingest_module, "CHUNK_ROWS", 1)
    progress, _calls = fail_on_second_call()
    path = write_csv(tmp_path / "mem.csv", [mem_row(), mem_row(ID_LI, "李四")])

    with pytest.raises(Boom):
        await store.import_file(path, department="mem", quarter="2026Q1", progress=progress)

    async with store.engine.connect() as conn:
        names = await conn.run_sync(lambda c: {i["name"] for i in sa.inspect(c).get_indexes("records")})
    assert {i.name for i in LOOKUP_INDEXES} <= names


async def test_a_bad_row_in_a_later_chunk_rejects_the_rows_of_earlier_chunks(store, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(ingest_module, "CHUNK_ROWS", 2)
    rows = [mem_row(), mem_row(ID_LI, "李四"), mem_row(ID_ZHAO, "赵六"), mem_row(ID_X, "钱七"),
            mem_row(BAD_CHECK, "王五")]

    report = await import_rows(store, tmp_path, "mem.csv", rows)

    assert report.status == BatchStatus.REJECTED and report.rows_total == 5
    assert [p.line for p in report.problems] == [6]
    assert await numbers_found(store, ZHANG, LI, "T" + ID_ZHAO, "T" + ID_X) == set()


async def test_progress_counts_rows_and_ends_at_the_files_size(store, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(ingest_module, "CHUNK_ROWS", 2)
    path = write_csv(tmp_path / "mem.csv", [mem_row(i) for i in (ID_ZHANG, ID_LI, ID_WANG, ID_ZHAO, ID_X)])
    calls: list[tuple[int, int, int]] = []

    await store.import_file(path, department="mem", quarter="2026Q1", progress=lambda *a: calls.append(a))

    assert [rows for rows, _, _ in calls] == [2, 4, 5]
    assert calls[-1][1:] == (path.stat().st_size, path.stat().st_size)


# --- Lookups -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    [ZHANG, ZHANG.lower(), " ".join([ZHANG[:7], ZHANG[7:15], ZHANG[15:]]),
     ZHANG.translate(str.maketrans("T0123456789", "Ｔ０１２３４５６７８９"))],
)
async def test_find_by_certificate_number_as_users_type_it(sqlite_store, tmp_path, typed) -> None:
    await import_rows(sqlite_store, tmp_path, "mem.csv", [mem_row(), mem_row(ID_LI, "李四")])

    hit = await sqlite_store.find("mem", number=typed)

    assert [c.number for c in hit.certificates] == [ZHANG]


@pytest.mark.parametrize(
    "typed", [ID_X, ID_X.lower(), ID_X.translate(str.maketrans("0123456789X", "０１２３４５６７８９ｘ"))]
)
async def test_find_by_id_number_as_users_type_it_returns_all_the_holders_certificates(
    sqlite_store, tmp_path, typed
) -> None:
    rows = [mem_row(ID_X, "钱七", item="低压电工作业"), mem_row(ID_X, "钱七", item="高压电工作业"), mem_row()]
    await import_rows(sqlite_store, tmp_path, "mem.csv", rows)

    hit = await sqlite_store.find("mem", id_number=typed)

    assert {(c.number, c.operation_item) for c in hit.certificates} == {
        ("T" + ID_X, "低压电工作业"),
        ("T" + ID_X, "高压电工作业"),
    }
    assert all(c.holder_id_number == ID_X for c in hit.certificates)


async def test_an_id_written_with_lower_case_x_in_the_upload_is_stored_normalised(store, tmp_path) -> None:
    await import_rows(store, tmp_path, "mem.csv", [mem_row(ID_X.lower(), "钱七", number="t" + ID_X.lower())])

    [cert] = (await store.find("mem", id_number=ID_X)).certificates

    assert (cert.number, cert.holder_id_number) == ("T" + ID_X, ID_X)


async def test_find_says_which_quarter_and_upload_the_answer_comes_from(store, tmp_path) -> None:
    report = await import_rows(store, tmp_path, "mem.csv", [mem_row()], quarter="2026Q2")

    hit = await store.find(Department.MEM, number=ZHANG)

    # as of the earlier of the quarter's end and the upload (issue 12)
    quarter_end = datetime(2026, 6, 30, 23, 59, 59, 999999, tzinfo=CHINA_TIME)  # the quarter ends at midnight in Beijing
    assert hit.quarter == "2026Q2" and hit.data_as_of == min(report.uploaded_at, quarter_end)
    [cert] = hit.certificates
    assert (cert.valid_from, cert.valid_until) == (date(2023, 1, 2), date(2029, 1, 2))


async def test_find_only_looks_in_the_departments_own_records(store, tmp_path) -> None:
    await import_rows(store, tmp_path, "mem.csv", [mem_row()])

    assert (await store.find("mohurd", number=ZHANG)).certificates == []
    assert (await store.find("mem", number=ZHANG)).certificates != []


async def test_generation_changes_after_an_import_and_not_after_a_rejected_one(store, tmp_path) -> None:
    before = await store.generation("mem")
    await import_rows(store, tmp_path, "q1.csv", [mem_row()], quarter="2026Q1")
    after_first = await store.generation("mem")
    await import_rows(store, tmp_path, "bad.csv", [mem_row(BAD_CHECK, "王五")], quarter="2026Q2")
    after_rejected = await store.generation("mem")
    await import_rows(store, tmp_path, "q2.csv", [mem_row(status="暂扣")], quarter="2026Q2")

    assert before == 0
    assert after_first != before
    assert after_rejected == after_first
    assert await store.generation("mem") not in (before, after_first)
    assert await store.generation("mohurd") == 0


# --- The database itself -------------------------------------------------------------------------


async def test_the_migrated_database_matches_the_tables_the_queries_are_written_against(store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    ours = set(metadata.tables)  # the web service's tables (api_keys, audit_log) live in another MetaData

    def ours_only(name: str | None, type_: str, parents: dict[str, str | None]) -> bool:
        if type_ == "schema":
            return True
        return (name if type_ == "table" else parents.get("table_name")) in ours

    def differences(conn: sa.Connection) -> list[object]:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": ours_only})
        return compare_metadata(context, metadata)

    async with store.engine.connect() as conn:
        diffs = await conn.run_sync(differences)

    assert diffs == []


def test_migration_0010_computes_the_frame_key_of_the_records_already_there(tmp_path) -> None:
    from alembic import command
    from alembic.config import Config

    from aggregator.records.database import MIGRATIONS
    from aggregator.records.frame_key import frame_key

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0009")
        conn.execute(sa.text("INSERT INTO batches (id, department, quarter, file_name, sha256, uploaded_at, "
                             "uploaded_by, status) VALUES (1, 'mem', '2026Q1', 'a.csv', 'x', '2026-01-01', 't', "
                             "'imported')"))  # fmt: skip
        conn.execute(sa.text("INSERT INTO records (batch_id, department, number, holder_id_number, kind, category, "
                             "operation_item, status, row_number, is_current) VALUES "
                             "(1, 'mem', 'T1', '1', 'k', '电工作业', '低压电工作业', 'valid', 2, 1), "
                             "(1, 'samr', '2', NULL, 'k', '叉车司机', 'N1', 'valid', 3, 1)"))  # fmt: skip
        command.upgrade(config, "head")
        keys = conn.execute(sa.text("SELECT frame_key FROM records ORDER BY id")).scalars().all()
    engine.dispose()
    assert keys == [frame_key("mem", "T1", "低压电工作业", "1"), frame_key("samr", "2", "叉车司机", None)]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_reopening_a_database_keeps_its_records(backend, tmp_path, request) -> None:
    async with open_store(backend, tmp_path, request) as first:
        await import_rows(first, tmp_path, "mem.csv", [mem_row()])
        url = first.engine.url.render_as_string(hide_password=False)
        search_path = None if backend == "sqlite" else (await _search_path(first))
        again = await RecordStore.open(
            url, connect_args=None if search_path is None else {"server_settings": {"search_path": search_path}}
        )
        try:
            assert [c.number for c in (await again.find("mem", number=ZHANG)).certificates] == [ZHANG]
        finally:
            await again.close()


async def _search_path(store: RecordStore) -> str:
    async with store.engine.connect() as conn:
        return str((await conn.execute(sa.text("SHOW search_path"))).scalar())


SUPERSEDE_CASES = {
    # department: (header, the Q1 row, the same certificate in Q2 with another status)
    "mem": (HEADER, mem_row(), mem_row(status="暂扣")),
    "mohurd": (
        ["证书编号", "姓名", "身份证号", "证书状态"],
        ["京A012024000123", "李四", ID_LI, "01"],
        ["京A012024000123", "李四", ID_LI, "02"],
    ),
    "samr": (
        ["证书编号", "姓名", "作业类别", "操作项目", "证书状态"],
        [ID_ZHANG, "张小三", "特种设备焊接作业", "GTAW-FeII-6G-3/60-FefS-02/10/12", "有效"],
        [ID_ZHANG, "张小三", "特种设备焊接作业", "GTAW-FeII-6G-3/60-FefS-02/10/12和SMAW-FeII-2G-12-Fef3J", "暂扣"],
    ),
    "mohrss": (
        ["证书编号", "姓名", "身份证号", "职业（工种）名称", "证书状态"],
        ["S000111000001264000123", "李四", ID_LI, "电工", "有效"],
        ["S000111000001264000123", "李四", ID_LI, "电工", "暂扣"],
    ),
}


@pytest.mark.parametrize("department", list(SUPERSEDE_CASES))
async def test_a_newer_quarter_supersedes_the_older_row_in_every_department(store, tmp_path, department) -> None:
    header, old, new = SUPERSEDE_CASES[department]
    await import_rows(store, tmp_path, "q1.csv", [old], header=header, department=department, quarter="2026Q1")

    report = await import_rows(store, tmp_path, "q2.csv", [new], header=header, department=department, quarter="2026Q2")

    assert report.superseded == 1
    [cert] = (hit := await store.find(department, number=old[0])).certificates
    assert (cert.status, hit.quarter) == (CertStatus.SUSPENDED, "2026Q2")
    if department == "samr":  # a SAMR card's 持证项目 grow: the newer list replaces the older one
        assert cert.items == ["GTAW-FeII-6G-3/60-FefS-02/10/12", "SMAW-FeII-2G-12-Fef3J"]
