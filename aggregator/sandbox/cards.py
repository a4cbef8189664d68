"""Building blocks of the synthetic data set: holders, one card per department, and the upload/live views.

`Cards` collects certificates into what the departments uploaded last quarter and what their live sites
serve today; the card builders (`mem_card`, `mohurd_card`, `samr_card`, `mohrss_card`) apply each
department's number format and validity term (MEM 6 years with a review every 3, MOHURD 2, SAMR 4, MOHRSS
none).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta

from aggregator.models import Certificate, CertKind, CertStatus, Department
from aggregator.numbers import MOHURD_TRADES
from aggregator.sandbox import tables as t

VALID_YEARS: dict[Department, int] = {Department.MEM: 6, Department.MOHURD: 2, Department.SAMR: 4}
MEM_REVIEW_YEARS = 3
STATUS_TEXT: dict[CertStatus, str] = {
    CertStatus.VALID: "有效",
    CertStatus.EXPIRED: "过期",
    CertStatus.SUSPENDED: "暂扣",
    CertStatus.REVOKED: "吊销",
    CertStatus.UNKNOWN: "其他",
}


@dataclass(frozen=True)
class Holder:
    name: str
    id_number: str
    gender: str  # 男 / 女

    @property
    def birth_date(self) -> date:
        n = self.id_number
        return date(int(n[6:10]), int(n[10:12]), int(n[12:14]))


def add_years(d: date, years: int) -> date:
    """`d` moved by whole years; 29 February becomes 28 February in a common year."""
    try:
        return d.replace(year=d.year + years)
    except ValueError:
        return d.replace(year=d.year + years, day=28)


def end_of_term(start: date, years: int) -> date:
    return add_years(start, years) - timedelta(days=1)


def _card(
    h: Holder,
    department: Department,
    kind: CertKind,
    number: str,
    issuer: str,
    *,
    first: date,
    start: date | None,
    status: CertStatus,
    text: str | None,
    **fields: object,
) -> Certificate:
    years = VALID_YEARS.get(department)
    return Certificate(
        number=number,
        kind=kind,
        department=department,
        issuer=issuer,
        holder_name=h.name,
        holder_id_number=h.id_number,
        gender=h.gender,
        issued_on=first,
        valid_from=start,
        valid_until=end_of_term(start, years) if (years and start) else None,
        next_review_on=add_years(start, MEM_REVIEW_YEARS) if (department == Department.MEM and start) else None,
        status=status,
        status_text=text or STATUS_TEXT[status],
        **fields,  # type: ignore[arg-type]
    )


def mem_card(
    h: Holder,
    p: t.Province,
    category: str,
    item: str,
    *,
    first: date,
    start: date,
    status: CertStatus = CertStatus.VALID,
    text: str | None = None,
) -> Certificate:
    """A MEM 特种作业操作证: number T + ID, valid 6 years, reviewed after 3."""
    return _card(h, Department.MEM, CertKind.MEM_SPECIAL_OPERATION, "T" + h.id_number, p.mem_issuer, first=first,
                 start=start, status=status, text=text, category=category, operation_item=item)  # fmt: skip


def mohurd_card(
    h: Holder,
    p: t.Province,
    number: str,
    *,
    first: date,
    start: date,
    status: CertStatus = CertStatus.VALID,
    text: str | None = None,
) -> Certificate:
    """A MOHURD 建筑施工特种作业操作资格证书, valid 2 years; the trade comes from the number's code."""
    code = number[2:4]
    description = t.MOHURD_WELDER if code == "99" else MOHURD_TRADES[code]
    item = "建筑焊工" if code == "99" else description
    return _card(h, Department.MOHURD, CertKind.MOHURD_CONSTRUCTION, number, p.mohurd_issuer, first=first,
                 start=start, status=status, text=text, category=description, operation_item=item)  # fmt: skip


def samr_card(
    h: Holder,
    p: t.Province,
    category: str,
    items: list[str],
    *,
    first: date,
    start: date,
    status: CertStatus = CertStatus.VALID,
    text: str | None = None,
) -> Certificate:
    """A SAMR 特种设备作业人员证: number = ID, 持证项目 codes joined by 和, valid 4 years."""
    return _card(h, Department.SAMR, CertKind.SAMR_SPECIAL_EQUIPMENT, h.id_number, p.samr_issuer, first=first,
                 start=start, status=status, text=text, category=category, operation_item="和".join(items),
                 items=list(items))  # fmt: skip


def mohrss_card(
    h: Holder,
    number: str,
    issuer: str,
    occupation: str,
    level: str,
    *,
    issued: date,
    status: CertStatus = CertStatus.VALID,
    text: str | None = None,
) -> Certificate:
    """A MOHRSS 职业技能等级证书 (22 characters) or older 职业资格证书 (16 digits); no expiry."""
    kind = CertKind.MOHRSS_QUALIFICATION if len(number) == 16 else CertKind.MOHRSS_SKILL_LEVEL
    return _card(h, Department.MOHRSS, kind, number, issuer, first=issued, start=None, status=status, text=text,
                 category=occupation, level=level)  # fmt: skip


def renewed(cert: Certificate) -> Certificate:
    """The same certificate after its next term was granted: the new term starts when the old one ends."""
    years = VALID_YEARS[cert.department]
    assert cert.valid_until is not None
    start = cert.valid_until + timedelta(days=1)
    update: dict[str, object] = {"valid_from": start, "valid_until": end_of_term(start, years)}
    if cert.department == Department.MEM:
        update["next_review_on"] = add_years(start, MEM_REVIEW_YEARS)
    return cert.model_copy(update=update)


def suspended(cert: Certificate) -> Certificate:
    return cert.model_copy(update={"status": CertStatus.SUSPENDED, "status_text": "暂扣"})


class Cards:
    """Certificates as uploaded last quarter and as served live today, plus numbers already used."""

    def __init__(self, rng: random.Random, today: date, as_of: date, reserved: set[str]) -> None:
        self.rng = rng
        self.today = today
        self.as_of = as_of  # the last day of the uploaded quarter
        self.uploaded: dict[Department, list[Certificate]] = {d: [] for d in Department}
        self.live: dict[Department, list[Certificate]] = {d: [] for d in Department}
        self.history: dict[Department, list[Certificate]] = {d: [] for d in Department}
        self.differences: dict[str, str] = {}
        self.used: set[str] = set(reserved)  # ID and certificate numbers nobody else may get

    def day_between(self, lo: date, hi: date) -> date:
        if hi <= lo:
            return lo
        return date.fromordinal(self.rng.randint(lo.toordinal(), hi.toordinal()))

    def claim(self, number: str) -> bool:
        """Reserve a number; False if it is taken."""
        if number in self.used:
            return False
        self.used.add(number)
        return True

    def same(self, cert: Certificate) -> None:
        """A certificate the upload and the live site agree on."""
        self.uploaded[cert.department].append(cert)
        self.live[cert.department].append(cert)

    def differing(self, upload: Certificate | None, live: Certificate, how: str) -> None:
        """A certificate the live site shows otherwise than the upload (None: issued after the upload)."""
        if upload is not None:
            self.uploaded[upload.department].append(upload)
        self.live[live.department].append(live)
        key = live.number if live.department != Department.MEM else f"{live.number}/{live.operation_item}"
        self.differences[key] = how

    def upload_only(self, cert: Certificate, how: str) -> None:
        """A certificate the department uploaded that its live site does not know (a record uploaded in error, or
        withdrawn since)."""
        self.uploaded[cert.department].append(cert)
        key = cert.number if cert.department != Department.MEM else f"{cert.number}/{cert.operation_item}"
        self.differences[key] = how

    def add_history(self, cert: Certificate) -> None:
        """An older card the live site lists under 历史数据 (MEM)."""
        self.history[cert.department].append(cert)
