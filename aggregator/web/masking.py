"""What each role may see of an answer: the one place where personal data is masked (PIPL: the minimum for
the purpose).

    mask_answer(answer, Role.PUBLIC, typed={"吉A042012000939"})      # a JSON-ready dict

- public and department: the holder's name as 张*三, no ID number and no gender at all; a certificate number
  that is an ID number (MEM T+ID, SAMR 证书编号 = ID) is shown only if the caller typed it; conflicts on
  the ID number or gender are left out, name conflicts show masked names; no per-certificate name check.
- employer: the same, plus whether the name (or ID number) it supplied matches (`name_matches`, per
  certificate and for the whole answer).
- regulator and admin: the full answer.

Every answer carries `view: {role, masked}` so a reader can tell what was withheld.
"""

from __future__ import annotations

import operator
import re
import secrets
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import pydantic_core

from aggregator.models import Answer, QueryEcho, Verdict
from aggregator.numbers import normalise
from aggregator.web.roles import FULL_VIEW_ROLES, Role

MASK = "*"
# An ID number as certificate numbers carry it: 18 characters (17 digits + check), 15 legacy digits, or T+ID.
_ID_LIKE = re.compile(r"^T?(?:\d{17}[\dX]|\d{15})$")
# Certificate fields that are personal data beyond the name: never shown to masked roles.
_HIDDEN_FIELDS = ("holder_id_number", "gender")
_HIDDEN_CONFLICT_FIELDS = frozenset(_HIDDEN_FIELDS)


def mask_name(name: str | None) -> str | None:
    """张三 -> 张*, 张小三 -> 张*三, 欧阳小明 -> 欧**明: first and last character kept, one * for each other."""
    if name is None:
        return None
    text = name.strip()
    if not text:
        return None
    if len(text) == 1:
        return MASK
    if len(text) == 2:
        return text[0] + MASK
    return text[0] + MASK * (len(text) - 2) + text[-1]


def is_id_like(value: str) -> bool:
    """Whether a (certificate) number is, or carries, a citizen ID number."""
    return bool(_ID_LIKE.match(normalise(value)))


def mask_id_like(value: str) -> str:
    """110105199003071239 -> 110*************39; T110105199003071239 -> T110*************39."""
    text = normalise(value)
    prefix = "T" if text.startswith("T") and len(text) in (16, 19) else ""
    body = text[len(prefix) :]
    return prefix + body[:3] + MASK * (len(body) - 5) + body[-2:]


def typed_forms(typed: Iterable[str]) -> set[str]:
    """The numbers a caller typed, normalised, with the ID number inside a MEM T+ID and the T+ID of an ID."""
    out: set[str] = set()
    for raw in typed:
        if not raw:
            continue
        n = normalise(raw)
        out.add(n)
        if n.startswith("T") and _ID_LIKE.match(n):
            out.add(n[1:])
        elif _ID_LIKE.match(n):
            out.add("T" + n)
    return out


def _number(value: str | None, known: set[str]) -> str | None:
    if value is None or not is_id_like(value) or normalise(value) in known:
        return value
    return mask_id_like(value)


def overall_name_match(answer: Answer) -> bool | None:
    """For an employer: did the name / ID number it supplied match the holder? None: nothing to compare."""
    if not (answer.query.name_given or answer.query.id_number_given):
        return None
    if answer.verdict == Verdict.NAME_MISMATCH:
        return False
    checks = [c.name_matches for c in answer.certificates if c.name_matches is not None]
    if not checks:
        return None
    return any(checks)


def mask_answer(answer: Answer, role: Role, typed: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """The answer as `role` may see it, as a JSON-ready dict. `typed`: the numbers the caller typed (the
    certificate number and any ID number), which may be echoed back unmasked."""
    data = answer.model_dump(mode="json")
    if role in FULL_VIEW_ROLES:
        data["view"] = {"role": role.value, "masked": False}
        return data

    known = typed_forms(typed)
    for cert in data["certificates"]:
        cert["holder_name"] = mask_name(cert.get("holder_name"))
        for field in _HIDDEN_FIELDS:
            cert.pop(field, None)
        cert["number"] = _number(cert["number"], known)
        if role != Role.EMPLOYER:
            cert.pop("name_matches", None)

    conflicts = []
    for conflict in data["conflicts"]:
        if conflict["field"] in _HIDDEN_CONFLICT_FIELDS:
            continue
        if conflict["field"] == "holder_name":
            for v in conflict["values"]:
                v["value"] = mask_name(v["value"])
        conflict["certificate"] = _number(conflict["certificate"], known)
        conflicts.append(conflict)
    data["conflicts"] = conflicts

    for rec in data["recognitions"]:
        rec["certificate"] = _number(rec["certificate"], known)

    data["query"]["number"] = _number(data["query"]["number"], known)
    if role == Role.EMPLOYER:
        data["name_matches"] = overall_name_match(answer)
    data["view"] = {"role": role.value, "masked": True}
    return data


# --- the serialised view, kept ------------------------------------------------------------------------------
#
# A cached lookup gets back the gateway's kept merged answer, copied with a new `answered_at` / `elapsed_ms`
# (and for a name, a new `query` with `name_check` set): every other field is the very object of the earlier
# answer. So the masked, serialised view is kept by the identity of those objects (held by the entry, so an id
# is never reused while its entry lives) with the role and the typed numbers, as the bytes before, between and
# after the two per-lookup values, which are serialised afresh and spliced in: the same bytes as
# `pydantic_core.to_json(mask_answer(...))`, without the dump, the masking and most of the serialising.

VIEW_ENTRIES = 512  # kept views (each a few kB of bytes plus references to objects a kept answer holds anyway)
_SENTINEL = "certq-splice-" + secrets.token_hex(8)
_AT_KEY, _MS_KEY = b'"answered_at":', b'"elapsed_ms":'
_AT_MARK = _AT_KEY + b'"' + _SENTINEL.encode() + b'"'
_MS_MARK = _MS_KEY + b'"' + _SENTINEL.encode() + b'"'
_QUERY_FIELDS = tuple(QueryEcho.model_fields)
_views: OrderedDict[tuple[Any, ...], tuple[tuple[Any, ...], bytes, bytes, bytes]] = OrderedDict()


def _parts(answer: Answer) -> tuple[Any, ...]:
    """What an answer's view depends on besides the role and the typed numbers and its two per-lookup values."""
    q = answer.query.__dict__
    return (
        *(q[f] for f in _QUERY_FIELDS),
        answer.verdict,
        answer.verdict_reason,
        answer.complete,
        answer.certificates,
        answer.sources,
        answer.conflicts,
        answer.recognitions,
    )


def masked_json(answer: Answer, role: Role, typed: set[str] | frozenset[str] = frozenset()) -> bytes:
    """`pydantic_core.to_json(mask_answer(answer, role, typed))`, the split form kept for answers that share
    their parts with an earlier one (the gateway's kept merged answers)."""
    if type(answer) is not Answer:  # a past answer (as_of) and anything else: no shortcut
        return pydantic_core.to_json(mask_answer(answer, role, typed))
    parts = _parts(answer)
    key = (*map(id, parts), role, frozenset(typed))
    entry = _views.get(key)
    if entry is not None and all(map(operator.is_, entry[0], parts)):  # same length: same key shape
        _views.move_to_end(key)
        _, head, middle, tail = entry
    else:
        data = mask_answer(answer, role, typed)
        data["answered_at"] = data["elapsed_ms"] = _SENTINEL
        whole = pydantic_core.to_json(data)
        head, found, rest = whole.partition(_AT_MARK)
        middle, found2, tail = rest.partition(_MS_MARK)
        if not found or not found2 or _AT_MARK in tail or _MS_MARK in tail:  # cannot happen; never guess
            return pydantic_core.to_json(mask_answer(answer, role, typed))
        _views[key] = (parts, head, middle, tail)
        if len(_views) > VIEW_ENTRIES:
            _views.popitem(last=False)
    return b"".join(
        (head, _AT_KEY, pydantic_core.to_json(answer.answered_at), middle, _MS_KEY,
         pydantic_core.to_json(answer.elapsed_ms), tail)
    )

