"""Secrets shown once, after a redirect (POST/redirect/GET): the form that made a secret keeps it here and
redirects to a page with a random token in its URL; that page takes it, and it is gone.

    pending = OneTimeSecrets(engine)
    token = await pending.keep(secret, subject=endpoint.id, key_id=principal.key_id, browser=csrf_cookie)
    found = await pending.take(token, key_id=principal.key_id, browser=csrf_cookie)   # Pending, or None

The token is not the secret and is of no use alone: the row is found by the token's digest, only for the key and
the browser (its CSRF cookie) that made it, and only within KEEP_S seconds. Taking it deletes it in the same
statement, so a reload, a second tab, another key, another browser or a late reader all get None. The rows live
in the records database (`tables.pending_secrets`), so any instance may serve the page after the redirect;
expired rows are deleted by the next `keep`.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from aggregator.web.tables import pending_secrets, write_transaction

KEEP_S = 300  # the redirect is followed at once; a few minutes covers a slow network, not a coffee break
MAX_TOKEN = 100


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Pending:
    subject: str  # what the secret is for, as given to `keep`
    secret: str


class OneTimeSecrets:
    def __init__(self, engine: AsyncEngine, *, keep_s: float = KEEP_S, clock: Callable[[], datetime] = _utcnow) -> None:
        self._engine = engine
        self._keep = timedelta(seconds=keep_s)
        self._clock = clock

    async def keep(self, secret: str, *, subject: str, key_id: str, browser: str) -> str:
        """Keep `secret` for `key_id` in `browser` (its CSRF cookie); the token that takes it."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        t = pending_secrets
        async with write_transaction(self._engine) as conn:
            await conn.execute(delete(t).where(t.c.expires_at <= now))
            await conn.execute(insert(t).values(token_sha256=_digest(token), key_id=key_id, subject=subject,
                                                browser_sha256=_digest(browser), secret=secret,
                                                expires_at=now + self._keep))
        return token

    async def take(self, token: str, *, key_id: str, browser: str) -> Pending | None:
        """The secret kept under `token` for this key and browser, deleted as it is read; None when it was taken
        already, has expired, or is another key's or another browser's."""
        if not token or len(token) > MAX_TOKEN or not key_id or not browser:
            return None
        t = pending_secrets
        found = (
            delete(t)
            .where(t.c.token_sha256 == _digest(token), t.c.key_id == key_id, t.c.browser_sha256 == _digest(browser),
                   t.c.expires_at > self._clock())
            .returning(t.c.subject, t.c.secret)
        )  # fmt: skip
        async with write_transaction(self._engine) as conn:
            row = (await conn.execute(found)).first()
        return Pending(row.subject, row.secret) if row else None
