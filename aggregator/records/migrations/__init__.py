"""Alembic migrations of the certq database (records, and later keys and the audit log).

Run by `RecordStore.open` (see `store.upgrade_database`); the Alembic command line works too, pointed at
this directory, e.g. `alembic -c <ini with script_location = aggregator/records/migrations> upgrade head`,
with the database taken from CERTQ_DATABASE_URL / CERTQ_DB_PATH.
"""
