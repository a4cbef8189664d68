"""The records tables as SQLAlchemy Core metadata: what queries are written against.

The database itself is created and upgraded by the Alembic migrations in `migrations/` (0001 creates
exactly these tables); `tests/records/test_store.py` checks that the two agree.

`records.is_current` marks the one row per certificate that lookups see: the row from the newest quarter
of its department. The lookup indexes are partial (`WHERE is_current`), so history rows cost no index
space; their predicates are written in each dialect's own spelling, which is exactly how SQLAlchemy renders
`records.c.is_current` in a WHERE clause (SQLite only uses a partial index when the query repeats its
predicate term for term).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

BATCH_STATUSES = ("importing", "imported", "partial", "rejected")
CURRENT_SQLITE = sa.text("is_current = 1")
CURRENT_POSTGRESQL = sa.text("is_current")

# SQLite needs a plain INTEGER primary key to alias the rowid; PostgreSQL gets a bigint identity.
_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

batches = sa.Table(
    "batches",
    metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    sa.Column("department", sa.String(16), nullable=False),
    sa.Column("quarter", sa.String(6), nullable=False),
    sa.Column("file_name", sa.Text(), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("uploaded_by", sa.Text(), nullable=False),
    sa.Column("rows_total", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("rows_imported", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("rows_rejected", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("report", sa.JSON(), nullable=True),
    # The same file uploaded for a newer quarter inserts no rows: its batch points at the batch whose rows it
    # re-affirms for that quarter (migration 0007; see `ingest._reaffirm`). NULL for a batch with rows of its own.
    sa.Column("reaffirms", _Id, nullable=True),
    sa.CheckConstraint(
        "status IN ('importing', 'imported', 'partial', 'rejected')", name="ck_batches_status"
    ),
    sa.Index(
        "uq_batches_department_quarter_sha256",  # one file once per quarter (0007; before: once per department)
        "department",
        "quarter",
        "sha256",
        unique=True,
        sqlite_where=sa.text("status <> 'rejected'"),
        postgresql_where=sa.text("status <> 'rejected'"),
    ),
    sa.Index("ix_batches_department_quarter", "department", "quarter", "id"),
    sqlite_autoincrement=True,
)

records = sa.Table(
    "records",
    metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    sa.Column("batch_id", _Id, sa.ForeignKey("batches.id", ondelete="CASCADE"), nullable=False),
    sa.Column("department", sa.String(16), nullable=False),
    sa.Column("number", sa.String(64), nullable=False),
    sa.Column("holder_id_number", sa.String(18), nullable=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("issuer", sa.Text(), nullable=True),
    sa.Column("holder_name", sa.Text(), nullable=True),
    sa.Column("gender", sa.String(2), nullable=True),
    sa.Column("category", sa.Text(), nullable=True),
    sa.Column("operation_item", sa.Text(), nullable=True),
    sa.Column("items", sa.Text(), nullable=True),  # SAMR 持证项目 codes as a JSON array
    sa.Column("level", sa.Text(), nullable=True),
    sa.Column("issued_on", sa.Date(), nullable=True),
    sa.Column("valid_from", sa.Date(), nullable=True),
    sa.Column("valid_until", sa.Date(), nullable=True),
    sa.Column("next_review_on", sa.Date(), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("status_text", sa.Text(), nullable=True),
    sa.Column("row_number", sa.Integer(), nullable=False),
    sa.Column("is_current", sa.Boolean(), nullable=False, server_default=sa.false()),
    # Campaigns (issue 14, migration 0010): the record's place in a sampling frame, `records.frame_key`; 0 only
    # for a row inserted without it (it would still be drawn fairly, ordered by its text keys among the zeros)
    sa.Column("frame_key", sa.BigInteger(), nullable=False, server_default="0"),
)

# What each live source last said about a query, one row per change (migration 0003; see `records.live`).
live_answers = sa.Table(
    "live_answers",
    metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("query_digest", sa.String(64), nullable=False),  # sha256 of the query (it may hold a name)
    sa.Column("number", sa.String(64), nullable=False),  # the normalised number asked about
    sa.Column("outcome", sa.String(16), nullable=False),  # found | not_found
    sa.Column("content_digest", sa.String(64), nullable=False),  # what the answer said, to tell a change
    sa.Column("result", sa.Text(), nullable=False),  # the SourceResult as JSON
    sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),  # first fetched with this content
    sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),  # last confirmed
    sa.Index("ix_live_answers_source_query", "source", "query_digest", "id"),
    sa.Index("ix_live_answers_number", "number", "first_seen"),
    sqlite_autoincrement=True,
)

# --- Signed receipts (issue 12, migration 0005; see aggregator/receipts/) ----------------------------------
# Every public key that ever signed a receipt (the private keys live outside the database): /.well-known/jwks.json.
signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("kid", sa.String(64), primary_key=True),  # RFC 7638 thumbprint
    sa.Column("public_jwk", sa.Text(), nullable=False),  # JSON
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),  # first published
    sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),  # when a newer key took over signing
)

# The receipts issued: the signed document itself (a compact JWS) and what the verify page needs to find it and
# to say whether it has been superseded since.
receipts = sa.Table(
    "receipts",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),  # unguessable (token_urlsafe)
    sa.Column("token", sa.Text(), nullable=False),  # the compact JWS (vc+jwt)
    sa.Column("kid", sa.String(64), nullable=False),
    sa.Column("number", sa.String(64), nullable=False),  # the normalised number asked about
    sa.Column("verdict", sa.String(32), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),  # whose view it holds
    sa.Column("key_id", sa.String(32), nullable=True),  # the API key that asked for it (None: the public)
    sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("valid_until", sa.DateTime(timezone=True), nullable=False),
    sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("superseded_by", sa.String(200), nullable=True),  # what a later lookup found: "suspended|<cert key>"
    sa.Index("ix_receipts_number", "number", "issued_at"),
)

# The certificates each receipt shows, with the status it showed: a later lookup that finds one of them suspended
# or revoked supersedes the receipts that showed it otherwise (one indexed UPDATE, see ReceiptStore.supersede).
receipt_certificates = sa.Table(
    "receipt_certificates",
    metadata,
    sa.Column("receipt_id", sa.String(32), sa.ForeignKey("receipts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("number", sa.String(64), nullable=False),
    sa.Column("cert_key", sa.String(300), nullable=False),  # Certificate.key(): department|number|item
    sa.Column("status", sa.String(16), nullable=False),  # effective status shown in the receipt
    sa.PrimaryKeyConstraint("receipt_id", "cert_key", name="pk_receipt_certificates"),
    sa.Index("ix_receipt_certificates_number", "number", "receipt_id"),
)

#: The lookup indexes, created by migration 0001 (and rebuilt after a bulk load into an empty table).
LOOKUP_INDEXES = (
    sa.Index(
        "ix_records_current_number",
        records.c.department,
        records.c.number,
        sqlite_where=CURRENT_SQLITE,
        postgresql_where=CURRENT_POSTGRESQL,
    ),
    sa.Index(
        "ix_records_current_holder",
        records.c.department,
        records.c.holder_id_number,
        sqlite_where=CURRENT_SQLITE,
        postgresql_where=CURRENT_POSTGRESQL,
    ),
)

# --- Jobs and employers' rosters (issue 11, migration 0004; see aggregator/jobs and aggregator/rosters) -------

JOB_STATUSES = ("queued", "running", "finished", "failed", "cancelled")

# One row per long-running job (a roster run, a monitoring batch, a campaign): its state lives here, so a job
# survives the engine that runs it (Procrastinate on PostgreSQL, in-process on the embedded default). A worker
# holds a job by its lease; a lease that runs out (the worker died) lets another worker take the job over.
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),  # random hex, unguessable
    sa.Column("kind", sa.String(32), nullable=False),  # roster_verify | campaign_run | ...
    sa.Column("organisation", sa.String(200), nullable=False),  # the owning key's label
    sa.Column("created_by", sa.String(32), nullable=False),  # key id
    sa.Column("subject", sa.String(64), nullable=True),  # the roster / campaign it works on
    sa.Column("params", sa.JSON(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("total", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("done", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("counts", sa.JSON(), nullable=True),  # outcome -> count, when finished
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.CheckConstraint(
        "status IN ('queued', 'running', 'finished', 'failed', 'cancelled')", name="ck_jobs_status"
    ),
    sa.Index("ix_jobs_subject", "subject", "created_at"),
    sa.Index("ix_jobs_status_lease", "status", "lease_until"),
)

rosters = sa.Table(
    "rosters",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("organisation", sa.String(200), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_by", sa.String(32), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("monitor", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("monitor_every_h", sa.Integer(), nullable=False, server_default="24"),
    sa.Column("expiry_warn_days", sa.JSON(), nullable=False),  # e.g. [90, 30, 7]
    sa.Column("inconclusive_after_days", sa.Integer(), nullable=False, server_default="3"),
    sa.Index("ix_rosters_organisation", "organisation", "created_at"),
)

roster_members = sa.Table(
    "roster_members",
    metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    sa.Column("roster_id", sa.String(32), sa.ForeignKey("rosters.id", ondelete="CASCADE"), nullable=False),
    sa.Column("ref", sa.String(64), nullable=False),  # the employer's own reference (工号), or the line
    sa.Column("number", sa.String(64), nullable=False),  # normalised
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("id_number", sa.String(18), nullable=True),
    sa.Column("team", sa.String(200), nullable=True),  # 部门/班组
    sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
    # monitoring: when this member is due next, and what the last check said (the baseline events compare with)
    sa.Column("due_at", sa.BigInteger(), nullable=True),  # epoch seconds of the next check; None: not monitored
    sa.Column("state", sa.JSON(), nullable=True),
    sa.Column("inconclusive_since", sa.DateTime(timezone=True), nullable=True),
    sa.Index("uq_roster_members_ref", "roster_id", "ref", unique=True),
    sa.Index("ix_roster_members_due", "due_at"),
    sqlite_autoincrement=True,
)

# One result per member per run: the unique key is what makes a run taken over after a crash count each member
# exactly once.
roster_results = sa.Table(
    "roster_results",
    metadata,
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("member_id", _Id, primary_key=True),
    sa.Column("verdict", sa.String(32), nullable=True),
    sa.Column("outcome", sa.String(16), nullable=False),  # definitive | inconclusive | error
    sa.Column("result", sa.JSON(), nullable=False),  # the row as exported (certificates, name match, reason)
    sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
)

EVENT_TYPES = (
    "status_changed",
    "expiry_approaching",
    "no_longer_found",
    "newly_found",
    "conflict_appeared",
    "inconclusive_too_long",
    "webhook_disabled",
)

# What monitoring saw change, one row per event, never rewritten; `id` is the cursor.
roster_events = sa.Table(
    "roster_events",
    metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    sa.Column("roster_id", sa.String(32), nullable=True),  # None for an organisation's own events (webhooks)
    sa.Column("organisation", sa.String(200), nullable=False),
    sa.Column("member_ref", sa.String(64), nullable=True),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("number", sa.String(64), nullable=True),
    sa.Column("department", sa.String(16), nullable=True),
    sa.Column("old", sa.String(32), nullable=True),
    sa.Column("new", sa.String(32), nullable=True),
    sa.Column("detail", sa.JSON(), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_roster_events_roster", "roster_id", "id"),
    sa.Index("ix_roster_events_organisation", "organisation", "id"),
    sqlite_autoincrement=True,
)


# --- Webhooks (issue 11, migration 0008; see aggregator/rosters/webhooks.py) -------------------------------------

WEBHOOK_DELIVERY_STATUSES = ("pending", "sending", "delivered", "failed")

# An organisation's endpoints: where its events are sent, which types, signed with which secret (Standard
# Webhooks "whsec_..."; the previous one still signs alongside until `previous_until` after a rotation).
# `cursor` is the last roster_events.id turned into deliveries for this endpoint.
webhook_endpoints = sa.Table(
    "webhook_endpoints",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),  # random hex, unguessable
    sa.Column("organisation", sa.String(200), nullable=False),
    sa.Column("url", sa.Text(), nullable=False),
    sa.Column("description", sa.String(200), nullable=True),
    sa.Column("event_types", sa.JSON(), nullable=False),  # [] = every type
    sa.Column("secret", sa.Text(), nullable=False),
    sa.Column("previous_secret", sa.Text(), nullable=True),
    sa.Column("previous_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    sa.Column("disabled_reason", sa.Text(), nullable=True),
    sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("cursor", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("created_by", sa.String(32), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_webhook_endpoints_organisation", "organisation", "created_at"),
)

# One message to one endpoint: `msg_id` is its `webhook-id` (the same on every retry and replay), `payload` the
# exact body signed and sent. A worker claims a due delivery by moving it to "sending" with a lease.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    sa.Column("msg_id", sa.String(40), nullable=False),
    sa.Column("endpoint_id", sa.String(32), sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False),
    sa.Column("event_id", sa.BigInteger(), nullable=True),
    sa.Column("event_type", sa.String(32), nullable=False),
    sa.Column("payload", sa.Text(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_status_code", sa.Integer(), nullable=True),
    sa.Column("last_latency_ms", sa.Integer(), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("replay_of", sa.BigInteger(), nullable=True),
    sa.CheckConstraint(
        "status IN ('pending', 'sending', 'delivered', 'failed')", name="ck_webhook_deliveries_status"
    ),
    sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    sa.Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
    sqlite_autoincrement=True,
)

# Every attempt of a delivery: when, what came back (status code or error), how long it took.
webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    sa.Column("delivery_id", _Id, sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("status_code", sa.Integer(), nullable=True),
    sa.Column("latency_ms", sa.Integer(), nullable=True),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_webhook_attempts_delivery", "delivery_id", "id"),
    sqlite_autoincrement=True,
)


# --- The audit log (issue 14; created by migrations 0002, 0003 and 0007; see `aggregator.audit`) ----------------
# Who looked up which number, in what role, why, and what the answer was; and the other audited actions
# (uploads, keys, webhooks, campaign runs). `seq`/`prev_hash`/`hash` chain each entry to the one before it;
# rows from before migration 0007 have none (see aggregator/audit/chain.py).
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", _Id, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("key_id", sa.String(32), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("purpose", sa.String(500), nullable=True),
    sa.Column("action", sa.String(32), nullable=False),  # lookup | verification | upload | key_create ...
    sa.Column("number", sa.String(64), nullable=False),  # the number as normalised ("" for an action)
    sa.Column("name_given", sa.Boolean(), nullable=False),
    sa.Column("id_number_given", sa.Boolean(), nullable=False),
    sa.Column("verdict", sa.String(32), nullable=True),  # None when the lookup failed before a verdict
    sa.Column("client_ip", sa.String(64), nullable=True),
    sa.Column("name_check", sa.String(16), nullable=True),  # what happened to the name given (migration 0003)
    sa.Column("holder_id_number", sa.String(18), nullable=True),  # whom the lookup was about (0007)
    sa.Column("job_id", sa.Text(), nullable=True),  # the job that made the lookup (0007)
    sa.Column("detail", sa.Text(), nullable=True),  # what an action did, JSON (0007)
    sa.Column("seq", sa.BigInteger(), nullable=True),  # position in the chain, 1, 2, ... (0007)
    sa.Column("prev_hash", sa.String(64), nullable=True),  # the hash of entry seq - 1 (0007)
    sa.Column("hash", sa.String(64), nullable=True),  # sha256(prev_hash, this entry) (0007)
    sa.Index("ix_audit_log_at", "at"),
    sa.Index("ix_audit_log_key_id_at", "key_id", "at"),
    sa.Index("uq_audit_log_seq", "seq", unique=True),  # two writers can never take the same place
    sa.Index("ix_audit_log_number_id", "number", "id"),
    sa.Index("ix_audit_log_holder_id", "holder_id_number", "id"),
    sa.Index("ix_audit_log_job_id", "job_id", "id"),
    sa.Index("ix_audit_log_action_id", "action", "id"),
)


# --- Sources' health history (issue 14, migration 0007; see aggregator/records/source_health.py) -------------

#: Upper bounds (ms) of the latency histogram's buckets; the last column counts everything slower.
HEALTH_LATENCY_BOUNDS_MS = (25, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 8000, 13000)
HEALTH_LATENCY_COLUMNS = tuple(f"lat_{i:02d}" for i in range(len(HEALTH_LATENCY_BOUNDS_MS) + 1))
#: Counted per bucket: the outcomes a call can have (unavailable ones by their error kind).
HEALTH_OUTCOME_COLUMNS = (
    "found",
    "not_found",
    "timeout",
    "blocked",
    "captcha",
    "rate_limited",
    "upstream_error",
    "parse_error",
    "circuit_open",
)
#: Every summed column of a bucket, in the table's order.
HEALTH_SUM_COLUMNS = ("calls", *HEALTH_OUTCOME_COLUMNS, "openings", "timed", "latency_ms_sum", *HEALTH_LATENCY_COLUMNS)

# One row per source per 5-minute bucket: every instance adds its counts to the same row (an upsert that sums),
# so the history is the whole deployment's. Latency percentiles come from the fixed histogram, which sums too.
source_health = sa.Table(
    "source_health",
    metadata,
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("bucket", sa.BigInteger(), nullable=False),  # start of the 5 minutes, Unix seconds (UTC)
    sa.Column("calls", sa.Integer(), nullable=False, server_default="0"),
    *(sa.Column(name, sa.Integer(), nullable=False, server_default="0") for name in HEALTH_OUTCOME_COLUMNS),
    sa.Column("openings", sa.Integer(), nullable=False, server_default="0"),  # times the circuit opened
    sa.Column("timed", sa.Integer(), nullable=False, server_default="0"),  # calls with a latency (not circuit_open)
    sa.Column("latency_ms_sum", sa.Float(), nullable=False, server_default="0"),
    *(sa.Column(name, sa.Integer(), nullable=False, server_default="0") for name in HEALTH_LATENCY_COLUMNS),
    sa.PrimaryKeyConstraint("source", "bucket", name="pk_source_health"),
)

# The same counts rolled up per source per day (China time; `day` is that midnight in Unix seconds), written by the
# same flush: the 30- and 90-day bars read 90 rows a source instead of 25,920 buckets.
source_health_daily = sa.Table(
    "source_health_daily",
    metadata,
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("day", sa.BigInteger(), nullable=False),
    sa.Column("calls", sa.Integer(), nullable=False, server_default="0"),
    *(sa.Column(name, sa.Integer(), nullable=False, server_default="0") for name in HEALTH_OUTCOME_COLUMNS),
    sa.Column("openings", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("timed", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("latency_ms_sum", sa.Float(), nullable=False, server_default="0"),
    *(sa.Column(name, sa.Integer(), nullable=False, server_default="0") for name in HEALTH_LATENCY_COLUMNS),
    sa.PrimaryKeyConstraint("source", "day", name="pk_source_health_daily"),
)

# --- Validity on a past date and the holder's view (issue 12, migration 0006; see aggregator/web/holders/) ---

# Attempts to open the holder's view, per scope ("ip:<address>", "cert:<number>") and fixed window: the limits
# hold across every instance on the database (Redis, when configured, keeps them instead).
holder_attempts = sa.Table(
    "holder_attempts",
    metadata,
    sa.Column("scope", sa.String(120), primary_key=True),
    sa.Column("window", sa.String(20), primary_key=True),  # the window's start, UTC, as text
    sa.Column("count", sa.Integer(), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_holder_attempts_expires_at", "expires_at"),
)

# A scope that went over its limit is locked out until `until`, whatever it sends meanwhile.
holder_lockouts = sa.Table(
    "holder_lockouts",
    metadata,
    sa.Column("scope", sa.String(120), primary_key=True),
    sa.Column("until", sa.DateTime(timezone=True), nullable=False),
)

# Anonymous public lookups per number and UTC day: what a holder sees of the public (counts, never who).
public_lookup_days = sa.Table(
    "public_lookup_days",
    metadata,
    sa.Column("number", sa.String(64), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),  # YYYY-MM-DD, UTC
    sa.Column("count", sa.Integer(), nullable=False),
)


# --- Regulators' spot-check campaigns (issue 14, migration 0009; see aggregator/campaigns) ---------------------
# A campaign: the population's filters, the sampling design and seed, and what the draw found (the population
# count, each stratum's size and sample, a digest of the ordered sampling frame). Drawn once, at creation.
campaigns = sa.Table(
    "campaigns",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),  # random hex
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("organisation", sa.String(200), nullable=False),  # the creating key's label
    sa.Column("created_by", sa.String(32), nullable=False),  # key id ("cli" from the shell)
    sa.Column("created_role", sa.String(16), nullable=False),  # regulator | admin
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("filters", sa.JSON(), nullable=False),  # campaigns.filters.Population
    sa.Column("design", sa.JSON(), nullable=False),  # campaigns.filters.Design (method, n, strata, allocation)
    sa.Column("seed", sa.BigInteger(), nullable=False),
    sa.Column("population", sa.Integer(), nullable=False),
    sa.Column("strata", sa.JSON(), nullable=False),  # [{"stratum", "population", "sample"}], in frame order
    sa.Column("frame_digest", sa.String(64), nullable=False),  # sha256 of the ordered frame's keys
    sa.Column("job_id", sa.String(32), nullable=True),  # the latest run
    sa.Index("ix_campaigns_created_at", "created_at"),
)

# The sample, one row per sampled certificate (its upload as drawn), and its check's result once made: the key
# (campaign_id, seq) is what makes a run taken over after a crash check each item exactly once.
campaign_items = sa.Table(
    "campaign_items",
    metadata,
    sa.Column("campaign_id", sa.String(32), sa.ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False),
    sa.Column("seq", sa.Integer(), nullable=False),  # position in the sample, 0, 1, ...
    sa.Column("stratum", sa.String(200), nullable=False),
    sa.Column("record_id", _Id, nullable=False),
    sa.Column("department", sa.String(16), nullable=False),
    sa.Column("number", sa.String(64), nullable=False),
    sa.Column("holder_id_number", sa.String(18), nullable=True),
    sa.Column("upload", sa.JSON(), nullable=False),  # the certificate as uploaded (models.Certificate) + quarter
    sa.Column("outcome", sa.String(16), nullable=True),  # None: not checked yet | agrees | discrepant | inconclusive
    sa.Column("result", sa.JSON(), nullable=True),  # discrepancies with evidence, the sources asked
    sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint("campaign_id", "seq", name="pk_campaign_items"),
)
