"""A deterministic synthetic data set of certificate holders, shared by `certq demo` and the sandbox sites.

    >>> ds = generate(seed=2026, holders=300, today=date(2026, 11, 25))
    >>> ds.upload_quarter
    '2026Q3'
    >>> ds.canaries[Department.MEM][0]
    'T110105199003071239'

`uploaded` is what each department sent in its last quarterly upload (the state at the end of
`upload_quarter`); `live` is what each department's endpoint serves today. Most certificates are the same
in both; a few differ as they would in life: suspended after the upload, renewed after the upload, or issued
after it (live only). MEM's site also shows older cards of the same holder (`live_history`).

The first holders are fixed (fixed.py): their ID and certificate numbers do not depend on the seed, so
configs can name canary numbers that always exist. Same seed and same `today` give identical data in any
process (only `random.Random(seed)` is used, never hashing or set order).
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from aggregator.models import Certificate, Department
from aggregator.sandbox.cards import STATUS_TEXT, Cards, Holder, add_years
from aggregator.sandbox.fixed import (
    FIXED_HOLDERS,
    MOHRSS_LIU,
    MOHRSS_SUN,
    MOHURD_YANG,
    MOHURD_ZHANG,
    MOHURD_ZHOU,
    RESERVED,
    UNHELD_NUMBERS,
    Example,
    add_fixed,
    canaries,
    examples,
)
from aggregator.sandbox.synth import Synth

__all__ = [
    "FIXED_HOLDERS",
    "MOHRSS_LIU",
    "MOHRSS_SUN",
    "MOHURD_YANG",
    "MOHURD_ZHANG",
    "MOHURD_ZHOU",
    "UNHELD_NUMBERS",
    "UPLOAD_HEADERS",
    "Dataset",
    "Example",
    "Holder",
    "add_years",
    "generate",
    "last_complete_quarter",
    "upload_rows",
    "write_upload_csv",
]


@dataclass
class Dataset:
    """Holders, each department's last upload and live data, examples and canary numbers."""

    seed: int
    today: date
    holders: list[Holder]
    uploaded: dict[Department, list[Certificate]]
    upload_quarter: str  # the last complete quarter before today, e.g. "2026Q3"
    upload_as_of: date  # the last day of that quarter: the state the upload shows
    live: dict[Department, list[Certificate]]
    live_history: dict[Department, list[Certificate]]  # MEM's 历史数据: older cards, not current
    examples: list[Example]
    canaries: dict[Department, tuple[str, str]]  # (known-valid number, known-invalid number)
    # how the live site differs from the upload, by certificate number (MEM: "number/operation item")
    differences: dict[str, str] = field(default_factory=dict)


def last_complete_quarter(today: date) -> tuple[str, date]:
    """The last quarter that ended before `today`, as ("2026Q3", its last day)."""
    first_of_current = date(today.year, 3 * ((today.month - 1) // 3) + 1, 1)
    end = first_of_current - timedelta(days=1)
    return f"{end.year}Q{(end.month - 1) // 3 + 1}", end


def generate(*, seed: int = 2026, holders: int = 3000, today: date | None = None) -> Dataset:
    """The data set for `seed` as of `today` (default: the real today). `holders` counts the fixed ones too,
    which are always present."""
    if holders < 0:
        raise ValueError(f"holders must be >= 0, not {holders}")
    today = today or date.today()
    quarter, as_of = last_complete_quarter(today)
    cards = Cards(random.Random(seed), today, as_of, set(RESERVED))
    add_fixed(cards)
    synth = Synth(cards)
    people = list(FIXED_HOLDERS) + [synth.person() for _ in range(holders - len(FIXED_HOLDERS))]
    return Dataset(
        seed=seed,
        today=today,
        holders=people,
        uploaded=cards.uploaded,
        upload_quarter=quarter,
        upload_as_of=as_of,
        live=cards.live,
        live_history=cards.history,
        examples=examples(),
        canaries=canaries(),
        differences=cards.differences,
    )


# --- upload files --------------------------------------------------------------------------------

UPLOAD_HEADERS: dict[Department, list[str]] = {
    Department.MEM: ["证书编号", "姓名", "性别", "身份证号", "作业类别", "操作项目", "发证机关", "初领日期",
                     "有效期起", "有效期至", "复审日期", "证书状态"],
    Department.MOHURD: ["证书编号", "姓名", "性别", "身份证号", "作业类别", "操作项目", "发证机关", "初领日期",
                        "有效期起", "有效期至", "证书状态"],
    Department.SAMR: ["证书编号", "姓名", "性别", "身份证号", "作业类别", "持证项目", "发证机关", "批准日期",
                      "有效期起", "有效期至", "证书状态"],
    Department.MOHRSS: ["证书编号", "姓名", "性别", "身份证号", "职业", "等级", "发证机关", "发证日期", "证书状态"],
}  # fmt: skip


def _d(value: date | None) -> str:
    return value.isoformat() if value else ""


def _row(c: Certificate) -> dict[str, str]:
    return {
        "证书编号": c.number,
        "姓名": c.holder_name or "",
        "性别": c.gender or "",
        "身份证号": c.holder_id_number or "",
        "作业类别": c.category or "",
        "职业": c.category or "",
        "操作项目": c.operation_item or "",
        "持证项目": c.operation_item or "",
        "等级": c.level or "",
        "发证机关": c.issuer or "",
        "初领日期": _d(c.issued_on),
        "批准日期": _d(c.issued_on),
        "发证日期": _d(c.issued_on),
        "有效期起": _d(c.valid_from),
        "有效期至": _d(c.valid_until),
        "复审日期": _d(c.next_review_on),
        "证书状态": c.status_text or STATUS_TEXT[c.status],
    }


def upload_rows(dataset: Dataset, department: Department) -> Iterator[list[str]]:
    """The department's upload as CSV rows (header first), one row at a time."""
    headers = UPLOAD_HEADERS[department]
    yield headers
    for c in dataset.uploaded[department]:
        row = _row(c)
        yield [row[h] for h in headers]


def write_upload_csv(dataset: Dataset, department: Department, path: Path, *, encoding: str = "utf-8-sig") -> Path:
    """Write the department's last quarterly upload as a CSV file with Chinese headers; returns `path`."""
    path = Path(path)
    with path.open("w", encoding=encoding, newline="") as f:
        csv.writer(f).writerows(upload_rows(dataset, department))
    return path
