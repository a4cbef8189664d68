"""The roster store on SQLite and PostgreSQL: a roster and its members in one go, listing per organisation,
members edited by reference, a run's results joined with the members, events by cursor."""

from __future__ import annotations

from aggregator.rosters.parse import MemberIn
from aggregator.rosters.store import MemberExists, RosterStore
from tests.rosters.support import MOHURD, add_event, finished_run, members, two_cert_result

ORG = "某建设集团"


async def test_create_list_get_with_organisation_scoping(store) -> None:
    rosters = RosterStore(store.engine)
    made = await rosters.create(organisation=ORG, name="二标段", created_by="k1", members=members())
    other = await rosters.create(organisation="另一家公司", name="x", created_by="k2", members=members()[:1])
    assert made.members == 3 and made.name == "二标段" and made.expiry_warn_days == [90, 30, 7]
    assert [r.id for r in await rosters.list(ORG)] == [made.id]
    assert (await rosters.get(made.id, organisation=ORG)).members == 3
    assert await rosters.get(made.id, organisation="另一家公司") is None  # another organisation's: not found
    assert await rosters.get(other.id, organisation=ORG) is None


async def test_many_members_in_one_transaction(store) -> None:
    rosters = RosterStore(store.engine)
    many = [MemberIn(i + 2, f"E{i}", MOHURD, f"人{i}") for i in range(4500)]
    made = await rosters.create(organisation=ORG, name="big", created_by="k1", members=many)
    assert made.members == 4500
    page = await rosters.members(made.id, page=5, per_page=5000)  # at most 1,000 a page
    assert (page.total, page.pages, len(page.items), page.items[0].ref) == (4500, 5, 500, "E4000")


async def test_members_added_updated_removed_by_reference(store) -> None:
    rosters = RosterStore(store.engine)
    made = await rosters.create(organisation=ORG, name="r", created_by="k1", members=members())
    added = await rosters.add_member(made.id, MemberIn(1, "E100", MOHURD, "赵六", None, "木工班"))
    assert (added.ref, added.team) == ("E100", "木工班")
    try:
        await rosters.add_member(made.id, MemberIn(1, "E100", MOHURD, "钱七"))
        raise AssertionError("a taken reference must be refused")
    except MemberExists as e:
        assert e.ref == "E100"
    updated = await rosters.update_member(made.id, "E100", MemberIn(1, "E100", MOHURD, "赵六", None, "瓦工班"))
    assert updated is not None and updated.team == "瓦工班"
    assert await rosters.update_member(made.id, "nobody", MemberIn(1, "x", MOHURD, "x")) is None
    assert await rosters.remove_member(made.id, "E100") is True
    assert await rosters.remove_member(made.id, "E100") is False
    assert (await rosters.get(made.id)).members == 3


async def test_results_are_joined_with_members_and_paged(store) -> None:
    rosters = RosterStore(store.engine)
    made = await rosters.create(organisation=ORG, name="r", created_by="k1", members=members())
    job_id = await finished_run(store.engine, made.id, ORG, {"E001": two_cert_result(), "E002": {"verdict": "not_found"}})
    assert await rosters.latest_run(made.id) == job_id
    page = await rosters.results(job_id, page=1, per_page=1)
    assert page.total == 2 and page.items[0].member.ref == "E001" and page.items[0].verdict == "valid"
    assert len(page.items[0].result["certificates"]) == 2
    assert (await rosters.results(job_id, page=2, per_page=1)).items[0].member.name == "李四"


async def test_events_by_cursor_type_and_member(store) -> None:
    rosters = RosterStore(store.engine)
    made = await rosters.create(organisation=ORG, name="r", created_by="k1", members=members())
    for i in range(5):
        await add_event(store.engine, made.id, ORG, "E001" if i % 2 == 0 else "E002",
                        "status_changed" if i < 3 else "expiry_approaching", old="valid", new="revoked")
    first, cursor = await rosters.events(made.id, limit=2)
    assert len(first) == 2 and cursor == first[-1].id
    rest, end = await rosters.events(made.id, after=cursor, limit=10)
    assert len(rest) == 3 and end is None
    assert all(e.id > cursor for e in rest)
    only, _ = await rosters.events(made.id, type="expiry_approaching")
    assert [e.type for e in only] == ["expiry_approaching"] * 2
    mine, _ = await rosters.events(made.id, member="E002")
    assert {e.member_ref for e in mine} == {"E002"} and len(mine) == 2
