"""The kept serialised view (`masking.masked_json`): byte for byte what serialising `mask_answer` gives, for
every role, for a repeated answer (the gateway's kept answer with a new time) and after any part changed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pydantic_core
import pytest

from aggregator.models import NameCheck
from aggregator.web.masking import mask_answer, masked_json
from aggregator.web.namebudget import checked, not_checked
from aggregator.web.roles import Role
from tests.web.test_masking import ID, MEM_NUMBER, MOHURD_NUMBER, mem_answer, mohurd_answer_with_conflicts

ALL_ROLES = tuple(Role)


def slow(answer, role, typed=frozenset()) -> bytes:
    return pydantic_core.to_json(mask_answer(answer, role, typed))


def again(answer, ms: float):
    """What the gateway hands a repeated lookup: the same answer's parts, a new time and duration."""
    return answer.model_copy(
        update={"answered_at": answer.answered_at + timedelta(seconds=ms, microseconds=37), "elapsed_ms": ms}
    )


@pytest.mark.parametrize("role", ALL_ROLES)
def test_a_repeated_answer_is_serialised_as_masking_it_afresh_would_be(role: Role) -> None:
    for base, typed in ((mem_answer(), {MEM_NUMBER}), (mohurd_answer_with_conflicts(), {MOHURD_NUMBER})):
        for ms in (0.0, 0.1, 3.25, 1234.5):
            a = again(base, ms)
            assert masked_json(a, role, typed) == slow(a, role, typed)
            assert masked_json(a, role, typed) == slow(a, role, typed)  # the kept form, once kept


def test_the_typed_numbers_and_the_role_are_part_of_what_is_kept() -> None:
    base = mem_answer()
    for typed in ({MEM_NUMBER}, {ID}, set(), {MEM_NUMBER, ID}):
        for role in ALL_ROLES:
            a = again(base, 2.0)
            assert masked_json(a, role, typed) == slow(a, role, typed)


def test_a_name_check_and_a_refused_name_show_as_masking_shows_them() -> None:
    base = mem_answer(name="张小三")
    for role in (Role.EMPLOYER, Role.PUBLIC, Role.REGULATOR):
        yes = checked(again(base, 1.0))
        assert yes.query.name_check == NameCheck.CHECKED
        assert masked_json(yes, role, {MEM_NUMBER}) == slow(yes, role, {MEM_NUMBER})
        no = not_checked(again(base, 1.5), "budget spent")
        assert masked_json(no, role, {MEM_NUMBER}) == slow(no, role, {MEM_NUMBER})
        assert masked_json(checked(again(base, 2.0)), role, {MEM_NUMBER}) == slow(
            checked(again(base, 2.0)), role, {MEM_NUMBER}
        )


def test_a_changed_part_is_never_answered_from_the_kept_view() -> None:
    base = mem_answer()
    first = masked_json(again(base, 1.0), Role.PUBLIC, {MEM_NUMBER})
    changed = base.model_copy(update={"verdict_reason": "另一个理由 / another reason"})
    assert masked_json(changed, Role.PUBLIC, {MEM_NUMBER}) == slow(changed, Role.PUBLIC, {MEM_NUMBER})
    assert masked_json(changed, Role.PUBLIC, {MEM_NUMBER}) != first
    fewer = base.model_copy(update={"certificates": base.certificates[:1]})
    assert masked_json(fewer, Role.PUBLIC, {MEM_NUMBER}) == slow(fewer, Role.PUBLIC, {MEM_NUMBER})


def test_the_time_of_each_lookup_is_its_own() -> None:
    base = mem_answer()
    one = again(base, 1.0)
    two = base.model_copy(update={"answered_at": datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC), "elapsed_ms": 9.5})
    assert b'"answered_at":"2030-01-02T03:04:05Z"' in masked_json(two, Role.PUBLIC, {MEM_NUMBER})
    assert b'"elapsed_ms":9.5' in masked_json(two, Role.PUBLIC, {MEM_NUMBER})
    assert masked_json(one, Role.PUBLIC, {MEM_NUMBER}) == slow(one, Role.PUBLIC, {MEM_NUMBER})
