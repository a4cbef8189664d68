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
- the database table `name_checks` without Redis and while Redis is down (`RedisHealth`): a write
  transaction that reads what the callers tried and inserts what is new, serialised per caller and day
  (SQLite: BEGIN IMMEDIATE; PostgreSQL: advisory transaction locks, taken in sorted order), so concurrent
  requests on any instance never admit more than the budget. Calls that arrive while a transaction is being
  written go together into the next one, decided in arrival order as separate transactions would; an error
  reaches every call of that transaction (`namechecks.DatabaseNames`). Rows of past days are deleted once a
  day per process.

What was decided stays decided for the day: a name tried already stays admitted, and a name refused stays
refused (rows and set members are only added during their day). So each process keeps the day's decisions
(per caller and digest, up to `KNOWN_MAX`) and answers a call whose names were all decided before without
asking Redis or the database: a re-check costs no round trip, and reveals nothing the caller was not told
already. Names not seen before are always asked.

While Redis is down the database keeps its own count, so a caller can get at most twice the budget for a
certificate on a day Redis fails. If neither can be asked (about a name not decided earlier that day),
`NameBudgetUnavailable` is raised: the caller then treats the name as not checked (fail closed; the answer
says why).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from aggregator.merge import normalise_name
from aggregator.models import Answer, NameCheck
from aggregator.resilience.health import RedisHealth
from aggregator.web.namechecks import DatabaseNames
from aggregator.web.roles import FULL_VIEW_ROLES, Principal

log = logging.getLogger(__name__)

DEFAULT_PER_CERTIFICATE = 5
TTL_MARGIN_S = 3600  # Redis sets live until an hour after their UTC day ends
KNOWN_MAX = 20_000  # the day's decisions kept per process, (caller, digest) -> admitted (a few MB at most)


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
        self._known: dict[tuple[str, str], bool] = {}  # the day's decisions: (caller, digest) -> admitted
        self._known_day: str | None = None

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
        known = self._decided(caller, day, items)
        if known is not None:
            return known
        if self._script is None:
            answers = await self._database(caller, day, items, now)
        else:

            async def shared() -> list[bool]:
                return await self._redis(caller, now.date(), items)

            async def local() -> list[bool]:
                return await self._database(caller, day, items, now)

            answers = await self.health.call(shared, local)
        self._remember(caller, day, items, answers)
        return answers

    def _decided(self, caller: str, day: str, items: Sequence[tuple[str, str]]) -> list[bool] | None:
        """The answers when every name of the call was decided earlier today (see the module doc), else None."""
        if day != self._known_day:
            return None
        out = []
        for _, digest in items:
            ok = self._known.get((caller, digest))
            if ok is None:
                return None
            out.append(ok)
        return out

    def _remember(self, caller: str, day: str, items: Sequence[tuple[str, str]], answers: list[bool]) -> None:
        if self._known_day is not None and day < self._known_day:  # asked just before midnight: nothing to keep
            return
        if day != self._known_day or len(self._known) + len(items) > KNOWN_MAX:
            self._known.clear()
            self._known_day = day
        for (_, digest), ok in zip(items, answers, strict=True):
            self._known[(caller, digest)] = ok

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
