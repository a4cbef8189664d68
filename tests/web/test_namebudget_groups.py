"""The database's name-check budget decides concurrent calls together (issue 13): calls that arrive while a
transaction is being written share the next one, yet each caller gets the answers it would have got alone,
in arrival order; an error reaches every caller of the group; the budget stays exact across engines.

On SQLite and on PostgreSQL (CERTQ_TEST_DATABASE_URL), on a fresh store each (`store`, tests/records_support.py).
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from aggregator.records import RecordStore
from aggregator.records.database import create_engine
from aggregator.web.namebudget import NameBudget, NameBudgetUnavailable
from aggregator.web.namechecks import DatabaseNames
from tests.web_support import MEM_NUMBER, MOHURD_NUMBER

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
TODAY = NOW.date().isoformat()


def calls() -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(caller, day, [(number, digest), ...]): two callers, two numbers, repeats and a batch of 8. (One day: a
    call of a later day deletes the earlier days' rows in the background, as it should.)"""
    out: list[tuple[str, str, list[tuple[str, str]]]] = []
    for i in range(30):
        caller = "key:a" if i % 3 else "key:b"
        number = MEM_NUMBER if i % 5 else MOHURD_NUMBER
        out.append((caller, TODAY, [(number, f"d{i % 11}")]))
    out.insert(12, ("key:a", TODAY, [(MEM_NUMBER, f"batch{j}") for j in range(6)] + [(MEM_NUMBER, "d1")] * 2))
    return out


def one_at_a_time(asked: list[tuple[str, str, list[tuple[str, str]]]], budget: int) -> list[list[bool]]:
    """What separate transactions, made one after another in this order, answer (the rule, written out)."""
    tried: dict[tuple[str, str, str], set[str]] = {}
    answers = []
    for caller, day, items in asked:
        out = []
        for number, digest in items:
            seen = tried.setdefault((caller, day, number), set())
            ok = digest in seen or len(seen) < budget
            if ok:
                seen.add(digest)
            out.append(ok)
        answers.append(out)
    return answers


async def second_engine(store: RecordStore) -> AsyncEngine:
    """Another engine on the same database (another instance's pool)."""
    url = store.engine.url.render_as_string(hide_password=False)
    if store.engine.dialect.name == "postgresql":
        async with store.engine.connect() as conn:
            path = (await conn.execute(sa.text("SHOW search_path"))).scalar_one()
        return create_engine(url, connect_args={"server_settings": {"search_path": path}})
    return create_engine(url)


async def test_concurrent_calls_share_a_transaction_and_each_gets_its_own_answers(store: RecordStore) -> None:
    names = DatabaseNames(store.engine)
    asked = calls()
    answers = await asyncio.gather(*(names.admit_many(c, d, items, 3, NOW) for c, d, items in asked))
    assert answers == one_at_a_time(asked, 3)
    assert names.groups < len(asked)  # grouped
    # the batch was decided where it arrived: key:a had 3 names on MEM_NUMBER before it, so none of its own new
    # ones fit, and "d1", tried earlier, is free
    assert answers[12] == [False] * 6 + [True, True]
    # what was stored is what was admitted, per caller, number and day
    async with store.engine.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT caller, number, day, name_digest FROM name_checks"))).all()
    admitted = {
        (c, d, n, g) for (c, d, items), out in zip(asked, answers, strict=True) for (n, g), ok in zip(items, out) if ok
    }
    assert {(c, d, n, g) for c, n, d, g in rows} == admitted
    # and later calls, grouped or not, see it: a new name is refused where the budget is spent
    assert await names.admit_many("key:a", TODAY, [(MEM_NUMBER, "new")], 3, NOW) == [False]
    assert await names.admit_many("key:c", TODAY, [(MEM_NUMBER, "new")], 3, NOW) == [True]


async def test_an_error_reaches_every_caller_of_the_group_and_the_next_group_works(store: RecordStore) -> None:
    budget = NameBudget(store.engine, per_certificate=5, salt="s")
    async with store.engine.begin() as conn:  # the table gone: the database cannot keep the budget
        await conn.execute(sa.text("ALTER TABLE name_checks RENAME TO name_checks_away"))
    outcomes = await asyncio.gather(
        *(budget.admit(f"key:{i % 3}", MEM_NUMBER, f"名{i}") for i in range(12)), return_exceptions=True
    )
    assert all(isinstance(o, NameBudgetUnavailable) for o in outcomes), outcomes  # each fails closed
    async with store.engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE name_checks_away RENAME TO name_checks"))
        assert (await conn.execute(sa.text("SELECT count(*) FROM name_checks"))).scalar_one() == 0  # nothing kept
    again = await asyncio.gather(*(budget.admit("key:0", MEM_NUMBER, f"名{i}") for i in range(8)))
    assert again == [True] * 5 + [False] * 3


async def test_the_budget_is_exact_across_two_engines_with_callers_in_any_order(store: RecordStore) -> None:
    """Two instances (two engines, two pools), each grouping calls of two callers in opposite orders: exactly
    five names per caller and certificate, no deadlock between their transactions."""
    other = await second_engine(store)
    try:
        a = [NameBudget(store.engine, per_certificate=5, salt="s") for _ in range(2)]
        b = [NameBudget(other, per_certificate=5, salt="s") for _ in range(2)]
        tries = []
        for i in range(50):
            first, second = ("key:x", "key:y") if i % 2 else ("key:y", "key:x")
            instance = (a + b)[i % 4]
            tries += [(instance, first, f"名{i % 20}"), (instance, second, f"名{(i * 7) % 20}")]
        results = await asyncio.gather(*(inst.admit(caller, MEM_NUMBER, n) for inst, caller, n in tries))
        for caller in ("key:x", "key:y"):
            admitted = {n for (_, c, n), ok in zip(tries, results, strict=True) if c == caller and ok}
            assert len(admitted) == 5, caller
            assert all(await asyncio.gather(*(b[0].admit(caller, MEM_NUMBER, n) for n in admitted)))
            assert not await a[1].admit(caller, MEM_NUMBER, "又一个名字")
        assert sum(i.database.groups for i in a + b) < len(tries)  # grouped on every instance
    finally:
        await other.dispose()


async def test_repeated_and_refused_names_are_answered_while_another_writer_holds_the_lock(tmp_path: Path) -> None:
    """On SQLite a group that adds no name needs no write lock: with another process's write transaction open
    (an import, an audit append ...), a name tried already is still admitted and a sixth name still refused."""
    store = await RecordStore.open(f"sqlite+aiosqlite:///{tmp_path / 'records.sqlite3'}")
    try:
        budget = NameBudget(store.engine, per_certificate=5, salt="s")
        assert await asyncio.gather(*(budget.admit("key:a", MEM_NUMBER, f"名{i}") for i in range(6))) == (
            [True] * 5 + [False]
        )
        other = sqlite3.connect(tmp_path / "records.sqlite3", isolation_level=None)
        elsewhere = NameBudget(store.engine, per_certificate=5, salt="s")  # another instance: it must ask
        try:
            other.execute("BEGIN IMMEDIATE")  # holds SQLite's write lock until ROLLBACK
            repeats = await asyncio.gather(*(elsewhere.admit("key:a", MEM_NUMBER, f"名{i}") for i in range(7)))
            assert repeats == [True] * 5 + [False] * 2
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert await budget.admit("key:b", MEM_NUMBER, "名0")  # a new name takes the lock, now free again
    finally:
        await store.close()


async def test_the_days_decisions_answer_a_recheck_without_asking_and_new_names_still_ask(store: RecordStore) -> None:
    """A name decided earlier today is answered as it was (admitted, or refused) without a round trip, even
    while the database cannot be asked; a name not seen before is asked (and fails closed); a new day asks."""
    now = [NOW]
    budget = NameBudget(store.engine, per_certificate=2, salt="s", clock=lambda: now[0])
    assert await budget.admit_many("key:a", [(MEM_NUMBER, n) for n in ("甲", "乙", "丙")]) == [True, True, False]
    async with store.engine.begin() as conn:  # the database cannot be asked now
        await conn.execute(sa.text("ALTER TABLE name_checks RENAME TO name_checks_away"))
    try:
        assert await budget.admit_many("key:a", [(MEM_NUMBER, "丙"), (MEM_NUMBER, "甲")]) == [False, True]
        with pytest.raises(NameBudgetUnavailable):
            await budget.admit("key:a", MEM_NUMBER, "丁")  # never seen: asked, and nothing can answer
        with pytest.raises(NameBudgetUnavailable):
            await budget.admit("key:b", MEM_NUMBER, "甲")  # another caller's name is its own
        now[0] = NOW + timedelta(days=1)
        with pytest.raises(NameBudgetUnavailable):
            await budget.admit("key:a", MEM_NUMBER, "甲")  # a new day: asked again
    finally:
        async with store.engine.begin() as conn:
            await conn.execute(sa.text("ALTER TABLE name_checks_away RENAME TO name_checks"))
    assert await budget.admit("key:a", MEM_NUMBER, "丙")  # the new day's budget
