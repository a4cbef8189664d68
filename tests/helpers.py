"""Small builders shared by tests."""

from __future__ import annotations

import tomllib
from datetime import UTC, date, datetime
from pathlib import Path

from aggregator.config import RecognitionCatalogue
from aggregator.models import Certificate, CertKind, CertStatus, Department, Mode, Outcome, SourceResult
from aggregator.numbers import id_check_character

CONFIG = Path(__file__).resolve().parent.parent / "config"

class FakeClock:
    """A clock a test moves by hand (`clock.advance(5)`), for breakers, caches and runners: no sleeps."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


KIND = {
    Department.MEM: CertKind.MEM_SPECIAL_OPERATION,
    Department.MOHURD: CertKind.MOHURD_CONSTRUCTION,
    Department.SAMR: CertKind.SAMR_SPECIAL_EQUIPMENT,
    Department.MOHRSS: CertKind.MOHRSS_SKILL_LEVEL,
}


def make_id(region: str = "110105", birth: str = "19900307", seq: str = "123") -> str:
    first = region + birth + seq
    return first + id_check_character(first)


def catalogue() -> RecognitionCatalogue:
    with (CONFIG / "recognition.toml").open("rb") as f:
        return RecognitionCatalogue.model_validate(tomllib.load(f))


def cert(department: Department, number: str, **kw) -> Certificate:
    kw.setdefault("status", CertStatus.VALID)
    kw.setdefault("valid_until", date(2029, 1, 1))
    return Certificate(number=number, department=department, kind=KIND[department], **kw)


def found(source: str, *certs: Certificate, mode: Mode = Mode.RECORDS, as_of: datetime | None = None) -> SourceResult:
    return SourceResult(
        source=source,
        department=certs[0].department,
        mode=mode,
        outcome=Outcome.FOUND,
        certificates=list(certs),
        fetched_at=datetime.now(UTC),
        data_as_of=as_of or datetime(2026, 10, 1, tzinfo=UTC),
    )


def not_found(source: str, department: Department, mode: Mode = Mode.RECORDS) -> SourceResult:
    return SourceResult(source=source, department=department, mode=mode, outcome=Outcome.NOT_FOUND)


def unavailable(source: str, department: Department, kind, mode: Mode = Mode.API) -> SourceResult:
    return SourceResult(source=source, department=department, mode=mode, outcome=Outcome.UNAVAILABLE, error_kind=kind)
