"""Lookups as of a past date, as a role may make them (the API's `?as_of=`, the lookup page's date field).

    answer, view = await services.past.lookup_for(principal, number, on="2026-08-01", name=None, purpose=None, client_ip=ip)

The same rules as `Lookups.lookup_for` (purpose for regulators, the name-check budget, the audit entry before
the answer, masking for the role, the public's count), around `asof.lookup_as_of` instead of the live fan-out.
Audited as a `lookup` (its personal data is seen as by any lookup).
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any

from aggregator.asof import FutureDate, InvalidDate, PastAnswer, lookup_as_of, parse_date
from aggregator.web.masking import mask_answer
from aggregator.web.namebudget import name_outcome
from aggregator.web.problems import _described
from aggregator.web.roles import Principal

if TYPE_CHECKING:
    from aggregator.web.services.lookups import Lookups


# Their wording is registered by `aggregator.asof`; this makes them problem types of the API description too.
_described(FutureDate(date(2000, 1, 2), date(2000, 1, 1)))
_described(InvalidDate("?"))


class PastLookups:
    def __init__(self, lookups: Lookups) -> None:
        self._lookups = lookups

    async def lookup_for(
        self,
        principal: Principal,
        number: str,
        *,
        on: date | str,
        name: str | None = None,
        id_number: str | None = None,
        purpose: str | None = None,
        client_ip: str | None = None,
    ) -> tuple[PastAnswer, dict[str, Any]]:
        """One lookup as of the end of day `on` (UTC) as `principal` may make it. `InvalidDate` / `FutureDate`
        (422) for a date that is not YYYY-MM-DD or is after today."""
        from aggregator.web.services.lookups import lookup_entry, require_purpose

        svc = self._lookups
        day = parse_date(on) if isinstance(on, str) else on
        purpose = require_purpose(principal, purpose)
        name, refused = await svc.admit_name(principal, client_ip, number, id_number, name)
        answer: Any = await lookup_as_of(
            svc.gateway, number, on=day, name=name if refused is None else None, id_number=id_number
        )
        answer = name_outcome(answer, name, refused)
        if principal.key_id is not None:
            # personal data seen, as by any lookup (the answer says as of when)
            await svc.audit.write(
                [lookup_entry(principal, answer, purpose=purpose, client_ip=client_ip, id_number=id_number)]
            )
        elif svc.public_lookups is not None:
            svc.public_lookups.count(answer.query.number)
        typed = {t for t in (number, id_number) if t}
        return answer, mask_answer(answer, principal.role, typed)
