"""The synthetic data set: deterministic, realistic numbers, the status mix, and uploads that overlap live data."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pytest

from aggregator.models import CertKind, CertStatus, Department
from aggregator.numbers import classify, id_check_character
from aggregator.sandbox.dataset import (
    FIXED_HOLDERS,
    UPLOAD_HEADERS,
    Dataset,
    add_years,
    generate,
    last_complete_quarter,
    write_upload_csv,
)
from tests.conftest import TODAY


@pytest.fixture(scope="module")
def ds() -> Dataset:
    return generate(seed=2026, holders=3000, today=TODAY)


def _all_live(ds: Dataset):
    return [c for certs in ds.live.values() for c in certs]


def _digest(ds: Dataset) -> str:
    payload = {
        d.value: [[c.model_dump(mode="json") for c in view[d]] for view in (ds.uploaded, ds.live, ds.live_history)]
        for d in Department
    }
    payload["holders"] = [[h.name, h.id_number, h.gender] for h in ds.holders]
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode()).hexdigest()


def test_same_seed_and_day_give_identical_data(ds: Dataset) -> None:
    assert _digest(generate(seed=2026, holders=3000, today=TODAY)) == _digest(ds)


def test_identical_in_another_process_with_another_hash_seed(ds: Dataset) -> None:
    code = (
        "from datetime import date; from tests.adapters.test_dataset import _digest; "
        "from aggregator.sandbox.dataset import generate; "
        f"print(_digest(generate(seed=2026, holders=3000, today=date({TODAY.year}, {TODAY.month}, {TODAY.day}))))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=repo)
    assert out.stdout.strip() == _digest(ds)


def test_another_seed_gives_other_holders_but_the_same_fixed_ones(ds: Dataset) -> None:
    other = generate(seed=7, holders=3000, today=TODAY)
    assert _digest(other) != _digest(ds)
    assert other.holders[: len(FIXED_HOLDERS)] == ds.holders[: len(FIXED_HOLDERS)]
    assert other.canaries == ds.canaries


def test_holder_count_includes_fixed_holders() -> None:
    assert len(generate(holders=50, today=TODAY).holders) == 50
    assert len(generate(holders=0, today=TODAY).holders) == len(FIXED_HOLDERS)
    with pytest.raises(ValueError):
        generate(holders=-1, today=TODAY)


def test_id_numbers_are_valid_unique_and_match_gender_and_birth_range(ds: Dataset) -> None:
    ids = [h.id_number for h in ds.holders]
    assert len(set(ids)) == len(ids)
    for h in ds.holders:
        assert h.id_number[17] == id_check_character(h.id_number[:17]), h
        assert "id18" in classify(h.id_number).names
        assert 1960 <= int(h.id_number[6:10]) <= 2004
        assert h.gender == ("男" if int(h.id_number[16]) % 2 else "女")
    assert any(i.endswith("X") for i in ids)
    assert any("·" in h.name for h in ds.holders)
    genders = Counter(h.gender for h in ds.holders)
    assert genders["男"] > genders["女"] > 0
    assert all(2 <= len(h.name) <= 4 for h in ds.holders if "·" not in h.name)


def test_certificate_numbers_fit_their_department_formats(ds: Dataset) -> None:
    expected = {
        CertKind.MEM_SPECIAL_OPERATION: "mem_t_id",
        CertKind.MOHURD_CONSTRUCTION: "mohurd",
        CertKind.SAMR_SPECIAL_EQUIPMENT: "id18",
        CertKind.MOHRSS_SKILL_LEVEL: "mohrss_skill",
        CertKind.MOHRSS_QUALIFICATION: "mohrss_qual",
    }
    kinds = Counter()
    for c in _all_live(ds):
        assert expected[c.kind] in classify(c.number).names, c.number
        kinds[c.kind] += 1
        if c.department == Department.MEM:
            assert c.number == "T" + c.holder_id_number
        if c.department == Department.SAMR:
            assert c.number == c.holder_id_number
            assert c.operation_item == "和".join(c.items)
    assert all(kinds[k] > 0 for k in CertKind)


def test_validity_terms_follow_each_department(ds: Dataset) -> None:
    for c in _all_live(ds):
        if c.department == Department.MOHRSS:
            assert c.valid_until is None and c.level
            continue
        years = {Department.MEM: 6, Department.MOHURD: 2, Department.SAMR: 4}[c.department]
        assert c.valid_from and c.valid_until and c.issued_on
        assert c.valid_until == add_years(c.valid_from, years) - timedelta(days=1)
        assert c.issued_on <= c.valid_from
        if c.department == Department.MEM:
            assert c.next_review_on == add_years(c.valid_from, 3)


def test_status_mix_is_mostly_valid_with_some_expired_suspended_revoked(ds: Dataset) -> None:
    live = _all_live(ds)
    mix = Counter(c.effective_status(ds.today) for c in live)
    share = {s: mix[s] / len(live) for s in mix}
    assert 0.80 <= share[CertStatus.VALID] <= 0.92
    assert 0.04 <= share[CertStatus.EXPIRED] <= 0.11
    assert 0.015 <= share[CertStatus.SUSPENDED] <= 0.06
    assert 0.01 <= share[CertStatus.REVOKED] <= 0.04
    # Some departments write 过期, others leave 有效 with a past date: both must occur.
    expired = [c for c in live if c.effective_status(ds.today) == CertStatus.EXPIRED]
    assert {c.status for c in expired} == {CertStatus.EXPIRED, CertStatus.VALID}


def _holdings(ds: Dataset) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for c in _all_live(ds):
        out.setdefault(c.holder_id_number, set()).add(f"{c.department.value}:{c.operation_item or c.category}")
    return out


def test_holders_with_certificates_from_several_departments(ds: Dataset) -> None:
    held = _holdings(ds)
    pairs = {
        "mem low-voltage + mohurd electrician": ("mem:低压电工作业", "mohurd:建筑电工"),
        "mem welder + samr welder": ("mem:熔化焊接与热切割作业", "samr:"),
        "mem welder + mohurd welder": ("mem:熔化焊接与热切割作业", "mohurd:建筑焊工"),
        "mem high-voltage + mohrss electrician": ("mem:高压电工作业", "mohrss:电工"),
    }
    for what, (a, b) in pairs.items():
        count = sum(1 for items in held.values() if a in items and any(i.startswith(b) for i in items))
        assert count >= 10, what
    departments = Counter(len({i.split(":")[0] for i in items}) for items in held.values())
    assert departments[2] > 100 and departments[3] > 0


def test_live_and_uploaded_mostly_agree_and_differ_as_in_life(ds: Dataset) -> None:
    for d in Department:
        up = {(c.number, c.operation_item): c for c in ds.uploaded[d]}
        live = {(c.number, c.operation_item): c for c in ds.live[d]}
        same = sum(1 for k, c in live.items() if up.get(k) == c)
        assert same / len(live) > 0.9, d
        assert all(c.issued_on <= ds.upload_as_of for c in ds.uploaded[d])
    kinds = Counter(ds.differences.values())
    assert kinds["suspended_after_upload"] > 0
    assert kinds["renewed_after_upload"] > 0
    assert kinds["issued_after_upload"] > 0
    assert sum(kinds.values()) / len(_all_live(ds)) < 0.08

    up = {(c.number, c.operation_item): c for d in Department for c in ds.uploaded[d]}
    suspended = renewed = live_only = 0
    for c in _all_live(ds):
        u = up.get((c.number, c.operation_item))
        if u is None:
            assert c.issued_on > ds.upload_as_of
            live_only += 1
        elif u.status == CertStatus.VALID and c.status == CertStatus.SUSPENDED:
            suspended += 1
        elif u.valid_until and c.valid_until and c.valid_until > u.valid_until:
            renewed += 1
    assert suspended and renewed and live_only


def test_mem_history_holds_older_cards_of_live_holders(ds: Dataset) -> None:
    history = ds.live_history[Department.MEM]
    assert history
    live_numbers = {c.number for c in ds.live[Department.MEM]}
    for c in history:
        assert c.number in live_numbers
        assert c.valid_until is not None and c.valid_until < ds.today
        assert c.effective_status(ds.today) == CertStatus.EXPIRED
    assert not any(ds.live_history[d] for d in Department if d != Department.MEM)


def test_canaries_exist_and_unheld_numbers_do_not(ds: Dataset) -> None:
    every_number = {c.number for c in _all_live(ds)} | {c.number for d in Department for c in ds.uploaded[d]}
    for d in Department:
        valid, invalid = ds.canaries[d]
        found = [c for c in ds.live[d] if c.number == valid]
        assert found and all(c.effective_status(ds.today) == CertStatus.VALID for c in found), d
        assert any(c.number == valid for c in ds.uploaded[d])
        assert invalid not in every_number
        assert classify(invalid).formats, f"{d}: canary {invalid} must be well-formed"
    assert ds.canaries[Department.MEM][0] == "T110105199003071239"


def test_canaries_stay_valid_whatever_the_day() -> None:
    for today in (date(2026, 1, 1), date(2027, 3, 31), date(2031, 7, 15)):
        ds = generate(holders=0, today=today)
        for d in Department:
            valid = ds.canaries[d][0]
            assert any(c.effective_status(today) == CertStatus.VALID for c in ds.live[d] if c.number == valid)


def test_examples_show_what_they_say(ds: Dataset) -> None:
    live = _all_live(ds)
    by_number: dict[str, list] = {}
    for c in live:
        by_number.setdefault(c.number, []).append(c)
    shows = " | ".join(e.shows for e in ds.examples)
    for word in ("recognitions 1 and 3", "4, 5, 7", "recognition 2", "expired", "suspended", "revoked",
                 "conflict", "22 characters", "16-digit", "nobody holds", "name mismatch"):  # fmt: skip
        assert word in shows
    for e in ds.examples:
        if "nobody holds" in e.shows:
            assert e.number not in by_number
            continue
        assert e.number in by_number, e
        if "name mismatch" in e.shows:
            assert e.name not in {c.holder_name for c in by_number[e.number]}
        elif e.name:
            assert e.name in {c.holder_name for c in by_number[e.number]}
    status = {e.shows.split()[0]: by_number.get(e.number, []) for e in ds.examples}
    assert status["expired"][0].effective_status(ds.today) == CertStatus.EXPIRED
    assert status["suspended"][0].status == CertStatus.SUSPENDED
    assert status["revoked"][0].status == CertStatus.REVOKED


@pytest.mark.parametrize(
    ("today", "quarter", "as_of"),
    [
        (date(2026, 11, 25), "2026Q3", date(2026, 9, 30)),
        (date(2026, 1, 1), "2025Q4", date(2025, 12, 31)),
        (date(2026, 4, 1), "2026Q1", date(2026, 3, 31)),
        (date(2026, 6, 30), "2026Q1", date(2026, 3, 31)),
    ],
)
def test_upload_quarter_is_the_last_complete_one(today: date, quarter: str, as_of: date) -> None:
    assert last_complete_quarter(today) == (quarter, as_of)


@pytest.mark.parametrize("department", list(Department))
def test_upload_csv_has_chinese_headers_and_every_uploaded_row(ds: Dataset, department: Department, tmp_path) -> None:
    path = write_upload_csv(ds, department, tmp_path / f"{department.value}.csv")
    raw = path.read_bytes()
    assert raw.startswith("\ufeff".encode())  # utf-8-sig, as Excel users save it
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == UPLOAD_HEADERS[department]
    assert len(rows) == len(ds.uploaded[department])
    first = ds.uploaded[department][0]
    assert rows[0]["证书编号"] == first.number and rows[0]["身份证号"] == first.holder_id_number
    texts = Counter(r["证书状态"] for r in rows)
    assert texts["有效"] > len(rows) * 0.7
    assert set(texts) <= {"有效", "暂扣", "吊销", "撤销", "注销", "过期"}
    for r in rows:
        for col in ("初领日期", "批准日期", "发证日期", "有效期起", "有效期至", "复审日期"):
            if r.get(col):
                date.fromisoformat(r[col])


def test_upload_csv_in_gb18030_keeps_every_name(ds: Dataset, tmp_path) -> None:
    path = write_upload_csv(ds, Department.SAMR, tmp_path / "samr.csv", encoding="gb18030")
    text = path.read_text(encoding="gb18030")
    assert "阿依古丽·买买提" in text and "GTAW-FeⅡ-6G-3/60-FefS-02/10/12" in text
