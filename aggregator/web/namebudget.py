"""Name checks are a limited resource: how many distinct holder names one caller may have checked against one
certificate number per UTC day.

    budget = create_name_budget(engine, redis_client, per_certificate=5)    # client None: the database only
    caller = caller_for(principal, client_ip)       # "key:<key id>", "ip:<address>", or None (not budgeted)
    if await budget.admit(caller, "T110105199003071239", "张小三"):
        ...  # check the name
    else:
        ...  # look the number up without the name: neither match nor mismatch is revealed
    await budget.admit_many(caller, [(number, name), ...])    # a batch: one answer per pair, in order

Whether a name matches is an oracle: asked often enough it tells whose certificate a number is. So each
caller (a key; the public per client IP, an IPv6 client per /64) may try `per_certificate` distinct names
per certificate per UTC day. Trying a name again that day costs nothing. Names compare in their normalised
form (`merge.normalise_name`), and only a keyed digest is stored: HMAC-SHA256 over the number and the name,
keyed by `CERTQ_WEB_NAME_SALT` or, when that is unset, by a random key made once and kept in the database
every instance shares (`deployment_secrets`). The name itself is never
stored. Regulators and admins see the holder's name anyway and are not budgeted (`caller_for` gives None).

Where the tried names live, so that the budget holds across processes and machines:

- Redis (when the app has a client): one set per caller, certificate and day, decided by one Lua script
  (tried already → yes; fewer than the budget → add, yes; else no), expiring an hour after the day ends.
  Calls that arrive while a script call is in flight go together into the next one (one round trip for
  many requests; the script decides their pairs in order, call after call, as separate calls would).
- the database table `name_checks` without Redis and while Redis is down (`RedisHealth`): one write
  transaction per call that reads what the caller tried and inserts what is new, serialised per caller and
  day (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory transaction lock), so concurrent requests on any
  instance never admit more than the budget. Rows of past days are deleted once a day per process.

While Redis is down the database keeps its own count, so a caller can get at most twice the budget for a
certificate on a day Redis fails. If neither can be asked, `NameBudgetUnavailable` is raised: the caller
then treats the name as not checked (fail closed; the answer says why).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from aggregator.merge import normalise_name
from aggregator.models import Answer, NameCheck
from aggregator.records.database import dialect_insert
from aggregator.resilience.health import RedisHealth
from aggregator.web.roles import FULL_VIEW_ROLES, Principal
from aggregator.web.tables import deployment_secret, name_checks, write_transaction

log = logging.getLogger(__name__)

DEFAULT_PER_CERTIFICATE = 5
TTL_MARGIN_S = 3600  # Redis sets live until an hour after their UTC day ends
_LOCK_CLASS = 7346  # PostgreSQL advisory lock namespace (records.store uses 7345)
_CHUNK = 500  # numbers per IN (...) query


_LUA = """
local budget = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV, 2 do
  local key = KEYS[tonumber(ARGV[i])]
  local digest = ARGV[i + 1]
  if redis.call('SISMEMBER', key, digest) == 1 then
    out[#out + 1] = 1
  elseif redis.call('SCARD', key) < budget then
    redis.call('SADD', key, digest)
    redis.call('EXPIRE', key, ttl)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""


# Why a name was not checked, for `Answer.verdict_reason` (Chinese first, English in parentheses).
BUDGET_SPENT = (
    "今日对该证书核对的姓名次数已达上限，本次未核对姓名 "
    "(the daily budget of names checked against this certificate is spent; the name was not checked)"
)
CHECKS_UNAVAILABLE = "姓名核对暂不可用，本次未核对姓名 (name checks are not available right now; the name was not checked)"


def checked(answer: Answer) -> Answer:
    """An answer to a lookup with a name, marked as having checked it."""
    return answer.model_copy(update={"query": answer.query.model_copy(update={"name_check": NameCheck.CHECKED})})


def not_checked(answer: Answer, reason: str) -> Answer:
    """An answer to a lookup made WITHOUT the name the caller gave: it says that a name was given, that it was
    not checked, and why. Everything else is what a lookup without a name gives, so nothing in it depends
    on the name (neither a match nor a mismatch shows)."""
    query = answer.query.model_copy(update={"name_given": True, "name_check": NameCheck.NOT_CHECKED})
    return answer.model_copy(update={"query": query, "verdict_reason": f"{answer.verdict_reason}；{reason}"})


def name_outcome(answer: Answer, name: str | None, refused: str | None) -> Answer:
    """The answer marked with what became of the name given: checked, or not checked and why."""
    if name is None:
        return answer
    return checked(answer) if refused is None else not_checked(answer, refused)


class NameBudgetUnavailable(Exception):
    """Neither Redis nor the database could say whether a name may be checked (the name is then not checked)."""


def caller_for(principal: Principal, client_ip: str | None) -> str | None:
    """Whose budget a lookup spends: the key's, or for the public the client IP's (an IPv6 client's /64,
    which one subscriber usually holds whole). None for roles that see the holder's name anyway."""
    if principal.role in FULL_VIEW_ROLES:
        return None
    if principal.key_id is not None:
        return f"key:{principal.key_id}"
    ip = client_ip or "unknown"
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return f"ip:{ip}"[:80]
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    if address.version == 6 and mapped is None:
        return f"ip:{ipaddress.ip_network(f'{address}/64', strict=False)}"
    return f"ip:{mapped or address}"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _pg_lock_key(caller: str, day: str) -> int:
    """An int4 for pg_advisory_xact_lock(class, key) from a caller and day."""
    return int.from_bytes(hashlib.sha256(f"{caller}|{day}".encode()).digest()[:4], "big", signed=True)


async def _serialise(conn: AsyncConnection, caller: str, day: str) -> None:
    """Make concurrent transactions of one caller and day take turns (SQLite's BEGIN IMMEDIATE already does)."""
    if conn.dialect.name == "postgresql":
        lock = {"c": _LOCK_CLASS, "k": _pg_lock_key(caller, day)}
        await conn.execute(text("SELECT pg_advisory_xact_lock(:c, :k)"), lock)


def _insert_absent(conn: AsyncConnection) -> Any:
    """An INSERT that skips rows already present."""
    return dialect_insert(conn.dialect.name, name_checks).on_conflict_do_nothing()


class DatabaseNames:
    """The tried names in the `name_checks` table (every instance on one database shares them)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._pruned: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def admit_many(
        self, caller: str, day: str, items: Sequence[tuple[str, str]], budget: int, now: datetime
    ) -> list[bool]:
        """For each (number, digest), in order: True if it was tried already today or fits the budget (then
        it is recorded), else False. One write transaction, serialised per caller and day."""
        self._prune_before(day)
        async with write_transaction(self._engine) as conn:
            await _serialise(conn, caller, day)
            numbers = sorted({number for number, _ in items})
            tried: dict[str, set[str]] = defaultdict(set)
            for i in range(0, len(numbers), _CHUNK):
                stmt = select(name_checks.c.number, name_checks.c.name_digest).where(
                    name_checks.c.caller == caller,
                    name_checks.c.day == day,
                    name_checks.c.number.in_(numbers[i : i + _CHUNK]),
                )
                for number, digest in (await conn.execute(stmt)).all():
                    tried[number].add(digest)
            out: list[bool] = []
            new: list[dict[str, Any]] = []
            for number, digest in items:
                seen = tried[number]
                if digest in seen:
                    out.append(True)
                elif len(seen) < budget:
                    seen.add(digest)
                    new.append({"caller": caller, "number": number, "day": day, "name_digest": digest, "at": now})
                    out.append(True)
                else:
                    out.append(False)
            if new:
                await conn.execute(_insert_absent(conn), new)
        return out

    async def salt(self) -> bytes:
        """The deployment's random HMAC key, made by whichever instance asks first."""
        return await deployment_secret(self._engine, "name_digest_key")

    def _prune_before(self, day: str) -> None:
        """Once a day per process, in the background: delete the rows of past days."""
        if self._pruned == day:
            return
        self._pruned = day

        async def prune() -> None:
            try:
                async with write_transaction(self._engine) as conn:
                    await conn.execute(delete(name_checks).where(name_checks.c.day < day))
            except Exception as e:  # noqa: BLE001 - tomorrow's clean-up tries again
                log.warning("could not delete past name checks: %s", e)

        task = asyncio.get_running_loop().create_task(prune(), name="certq-name-checks-prune")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


_Waiting = tuple[str, date, list[tuple[str, str]], "asyncio.Future[list[bool]]"]  # caller, day, pairs, answer


class NameBudget:
    """The budget, in Redis when a client is given (the database while Redis is down), else in the database."""

    def __init__(
        self,
        engine: AsyncEngine,
        client: Any | None = None,
        *,
        per_certificate: int = DEFAULT_PER_CERTIFICATE,
        salt: str | bytes | None = None,
        prefix: str = "certq",
        clock: Callable[[], datetime] = _utc_now,
        health: RedisHealth | None = None,
    ) -> None:
        self.per_certificate = per_certificate
        self.database = DatabaseNames(engine)
        self._salt: bytes | None = salt.encode("utf-8") if isinstance(salt, str) else salt
        self._salt_lock = asyncio.Lock()
        self._prefix = prefix
        self._clock = clock
        self._client = client
        self._script = client.register_script(_LUA) if client is not None else None
        self.health = health or RedisHealth(timeout_s=0.25, recheck_s=1.0, name="Redis (name checks)")
        self._waiting: list[_Waiting] = []  # Redis calls queued for the next script call
        self._sender: asyncio.Task[None] | None = None

    async def admit(self, caller: str, number: str, name: str) -> bool:
        """Whether `caller` may have `name` checked against certificate `number` (already normalised) now."""
        return (await self.admit_many(caller, [(number, name)]))[0]

    async def admit_many(self, caller: str, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        """`admit` for several (number, name) pairs at once, decided in order (a batch: the first names of a
        certificate get the budget). Raises `NameBudgetUnavailable` if nothing can decide."""
        if not pairs:
            return []
        if self.per_certificate <= 0:
            return [True] * len(pairs)
        now = self._clock()
        day = now.date().isoformat()
        key = await self._key()
        items = [(number, self.digest(key, number, name)) for number, name in pairs]
        if self._script is None:
            return await self._database(caller, day, items, now)

        async def shared() -> list[bool]:
            return await self._redis(caller, now.date(), items)

        async def local() -> list[bool]:
            return await self._database(caller, day, items, now)

        return await self.health.call(shared, local)

    @staticmethod
    def digest(key: bytes, number: str, name: str) -> str:
        """The stored form of a name tried against a number: HMAC-SHA256, hex."""
        message = f"{number}\x1f{normalise_name(name)}".encode()
        return hmac.new(key, message, hashlib.sha256).hexdigest()

    async def _key(self) -> bytes:
        if self._salt is not None:
            return self._salt
        async with self._salt_lock:
            if self._salt is None:
                try:
                    self._salt = await self.database.salt()
                except Exception as e:  # noqa: BLE001 - asked again on the next call
                    raise NameBudgetUnavailable(f"the name-check key cannot be read: {e}") from e
        return self._salt

    async def _database(self, caller: str, day: str, items: list[tuple[str, str]], now: datetime) -> list[bool]:
        try:
            return await self.database.admit_many(caller, day, items, self.per_certificate, now)
        except Exception as e:  # noqa: BLE001 - no budget can be kept: the names are not checked
            log.error("name checks: the database cannot keep the budget: %s", e)
            raise NameBudgetUnavailable(str(e)) from e

    async def _redis(self, caller: str, day: date, items: list[tuple[str, str]]) -> list[bool]:
        """Queued for the next script call (see the module doc); its own answers, or the call's Redis error."""
        done: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._waiting.append((caller, day, items, done))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send(), name="certq-name-budget")
        return await done

    async def _send(self) -> None:
        """One script call per day among the queued calls (one in practice), until the queue is empty."""
        calls: list[_Waiting] = []
        try:
            while self._waiting:
                queued, self._waiting = self._waiting, []
                for day in dict.fromkeys(c[1] for c in queued):
                    calls = [c for c in queued if c[1] == day and not c[3].done()]  # done: its caller gave up
                    try:
                        answers = await self._script_call(day, calls)
                    except Exception as e:  # noqa: BLE001 - each caller gets it (RedisHealth falls back)
                        for *_, done in calls:
                            if not done.done():
                                done.set_exception(e)
                    else:
                        at = 0
                        for _, _, items, done in calls:
                            if not done.done():
                                done.set_result(answers[at : at + len(items)])
                            at += len(items)
                    calls = []
        finally:  # cancelled (shutdown): nobody may wait for an answer that will not come
            for *_, done in calls + self._waiting:
                if not done.done():
                    done.set_exception(NameBudgetUnavailable("the name-check budget stopped"))
            self._waiting = []

    async def _script_call(self, day: date, calls: list[_Waiting]) -> list[bool]:
        assert self._script is not None
        keys: dict[str, int] = {}
        args: list[Any] = [self.per_certificate, self._ttl_s(day)]
        for caller, _, items, _ in calls:
            for number, digest in items:
                key = f"{self._prefix}:web:names:{day.isoformat()}:{caller}:{number}"
                args += [keys.setdefault(key, len(keys) + 1), digest]
        result = await self._script(keys=list(keys), args=args)
        return [bool(int(v)) for v in result]

    def _ttl_s(self, day: date) -> int:
        end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
        return max(1, int((end - self._clock()).total_seconds())) + TTL_MARGIN_S


def create_name_budget(
    engine: AsyncEngine,
    client: Any | None,
    *,
    per_certificate: int = DEFAULT_PER_CERTIFICATE,
    salt: str | None = None,
    prefix: str = "certq",
) -> NameBudget:
    """The budget on `engine`'s database, shared through `client` (a `redis.asyncio.Redis`) when not None."""
    return NameBudget(engine, client, per_certificate=per_certificate, salt=salt, prefix=prefix)
