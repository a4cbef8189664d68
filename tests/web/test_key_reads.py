"""Keys are read from the database once per expiry of the in-process cache, however many requests present the
key at that moment (issue 13), and revocation still takes effect as documented: at once through this process,
within `cache_s` through another."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from aggregator.records import RecordStore
from aggregator.web.keys import KeyStore
from aggregator.web.problems import InvalidKey
from aggregator.web.roles import Role


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_concurrent_requests_read_an_expired_key_once_and_revocation_still_holds(tmp_path: Path) -> None:
    store = await RecordStore.open(f"sqlite+aiosqlite:///{tmp_path / 'records.sqlite3'}")
    reads = 0

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        nonlocal reads
        reads += "FROM api_keys" in statement

    event.listen(store.engine.sync_engine, "before_cursor_execute", count)
    try:
        clock = Clock()
        here, elsewhere = KeyStore(store.engine, clock=clock), KeyStore(store.engine)  # this process; the CLI
        record, secret = await elsewhere.create(Role.EMPLOYER, "某建设集团")
        other, other_secret = await elsewhere.create(Role.EMPLOYER, "另一家")

        principals = await asyncio.gather(*(here.authenticate(secret) for _ in range(50)))
        assert {p.key_id for p in principals} == {record.key_id} and reads == 1
        assert (await here.authenticate(other_secret)).key_id == other.key_id and reads == 2  # a key of its own

        clock.now += 1.0  # within cache_s: from the cache
        await asyncio.gather(*(here.authenticate(secret) for _ in range(10)))
        assert reads == 2

        await elsewhere.revoke(record.key_id)  # through another process: still valid here until cache_s ends
        assert (await here.authenticate(secret)).key_id == record.key_id
        clock.now += 1.5
        before = reads
        outcomes = await asyncio.gather(*(here.authenticate(secret) for _ in range(20)), return_exceptions=True)
        assert all(isinstance(o, InvalidKey) for o in outcomes) and reads == before + 1

        await here.revoke(other.key_id)  # through this process: at once
        with pytest.raises(InvalidKey):
            await here.authenticate(other_secret)
        with pytest.raises(InvalidKey):  # a wrong secret under a known key id is refused as before
            await here.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    finally:
        await store.close()


async def test_a_revocation_here_is_not_undone_by_a_read_in_flight(tmp_path: Path) -> None:
    store = await RecordStore.open(f"sqlite+aiosqlite:///{tmp_path / 'records.sqlite3'}")
    try:
        keys = KeyStore(store.engine)
        record, secret = await keys.create(Role.EMPLOYER, "某建设集团")
        reading = asyncio.ensure_future(keys.authenticate(secret))  # its read of the row begins ...
        await asyncio.sleep(0)
        await keys.revoke(record.key_id)  # ... and the key is revoked here before it is answered
        await asyncio.gather(reading, return_exceptions=True)  # whatever it read, it is not kept:
        with pytest.raises(InvalidKey):
            await keys.authenticate(secret)
    finally:
        await store.close()
