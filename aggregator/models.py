"""The data certq passes around: a query, certificates, per-source results and the merged answer.

Everything here is plain pydantic data with no I/O. Adapters produce `Certificate`s, the gateway wraps
them in `SourceResult`s, and `merge` turns those into an `Answer`.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import get_args

from pydantic import BaseModel, ConfigDict, Field


class Department(StrEnum):
    """The four ministries whose certificates are mutually recognised."""

    MEM = "mem"  # 应急管理部: 特种作业操作证
    MOHURD = "mohurd"  # 住房和城乡建设部: 建筑施工特种作业操作资格证书
    SAMR = "samr"  # 市场监管总局: 特种设备作业人员证
    MOHRSS = "mohrss"  # 人力资源社会保障部: 职业资格证书 / 职业技能等级证书


DEPARTMENT_NAMES: dict[Department, str] = {
    Department.MEM: "应急管理部",
    Department.MOHURD: "住房和城乡建设部",
    Department.SAMR: "市场监管总局",
    Department.MOHRSS: "人力资源社会保障部",
}
DEPARTMENT_SHORT_NAMES: dict[Department, str] = {
    Department.MEM: "应急管理部",
    Department.MOHURD: "住建部",
    Department.SAMR: "市场监管总局",
    Department.MOHRSS: "人社部",
}


class CertKind(StrEnum):
    MEM_SPECIAL_OPERATION = "mem_special_operation"  # 特种作业操作证
    MOHURD_CONSTRUCTION = "mohurd_construction"  # 建筑施工特种作业操作资格证书
    SAMR_SPECIAL_EQUIPMENT = "samr_special_equipment"  # 特种设备作业人员证
    MOHRSS_SKILL_LEVEL = "mohrss_skill_level"  # 职业技能等级证书 (22 characters)
    MOHRSS_QUALIFICATION = "mohrss_qualification"  # 职业资格证书 (older, 16 digits)


CERT_KIND_NAMES: dict[CertKind, str] = {
    CertKind.MEM_SPECIAL_OPERATION: "特种作业操作证",
    CertKind.MOHURD_CONSTRUCTION: "建筑施工特种作业操作资格证书",
    CertKind.SAMR_SPECIAL_EQUIPMENT: "特种设备作业人员证",
    CertKind.MOHRSS_SKILL_LEVEL: "职业技能等级证书",
    CertKind.MOHRSS_QUALIFICATION: "职业资格证书",
}


class CertStatus(StrEnum):
    """A certificate's status as its source states it, mapped to one vocabulary.

    `expired` is also derived: a `valid` certificate whose `valid_until` has passed is expired.
    """

    VALID = "valid"
    EXPIRED = "expired"
    SUSPENDED = "suspended"  # 暂扣
    REVOKED = "revoked"  # 吊销 / 撤销 / 注销
    UNKNOWN = "unknown"  # 其他, or a status text nobody mapped


class Verdict(StrEnum):
    VALID = "valid"
    EXPIRED = "expired"
    SUSPENDED = "suspended"
    REVOKED = "revoked"
    NOT_FOUND = "not_found"
    NAME_MISMATCH = "name_mismatch"
    INCONCLUSIVE = "inconclusive"


class Outcome(StrEnum):
    FOUND = "found"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"
    MANUAL = "manual"  # link-out: a person must look it up behind a captcha
    SKIPPED = "skipped"  # the source cannot hold this number, or is disabled


class ErrorKind(StrEnum):
    TIMEOUT = "timeout"
    BLOCKED = "blocked"
    CAPTCHA = "captcha"
    RATE_LIMITED = "rate_limited"
    UPSTREAM_ERROR = "upstream_error"
    PARSE_ERROR = "parse_error"
    CIRCUIT_OPEN = "circuit_open"


class Mode(StrEnum):
    RECORDS = "records"
    API = "api"
    HTML = "html"
    LINK = "link"


#: The modes that ask a department's endpoint now (their answers are live; they need an endpoint). A StrEnum
#: set: "api" in LIVE_MODES holds for the JSON form of an answer too.
LIVE_MODES: frozenset[Mode] = frozenset({Mode.API, Mode.HTML})


class Query(BaseModel):
    """One lookup. `number` is already normalised (see `numbers.normalise`)."""

    model_config = ConfigDict(frozen=True)

    number: str
    name: str | None = None
    id_number: str | None = None

    def cache_key(self) -> str:
        """The part of a cache key that identifies this query (the name never changes what a source holds
        except for sources queried by name, which include it)."""
        return "|".join([self.number, self.name or "", self.id_number or ""])


#: What, besides the number, tells a department's certificates apart (the first of these fields that is set):
#: MEM and MOHRSS issue several cards under one number (the holder's ID), one per operation item; a SAMR number
#: (the ID) carries one card per 从业种类 whose 持证项目 grow over time; a MOHURD number is one card. The one
#: definition behind `Certificate.key`, the records' frame key and the SQL that groups records by certificate.
SUB_KEY_FIELDS: dict[Department, tuple[str, ...]] = {
    Department.MEM: ("operation_item", "category"),
    Department.MOHRSS: ("operation_item", "category"),
    Department.SAMR: ("category",),
}


class Certificate(BaseModel):
    """One certificate in canonical form, whichever source it came from. Each field's `title` is its Chinese
    label and `description` its English one: every page, card and table takes its labels from here."""

    number: str = Field(title="证书编号", description="Certificate number")
    kind: CertKind = Field(title="证书类型", description="Kind")
    department: Department = Field(title="发证部门", description="Department")
    issuer: str | None = Field(None, title="发证机关", description="Issuer")
    holder_name: str | None = Field(None, title="姓名", description="Name")
    holder_id_number: str | None = Field(None, title="身份证号", description="ID number")
    gender: str | None = Field(None, title="性别", description="Gender")  # 男 / 女
    category: str | None = Field(None, title="类别", description="Category")  # 作业类别 / 从业种类 / 职业
    # 操作项目 / 工种; SAMR: the 持证项目 codes joined by 和
    operation_item: str | None = Field(None, title="项目", description="Item")
    items: list[str] = Field(default_factory=list, title="持证项目", description="Items")  # SAMR codes, split
    level: str | None = Field(None, title="等级", description="Level")  # e.g. 四级/中级工
    # 初领日期 / 批准日期 / 发证日期
    issued_on: date | None = Field(None, title="初领/发证日期", description="Issued")
    valid_from: date | None = Field(None, title="有效期起", description="Valid from")
    valid_until: date | None = Field(None, title="有效期至", description="Valid until")
    next_review_on: date | None = Field(None, title="应复审日期", description="Review due")  # 应复审日期
    status: CertStatus = Field(CertStatus.UNKNOWN, title="状态", description="Status")
    # the source's own words, e.g. 有效, 暂扣, 01
    status_text: str | None = Field(None, title="来源原文状态", description="Status as stated")

    def key(self) -> tuple[str, str, str]:
        """What identifies one certificate across sources: department, number and, for departments whose
        number is the holder's ID (one number, several cards), the operation item or category."""
        sub = next((v for f in SUB_KEY_FIELDS.get(self.department, ()) if (v := getattr(self, f))), "")
        return (self.department.value, self.number, sub)

    def effective_status(self, today: date) -> CertStatus:
        if self.status == CertStatus.VALID and self.valid_until is not None and self.valid_until < today:
            return CertStatus.EXPIRED
        return self.status


#: Every field of a certificate, in the model's order.
CERTIFICATE_FIELDS: tuple[str, ...] = tuple(Certificate.model_fields)
#: The fields holding dates (ISO text in uploads and sources' options).
DATE_FIELDS: frozenset[str] = frozenset(
    name for name, f in Certificate.model_fields.items() if date in get_args(f.annotation)
)
#: What a card shows under the certificate's number and status, in this order.
DETAIL_FIELDS: tuple[str, ...] = (
    "holder_name",
    "gender",
    "category",
    "operation_item",
    "level",
    "issuer",
    "issued_on",
    "valid_from",
    "valid_until",
    "next_review_on",
    "status_text",
)


def field_label(name: str, *, english: bool = True) -> str:
    """A certificate field's label: "有效期至 Valid until" (or only the Chinese)."""
    info = Certificate.model_fields[name]
    return f"{info.title} {info.description}" if english else str(info.title)


#: Short words for each verdict (Chinese, English), for cards, pages and tables.
VERDICT_LABELS: dict[Verdict, tuple[str, str]] = {
    Verdict.VALID: ("有效", "valid"),
    Verdict.EXPIRED: ("已过期", "expired"),
    Verdict.SUSPENDED: ("暂扣", "suspended"),
    Verdict.REVOKED: ("已吊销/撤销", "revoked"),
    Verdict.NOT_FOUND: ("未查到", "not found"),
    Verdict.NAME_MISMATCH: ("姓名不符", "name mismatch"),
    Verdict.INCONCLUSIVE: ("无法确定", "inconclusive"),
}
#: Short words for each certificate status (Chinese, English): the pages' badges and the exports.
STATUS_LABELS: dict[CertStatus, tuple[str, str]] = {
    CertStatus.VALID: ("有效", "valid"),
    CertStatus.EXPIRED: ("已过期", "expired"),
    CertStatus.SUSPENDED: ("暂扣", "suspended"),
    CertStatus.REVOKED: ("吊销/撤销/注销", "revoked"),
    CertStatus.UNKNOWN: ("状态不明", "unknown"),
}


class ManualLink(BaseModel):
    """A prefilled link to a captcha-protected public query page and what a person must do there."""

    url: str
    instructions: str


class UploadAsOf(BaseModel):
    """How current a department's uploaded records are: its newest quarter, when that arrived, and from which
    day (China time) they are overdue because the next quarter has not arrived (see records/freshness.py)."""

    quarter: str
    uploaded_at: datetime
    overdue_from: date


class SourceResult(BaseModel):
    """What one source said about one query."""

    source: str
    department: Department
    mode: Mode
    outcome: Outcome
    certificates: list[Certificate] = Field(default_factory=list)
    error_kind: ErrorKind | None = None
    message: str | None = None
    elapsed_ms: float = 0.0
    fetched_at: datetime | None = None  # when the source was asked (not when the cache served it)
    data_as_of: datetime | None = None  # how current the source's data is (records: the upload time)
    from_cache: bool = False
    stale: bool = False  # served from cache past its TTL because the source failed
    link: ManualLink | None = None
    upload: UploadAsOf | None = None  # records: the department's newest upload (for the overdue note)

    @property
    def is_error(self) -> bool:
        return self.outcome == Outcome.UNAVAILABLE


class SourceStatus(BaseModel):
    """A source's line in the answer: the result without the certificates (they are merged)."""

    source: str
    department: Department
    mode: Mode
    outcome: Outcome
    found: int = 0
    error_kind: ErrorKind | None = None
    message: str | None = None
    elapsed_ms: float = 0.0
    fetched_at: datetime | None = None
    data_as_of: datetime | None = None
    from_cache: bool = False
    stale: bool = False
    link: ManualLink | None = None


class ConflictValue(BaseModel):
    source: str
    value: str | None
    data_as_of: datetime | None = None


class Conflict(BaseModel):
    """Two or more sources disagree on one field of one certificate."""

    certificate: str  # the certificate number
    department: Department
    field: str
    values: list[ConflictValue]
    chosen_source: str  # whose value the merged certificate shows
    reason: str  # why that one (e.g. the freshest data)


class MergedCertificate(Certificate):
    """A certificate as merged from every source that holds it."""

    sources: list[str] = Field(default_factory=list)
    effective: CertStatus = CertStatus.UNKNOWN  # status as of today, expiry applied
    name_matches: bool | None = None  # None: no name given, or no name recorded
    # "number": this is the certificate asked about; "holder": another certificate of the same holder,
    # found through the holder's ID number (shown with its recognitions, but it does not decide the verdict)
    matched_by: str = "number"


class Exemption(BaseModel):
    entry: int  # 对应目录 序号
    target_department: Department
    target: str  # the certificate it helps obtain
    waived: str  # what is waived
    note: str | None = None
    basis: str  # where the rule comes from


class SkillEquivalence(BaseModel):
    occupation: str  # 电工 / 焊工
    counts_as: str  # e.g. 五级/初级工
    may_apply_for: str  # e.g. 四级/中级工
    basis: str


class Recognition(BaseModel):
    """What one certificate in the answer entitles its holder to."""

    certificate: str
    department: Department
    operation: str | None = None
    eligible: bool
    reason: str | None = None  # why not, when not eligible
    exemptions: list[Exemption] = Field(default_factory=list)
    skill_levels: list[SkillEquivalence] = Field(default_factory=list)


class NumberFormatInfo(BaseModel):
    """One format a number fits, with its decoded parts (see `numbers.classify`)."""

    format: str
    label: str
    parts: dict[str, str] = Field(default_factory=dict)


class NameCheck(StrEnum):
    """What happened to the name a caller gave (see aggregator/web/namebudget.py)."""

    CHECKED = "checked"  # compared with the records
    NOT_CHECKED = "not_checked"  # not compared: the answer is the one a lookup without a name gives


class QueryEcho(BaseModel):
    number: str
    formats: list[NumberFormatInfo] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    name_given: bool = False
    id_number_given: bool = False
    name_check: NameCheck | None = None  # None: no name given (or nobody decided)


class Answer(BaseModel):
    query: QueryEcho
    verdict: Verdict
    verdict_reason: str
    complete: bool  # every source that could hold the number answered
    certificates: list[MergedCertificate] = Field(default_factory=list)
    sources: list[SourceStatus] = Field(default_factory=list)
    conflicts: list[Conflict] = Field(default_factory=list)
    recognitions: list[Recognition] = Field(default_factory=list)
    answered_at: datetime
    elapsed_ms: float = 0.0
