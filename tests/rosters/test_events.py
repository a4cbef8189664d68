"""What monitoring reports for one member between two checks (aggregator.rosters.events)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from aggregator.rosters.events import changes

TODAY = date(2026, 12, 2)
NOW = datetime(2026, 12, 2, 8, tzinfo=UTC)


def result(*certs, verdict="valid", complete=True, conflicts=0):
    return {"verdict": verdict, "complete": complete, "conflicts": conflicts, "certificates": list(certs)}


def card(number="T110105199003071239", status="valid", valid_until="2030-01-01", department="mem", item="低压电工作业"):
    return {"department": department, "number": number, "status": status, "valid_until": valid_until,
            "operation_item": item}


def test_the_first_check_is_a_baseline_without_events_even_for_a_card_close_to_expiry() -> None:
    state, events, since = changes(None, result(card(valid_until="2026-12-20")), today=TODAY, now=NOW)
    assert events == [] and since is None
    # ... and the thresholds already crossed then are not reported later
    _, events, _ = changes(state, result(card(valid_until="2026-12-20")), today=TODAY + timedelta(days=1), now=NOW)
    assert events == []


def test_a_status_change_is_one_event_with_old_and_new() -> None:
    state, _, _ = changes(None, result(card()), today=TODAY, now=NOW)
    _, events, _ = changes(state, result(card(status="suspended"), verdict="suspended"), today=TODAY, now=NOW)
    assert [(e.type, e.old, e.new) for e in events] == [("status_changed", "valid", "suspended")]


def test_expiry_warnings_come_once_per_threshold_as_the_date_approaches() -> None:
    state, _, _ = changes(None, result(card(valid_until="2027-06-01")), today=TODAY, now=NOW)
    seen = []
    for days_left in (95, 89, 60, 29, 28, 6, 5):
        today = date(2027, 6, 1) - timedelta(days=days_left)
        state, events, _ = changes(state, result(card(valid_until="2027-06-01")), today=today, now=NOW)
        seen += [(days_left, e.detail["threshold_days"]) for e in events]
    assert seen == [(89, 90), (29, 30), (6, 7)]


def test_a_renewed_card_is_warned_about_again_for_its_new_date() -> None:
    state, _, _ = changes(None, result(card(valid_until="2026-12-20")), today=TODAY, now=NOW)
    state, events, _ = changes(state, result(card(valid_until="2032-12-20")), today=TODAY, now=NOW)
    assert events == []
    _, events, _ = changes(state, result(card(valid_until="2032-12-20")), today=date(2032, 10, 1), now=NOW)
    assert [e.type for e in events] == ["expiry_approaching"]


def test_a_card_missing_from_an_incomplete_answer_is_not_reported_as_gone() -> None:
    state, _, _ = changes(None, result(card(), card(number="S0215", department="mohrss", item=None)), today=TODAY, now=NOW)
    state, events, _ = changes(state, result(card(), complete=False), today=TODAY, now=NOW)
    assert events == []
    _, events, _ = changes(state, result(card(), complete=True), today=TODAY, now=NOW)
    assert [(e.type, e.number) for e in events] == [("no_longer_found", "S0215")]


def test_a_new_card_and_a_conflict_are_reported() -> None:
    state, _, _ = changes(None, result(card()), today=TODAY, now=NOW)
    _, events, _ = changes(
        state, result(card(), card(number="京A012024000123", department="mohurd", item=None), conflicts=1),
        today=TODAY, now=NOW,
    )
    assert [e.type for e in events] == ["newly_found", "conflict_appeared"]


def test_an_outage_changes_nothing_and_is_reported_once_when_it_lasts() -> None:
    state, _, _ = changes(None, result(card()), today=TODAY, now=NOW)
    kept, events, since = changes(state, result(verdict="inconclusive"), today=TODAY, now=NOW)
    assert events == [] and since == NOW and kept["certificates"] == state["certificates"]
    later = NOW + timedelta(days=3, hours=1)
    kept, events, since2 = changes(kept, result(verdict="inconclusive"), today=TODAY, now=later, inconclusive_since=since)
    assert [e.type for e in events] == ["inconclusive_too_long"] and since2 == since
    _, events, _ = changes(kept, result(verdict="inconclusive"), today=TODAY, now=later + timedelta(days=1), inconclusive_since=since)
    assert events == []
    # and the answer coming back is no event at all when nothing changed
    _, events, since3 = changes(kept, result(card()), today=TODAY, now=later)
    assert events == [] and since3 is None
