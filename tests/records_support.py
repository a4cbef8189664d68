"""Shared builders for the records tests: a store on SQLite or PostgreSQL, and upload files to feed it.

    async def test_something(store, tmp_path):             # runs on SQLite and on PostgreSQL
        path = write_csv(tmp_path / "mem.csv", [mem_row()])
        report = await store.import_file(path, department="mem", quarter="2026Q1")

Each PostgreSQL test gets its own schema (`certq_test_<random>`), dropped afterwards; each SQLite test its
own file under `tmp_path`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from aggregator.records import RecordStore
from tests.helpers import make_id

# Holders (valid GB 11643 check characters).
ID_ZHANG = make_id("110105", "19900307", "123")
ID_LI = make_id("440104", "19781120", "789")
ID_WANG = make_id("310101", "19851212", "456")
ID_ZHAO = make_id("510104", "19920615", "311")


def _id_ending_in_x() -> str:
    for seq in range(1000):
        candidate = make_id("110101", "19880808", f"{seq:03d}")
        if candidate.endswith("X"):
            return candidate
    raise AssertionError("no ID with check character X")  # pragma: no cover - 1 in 11 has one


ID_X = _id_ending_in_x()  # check character X: users type it as a lower-case x

#: The Chinese header most departments use, in the order `mem_row` fills it.
HEADER = ["证书编号", "姓名", "身份证号", "作业类别", "操作项目", "发证机关", "初领日期", "有效期起", "有效期至", "证书状态"]


def mem_row(
    id_number: str = ID_ZHANG,
    name: str = "张小三",
    *,
    number: str | None = None,
    category: str = "电工作业",
    item: str = "低压电工作业",
    issuer: str = "北京市应急管理局",
    issued: str = "2020-01-02",
    valid_from: str = "2023-01-02",
    valid_until: str = "2029-01-02",
    status: str = "有效",
) -> list[str]:
    """One MEM certificate row under `HEADER` (the number is T + the ID number unless given)."""
    return [
        "T" + id_number if number is None else number,
        name,
        id_number,
        category,
        item,
        issuer,
        issued,
        valid_from,
        valid_until,
        status,
    ]


def csv_text(rows: Iterable[Sequence[Any]], header: Sequence[str] = HEADER, *, above: Sequence[str] = ()) -> str:
    """CSV text: the lines in `above` (e.g. a title row), the header, then the rows."""
    lines = [*above, ",".join(header)]
    lines += [",".join("" if c is None else str(c) for c in row) for row in rows]
    return "\n".join(lines) + "\n"


def write_csv(
    path: Path,
    rows: Iterable[Sequence[Any]],
    header: Sequence[str] = HEADER,
    *,
    encoding: str = "utf-8",
    above: Sequence[str] = (),
) -> Path:
    path.write_bytes(csv_text(rows, header, above=above).encode(encoding))
    return path


def write_xlsx(path: Path, rows: Iterable[Sequence[Any]], header: Sequence[Any] = HEADER) -> Path:
    """A workbook whose first sheet holds the header and rows, each cell with the Python type given
    (str stays a text cell, int/float become number cells, date/datetime become date cells)."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(list(header))
    for row in rows:
        sheet.append(list(row))
    book.save(path)
    return path


def problems_on(report: Any, line: int) -> list[Any]:
    return [p for p in report.problems if p.line == line]


# --- The store on both databases ------------------------------------------------------------------


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+asyncpg://", "postgresql://", 1)


@asynccontextmanager
async def postgres_schema(url: str) -> AsyncIterator[str]:
    """A fresh schema `certq_test_<random>` on the test PostgreSQL, dropped (with everything in it) after."""
    import asyncpg

    schema = f"certq_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield schema
        finally:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@asynccontextmanager
async def open_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[RecordStore]:
    """A migrated, empty store: a SQLite file under `tmp_path`, or a private PostgreSQL schema."""
    if kind == "sqlite":
        store = await RecordStore.open(f"sqlite+aiosqlite:///{tmp_path / 'records.sqlite3'}")
        try:
            yield store
        finally:
            await store.close()
        return
    url = request.getfixturevalue("postgres_url")
    async with postgres_schema(url) as schema:
        store = await RecordStore.open(url, connect_args={"server_settings": {"search_path": schema}})
        try:
            yield store
        finally:
            await store.close()


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RecordStore]:
    """A fresh records store, once on SQLite and once on PostgreSQL."""
    async with open_store(request.param, tmp_path, request) as s:
        yield s


@pytest.fixture
async def sqlite_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RecordStore]:
    """A fresh SQLite store, for the many-cases tests of parsing that the database plays no part in."""
    async with open_store("sqlite", tmp_path, request) as s:
        yield s
