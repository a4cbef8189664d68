"""API keys: created once, stored hashed, sent as `Authorization: Bearer <key>`, revocable.

    keys = KeyStore(engine)
    record, secret = await keys.create(Role.DEPARTMENT, "应急管理部 数据科", department=Department.MEM)
    print(secret)                          # cq_3f9a0c1d2e4b_Xy...   shown once, never stored
    principal = await keys.authenticate(secret)     # Principal(role=department, key_id="3f9a0c1d2e4b", ...)
    await keys.revoke("3f9a0c1d2e4b")

A key is `cq_<key id>_<secret>`: the key id (12 hex characters) is public and names the key in lists and
in the audit log; the secret is 32 random bytes (urlsafe base64). Only sha256(key) is stored.

Why sha256 and not bcrypt/argon2: slow, salted hashes protect *low-entropy* secrets (passwords) against
guessing after a database leak. A key carries 256 random bits, so no guessing attack exists whatever the
hash speed, and a fast hash keeps authentication at microseconds per request. The key id selects the row;
the hashes are compared in constant time.

Authentication results are cached in process for `cache_s` seconds (default 2): a revocation through this
process takes effect at once, one through another process (the CLI, another worker) within `cache_s`. When a
key's entry has expired, the requests that present it meanwhile wait for one read of its row (not one each,
which under load checked out a pooled connection per request every `cache_s`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from aggregator.errors import register
from aggregator.models import Department
from aggregator.web.problems import InvalidKey, has_control_characters
from aggregator.web.roles import Principal, Role
from aggregator.web.tables import api_keys, write_transaction

KEY_PREFIX = "cq"
_KEY_FORMAT = re.compile(r"^cq_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
MAX_LABEL = 200


class KeySpecError(ValueError):
    """A key cannot be created as asked (a department key without a department, an empty label ...)."""

    def __init__(self, zh: str, en: str) -> None:
        super().__init__(f"{zh} ({en})")
        self.zh = zh
        self.en = en


register(KeySpecError, 422, 64, "invalid-key-request", "{exc.zh}", "{exc.en}")


@dataclass(frozen=True)
class ApiKey:
    """One stored key, without its secret."""

    key_id: str
    role: Role
    label: str
    department: Department | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def principal(self) -> Principal:
        return Principal(self.role, key_id=self.key_id, label=self.label, department=self.department)

    def as_dict(self) -> dict[str, object]:
        return {
            "key_id": self.key_id,
            "role": self.role.value,
            "label": self.label,
            "department": self.department.value if self.department else None,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def parse_key(secret: str) -> str | None:
    """The key id of a well-formed key, or None."""
    m = _KEY_FORMAT.match(secret.strip())
    return m.group(1) if m else None


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _row_key(row: object) -> tuple[ApiKey, str]:
    m = row._mapping  # type: ignore[attr-defined]
    created = _utc(m["created_at"])
    assert created is not None
    key = ApiKey(
        key_id=m["key_id"],
        role=Role(m["role"]),
        label=m["label"],
        department=Department(m["department"]) if m["department"] else None,
        created_at=created,
        revoked_at=_utc(m["revoked_at"]),
    )
    return key, m["secret_sha256"]


class KeyStore:
    """API keys in the records database."""

    def __init__(self, engine: AsyncEngine, *, cache_s: float = 2.0, clock: Callable[[], float] = time.monotonic):
        self._engine = engine
        self._cache_s = cache_s
        self._clock = clock
        self._cache: dict[str, tuple[float, ApiKey | None, str]] = {}  # key id -> (until, key, hash)
        self._loading: dict[str, asyncio.Future[tuple[ApiKey | None, str]]] = {}  # key id -> its read in flight

    async def create(
        self, role: Role | str, label: str, *, department: Department | str | None = None
    ) -> tuple[ApiKey, str]:
        """A new key; returns the stored record and the secret, which is not kept anywhere."""
        role = Role(role)
        label = label.strip()
        if not label or len(label) > MAX_LABEL:
            raise KeySpecError(f"标签不能为空且不超过 {MAX_LABEL} 字", f"label must be 1-{MAX_LABEL} characters")
        if has_control_characters(label):  # shown in lists, tables and upload reports: one line, no NUL
            raise KeySpecError("标签不能含有控制字符（含换行、制表符）", "the label contains control characters (line breaks, tabs ...)")
        dept = Department(department) if department else None
        if role == Role.DEPARTMENT and dept is None:
            raise KeySpecError("部门密钥须指定部门", "a department key needs --department")
        if role != Role.DEPARTMENT and dept is not None:
            raise KeySpecError("只有部门密钥可以指定部门", "only department keys have a department")
        if role == Role.PUBLIC:
            raise KeySpecError("公众无需密钥", "the public role needs no key")
        for _ in range(5):
            key_id = secrets.token_hex(6)
            secret = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
            record = ApiKey(key_id, role, label, dept, datetime.now(UTC), None)
            try:
                async with write_transaction(self._engine) as conn:
                    await conn.execute(
                        insert(api_keys).values(
                            key_id=key_id,
                            secret_sha256=hash_key(secret),
                            role=role.value,
                            department=dept.value if dept else None,
                            label=label,
                            created_at=record.created_at,
                        )
                    )
            except IntegrityError:  # a key id collision (2^48 ids): draw again
                continue
            return record, secret
        raise RuntimeError("could not draw an unused key id")

    async def revoke(self, key_id: str) -> bool:
        """Revoke a key; False when no such key exists (revoking twice is fine and keeps the first time)."""
        async with write_transaction(self._engine) as conn:
            found = (await conn.execute(select(api_keys.c.key_id).where(api_keys.c.key_id == key_id))).first()
            if found is None:
                return False
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        self._cache.pop(key_id, None)
        self._loading.pop(key_id, None)  # a read that began before the revocation is not cached
        return True

    async def list_keys(self) -> list[ApiKey]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(api_keys).order_by(api_keys.c.created_at))).all()
        return [_row_key(r)[0] for r in rows]

    async def get(self, key_id: str) -> ApiKey | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.key_id == key_id))).first()
        return _row_key(row)[0] if row else None

    async def authenticate(self, secret: str) -> Principal:
        """The principal a presented key stands for; `InvalidKey` when malformed, unknown or revoked."""
        key_id = parse_key(secret)
        if key_id is None:
            raise InvalidKey()
        now = self._clock()
        cached = self._cache.get(key_id)
        if cached and cached[0] > now:
            _, key, stored_hash = cached
        else:
            key, stored_hash = await self._read_once(key_id, now)
        if key is None or key.revoked or not hmac.compare_digest(stored_hash, hash_key(secret.strip())):
            raise InvalidKey()
        return key.principal()

    async def _read_once(self, key_id: str, now: float) -> tuple[ApiKey | None, str]:
        """The key's row, read once for every caller that asks while the read is in flight, then cached (unless
        the key was revoked here meanwhile). A caller that gives up does not cancel the others' read."""
        loading = self._loading.get(key_id)
        if loading is None:
            loading = asyncio.ensure_future(self._load(key_id))
            self._loading[key_id] = loading

            def loaded(done: asyncio.Future[tuple[ApiKey | None, str]]) -> None:
                if self._loading.get(key_id) is not done:  # revoked meanwhile: not cached
                    return
                del self._loading[key_id]
                if not done.cancelled() and done.exception() is None:
                    if len(self._cache) > 10_000:
                        self._cache.clear()
                    self._cache[key_id] = (now + self._cache_s, *done.result())

            loading.add_done_callback(loaded)
        return await asyncio.shield(loading)

    async def _load(self, key_id: str) -> tuple[ApiKey | None, str]:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.key_id == key_id))).first()
        if row is None:
            return None, ""
        return _row_key(row)
