"""The one table of user-facing errors: the most specific registered class decides, whatever the order."""

from __future__ import annotations

from aggregator.errors import describe, register


class _Outer(Exception):
    pass


class _Inner(_Outer):
    pass


def test_the_most_specific_registered_class_wins_whatever_the_order_of_registration() -> None:
    register(_Outer, 400, 64, "outer", "外层", "outer")
    register(_Inner, 409, 65, "inner", "内层", "inner")  # registered after its base class
    assert describe(_Inner()).title == "inner"
    assert describe(_Outer()).title == "outer"


def test_an_unregistered_exception_is_a_generic_internal_error_that_leaks_nothing() -> None:
    err = describe(RuntimeError("password=hunter2"))
    assert err.status == 500 and "hunter2" not in err.text


def test_a_database_whose_connections_are_all_busy_is_a_temporary_outage_not_an_internal_error() -> None:
    import sqlalchemy as sa

    import aggregator.records.database  # noqa: F401 - registers the database's errors

    err = describe(sa.exc.TimeoutError("QueuePool limit of size 10 overflow 20 reached"))
    assert err.status == 503 and err.title == "database-busy"
