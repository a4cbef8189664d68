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
from aggregator.audit import AuditEntry
from aggregator.numbers import parse_number
from aggregator.web.masking import mask_answer
from aggregator.web.namebudget import checked, not_checked
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
        from aggregator.web.services.lookups import audit_holder, audit_name_check, require_purpose

        svc = self._lookups
        day = parse_date(on) if isinstance(on, str) else on
        purpose = require_purpose(principal, purpose)
        name = (name or "").strip() or None
        refused: str | None = None
        if name is not None:
            normalised = parse_number(number).number
            if id_number and id_number.strip():
                parse_number(id_number)
            [refused] = await svc.admit_names(principal, client_ip, [(normalised, name)])
        answer: Any = await lookup_as_of(
            svc.gateway, number, on=day, name=name if refused is None else None, id_number=id_number
        )
        if name is not None:
            answer = checked(answer) if refused is None else not_checked(answer, refused)
        if principal.key_id is not None:
            await svc.audit.write(
                [
                    AuditEntry.now(
                        principal,
                        action="lookup",  # personal data seen, as by any lookup (the answer says as of when)
                        number=answer.query.number,
                        name_given=answer.query.name_given,
                        id_number_given=answer.query.id_number_given,
                        verdict=answer.verdict.value,
                        purpose=purpose,
                        client_ip=client_ip,
                        name_check=audit_name_check(answer),
                        holder_id_number=audit_holder(answer, id_number),
                    )
                ]
            )
        elif svc.public_lookups is not None:
            svc.public_lookups.count(answer.query.number)
        typed = {t for t in (number, id_number) if t}
        return answer, mask_answer(answer, principal.role, typed)
