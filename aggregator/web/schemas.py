"""The shapes of the API's bodies: what each endpoint answers and what it reads, as pydantic models.

    @endpoint("GET", "/api/v1/sources", reply=Reply.json(Sources, "Sources"), ...)   # see endpoint.py

They are declarations for the API description (`openapi.py` builds `/openapi.json` from them) and the types
the service layer returns where that costs nothing on a busy path. Every response model forbids unknown
properties, and so does every model it is built from (`openapi.ClosedModels`), so that an answer which grows
a member the description does not know fails the schema test (tests/web/test_schema.py) instead of drifting.

Lookup answers are produced as plain dicts (`masking.mask_answer`, the busiest path) and are not validated at
request time: `LookupView` describes all of them, for every role. Fields that a role does not get are simply
absent, so they are optional here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema
from pydantic.json_schema import SkipJsonSchema

from aggregator.asof import AsOf
from aggregator.models import Answer, CertKind, Department, Mode, NameCheck, Verdict
from aggregator.records.freshness import UploadFreshness
from aggregator.records.report import BatchSummary
from aggregator.records.source_health import HealthWindow, Incident
from aggregator.resilience import CircuitState
from aggregator.web.problems import ReadinessChecks
from aggregator.web.roles import Role

# A moment as `datetime.isoformat()` writes it (+00:00, not Z): what these endpoints have always answered.
IsoTime = Annotated[
    datetime,
    PlainSerializer(lambda d: d.isoformat(), return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
_CLOSED = ConfigDict(extra="forbid")


def _optional(description: str, **constraints: Any) -> Any:
    """A form field that may be left out (absent, never null: a form has no null)."""

    def no_default(schema: dict[str, Any]) -> None:
        schema.pop("default", None)

    return Field(None, description=description, json_schema_extra=no_default, **constraints)


# --- lookups ------------------------------------------------------------------------------------------------


class ViewInfo(BaseModel):
    """Whose view of the answer this is, and whether personal data was withheld."""

    model_config = _CLOSED

    role: Role
    masked: bool


class LookupView(Answer):
    """The merged answer as the caller's role may see it.

    The public, employers and departments get masked names (张*三), no ID number (`holder_id_number`) and no
    gender, and a certificate number that is an ID number masked unless the caller typed it; employers also
    get `name_matches` (per certificate and for the whole answer); regulators and admins get the full answer.
    `view` says which it is."""

    model_config = _CLOSED

    view: ViewInfo
    name_matches: bool | None = Field(
        None,
        description="Employers only: whether the name (or ID number) given matches the holder; null when there "
        "was nothing to compare",
    )
    as_of: AsOf | None = Field(None, description="Only with ?as_of=: the date and what each part rests on")


# --- batch verification -----------------------------------------------------------------------------------


class RowError(BaseModel):
    """Why one pair could not be answered (the members of a problem document)."""

    model_config = _CLOSED

    status: int
    title: str
    detail: str
    detail_zh: str
    detail_en: str


class VerificationRow(BaseModel):
    """The answer for one pair."""

    model_config = _CLOSED

    row: int = Field(description="1-based position (CSV: the line in the file)")
    number: str = Field(description="The number, normalised when it could be")
    name_given: bool
    verdict: Verdict | None = Field(description="null when the pair could not be looked up (see error)")
    name_matches: bool | None
    name_check: NameCheck | None = Field(
        description="checked, or not_checked (the daily budget of names tried against this certificate is spent: "
        "looked up without the name); null without a name"
    )
    answer: LookupView | None
    error: RowError | None


class VerificationResult(BaseModel):
    """One result per pair, in the order given, and how many of each verdict."""

    model_config = _CLOSED

    count: int
    summary: dict[str, int] = Field(description="verdict (or error) -> how many rows")
    results: list[VerificationRow]


class VerificationForm(BaseModel):
    """A batch as a CSV file in a form (columns number,name[,id_number])."""

    model_config = ConfigDict(extra="ignore")

    file: bytes = Field(description="CSV: number,name[,id_number], or with a header row")
    purpose: str | SkipJsonSchema[None] = _optional("Why (required for regulators)", max_length=500)


# --- uploads ------------------------------------------------------------------------------------------------


class UploadForm(BaseModel):
    """A department's quarterly records file."""

    model_config = ConfigDict(extra="ignore")

    file: bytes = Field(description="CSV, XLSX or XLS")
    quarter: str = Field(pattern=r"^[0-9]{4}Q[1-4]$", examples=["2026Q1"])
    department: Department | SkipJsonSchema[None] = _optional("Admins name it; a department key uploads its own")
    partial: Literal["true", "false"] | SkipJsonSchema[None] = _optional(
        "true: import the valid rows and keep the rejected ones"
    )


class Uploads(BaseModel):
    """Recent uploads, newest first, and per department the current batch."""

    model_config = _CLOSED

    batches: list[BatchSummary]
    current: dict[Department, BatchSummary]


# --- sources ------------------------------------------------------------------------------------------------


class Circuit(BaseModel):
    """A live source's circuit breaker."""

    model_config = _CLOSED

    state: CircuitState
    consecutive_failures: int
    backoff_s: float = Field(description="Length of the current or last open period; 0 when closed")


class SourceError(BaseModel):
    """The last failure of a source."""

    model_config = _CLOSED

    kind: str = Field(description="The error kind (timeout, blocked, captcha ...)")
    message: str | None
    at: IsoTime


class RecordsState(BaseModel):
    """For uploaded records: the newest quarter and when it came."""

    model_config = _CLOSED

    quarter: str | None
    uploaded_at: IsoTime | None
    rows_imported: int
    batch_id: int | None
    error: str | None = Field(description="Why the store could not say (null when it could)")


class SourceHealth(BaseModel):
    """One configured source: how it is asked and how it has been doing."""

    model_config = _CLOSED

    id: str
    name: str
    department: Department
    mode: Mode
    enabled: bool
    kinds: list[CertKind]
    circuit: Circuit | None = Field(description="Live sources (api, html) only")
    records: RecordsState | None = Field(description="Uploaded records only")
    calls: int = Field(description="Recent calls counted below")
    success_rate: float | None
    p50_ms: float | None
    p95_ms: float | None
    outcomes: dict[str, int] = Field(description="outcome or error kind -> recent calls")
    last_error: SourceError | None


class Sources(BaseModel):
    """Every configured source's health."""

    model_config = _CLOSED

    sources: list[SourceHealth]


# --- the sources' health history (issue 14; records/source_health.py, records/freshness.py) -------------------

SourceState = Literal["up", "degraded", "down", "idle", "off", "manual"]


class SourceHistoryView(BaseModel):
    """One source on the status page: its state now, availability per bar over 24 h (hourly), 30 d and 90 d
    (daily, China time), incidents of the last 90 days (newest first), and for uploaded records the
    department's upload freshness."""

    model_config = _CLOSED

    id: str
    name: str
    department: Department
    mode: Mode
    state: SourceState = Field(
        description="up; degraded (under 95 % answered in the last 15 minutes); down (under the down threshold, or "
        "the circuit open); idle (no calls in 15 minutes); off (disabled or not configured); manual (a link-out)"
    )
    circuit: Circuit | None = Field(description="Live sources (api, html) only")
    last_call_at: datetime | None = Field(description="End of the newest 5-minute bucket with calls (15 minutes)")
    windows: list[HealthWindow]
    incidents: list[Incident]
    incident_min_minutes: int = Field(description="An incident is down for at least this long (health.toml)")
    upload: UploadFreshness | None = Field(description="Uploaded records only")



# --- audit, whoami, probes ----------------------------------------------------------------------------------


AuditAction = Literal["lookup", "verification", "upload", "key_create", "key_revoke", "webhook_change", "campaign_run"]


class AuditRecord(BaseModel):
    """One audited lookup or action. The name given is never logged, only whether one was given and what became
    of it."""

    model_config = _CLOSED

    kind: Literal["entry"] = "entry"
    id: int | None
    at: IsoTime
    key_id: str = Field(description='The key, "-" for a public lookup whose name was not checked, "cli" for certq')
    organisation: str = Field("", description="Whose key: its label (never its hex id)")
    role: Role
    role_text: str = Field("", description="The role in words, Chinese first")
    action: AuditAction
    action_text: str = Field("", description="The action in words, Chinese first")
    number: str = Field(description='The number looked up ("" for an action about no number)')
    holder_id_number: str | None = Field(None, description="Whom the lookup was about (shown to regulators only)")
    job_id: str | None = Field(None, description="The job that made this lookup (a roster run, a campaign)")
    detail: str | None = Field(None, description="What an action did, as a JSON object")
    detail_text: str = Field("", description="The same, as one line to read")
    seq: int | None = Field(None, description="Position in the hash chain (null: written before the chain)")
    prev_hash: str | None = None
    hash: str | None = Field(None, description="sha256 over the previous entry's hash and this entry")
    name_given: bool
    id_number_given: bool
    verdict: Verdict | None
    purpose: str | None
    client_ip: str | None
    name_check: Literal["match", "mismatch", "unknown", "not_checked"] | None = Field(
        description="match, mismatch, unknown (nothing to compare), not_checked (the daily name budget was "
        "spent); null when no name was given"
    )


class AuditJob(BaseModel):
    """The lookups one job made, folded into one line."""

    model_config = _CLOSED

    kind: Literal["job"]
    job_id: str
    count: int = Field(description="How many of the job's entries match the search")
    first_at: IsoTime
    last_at: IsoTime
    last_id: int
    key_id: str
    organisation: str
    role: Role
    role_text: str
    action: AuditAction
    action_text: str
    purpose: str | None


class AuditEntries(BaseModel):
    """The audit log, newest first; a job's lookups folded into one line unless `group=0` or a job is asked for."""

    model_config = _CLOSED

    entries: list[AuditRecord | AuditJob]
    cursor: str | None = Field(None, description="Pass as ?cursor= for the next page; null on the last")


class WhoAmI(BaseModel):
    """The role a request acts as."""

    model_config = _CLOSED

    role: Role
    key_id: str | None
    label: str | None
    department: Department | None


class Health(BaseModel):
    """The process is up."""

    model_config = _CLOSED

    status: Literal["ok"]


class Readiness(BaseModel):
    """The process's dependencies answer."""

    model_config = _CLOSED

    status: Literal["ready"]
    checks: ReadinessChecks
