"""What a campaign samples: the population (filters over the uploaded records) and the design of the sample.

    population = Population(departments=["mohurd"], province="吉林", valid_on="2026-11-25")
    design = Design(n=1200, method="stratified", stratify_by="issuer", allocation="proportional", seed=20261125)

Both are validated data (pydantic, unknown fields refused); a bad value is a `CampaignInvalid` naming the field,
in Chinese and English (`invalid`). Every filter is optional: none means every current uploaded record.
"""

from __future__ import annotations

import re
import secrets
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aggregator.campaigns.regions import PROVINCES
from aggregator.errors import register
from aggregator.models import CertKind, Department

MAX_SAMPLE = 100_000
_QUARTER = re.compile(r"^(\d{4})Q([1-4])$")
_NAMES = {name: code for code, name in PROVINCES.items()}


class CampaignInvalid(ValueError):
    """A campaign's filters or design cannot be used (the message names the field, Chinese first)."""

    def __init__(self, zh: str, en: str) -> None:
        super().__init__(f"{zh} ({en})")
        self.zh = zh
        self.en = en


register(CampaignInvalid, 422, 2, "campaign-invalid", "抽查设置有误：{exc.zh}", "invalid campaign settings: {exc.en}")


class Population(BaseModel):
    """Filters over the current uploaded records (all given filters must hold)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    departments: list[Department] = Field(default_factory=list, description="发证部门 departments (none: all)")
    kinds: list[CertKind] = Field(default_factory=list, description="证书类型 certificate kinds (none: all)")
    operation_item: str | None = Field(None, max_length=200, description="操作项目/职业 item or occupation")
    issuer: str | None = Field(None, max_length=200, description="发证机关 issuer (exact)")
    province: str | None = Field(None, description="省份：GB/T 2260 两位代码或名称 province code or name")
    city: str | None = Field(None, max_length=8, description="城市：身份证号前四位，或住建部编号的“京A” city")
    quarter: str | None = Field(None, description="上报季度 quarter uploaded, e.g. 2026Q3")
    valid_on: date | None = Field(None, description="在该日有效 valid on this date")

    @field_validator("operation_item", "issuer", "city", mode="before")
    @classmethod
    def _blank(cls, v: object) -> object:
        return (v.strip() or None) if isinstance(v, str) else v

    @field_validator("province", mode="before")
    @classmethod
    def _province(cls, v: object) -> object:
        if v is None or (isinstance(v, str) and not v.strip()):
            return None
        text = str(v).strip().removesuffix("省").removesuffix("市")
        if text in PROVINCES:
            return text
        if text in _NAMES:
            return _NAMES[text]
        raise ValueError(f"unknown province {v!r}: a two-digit GB/T 2260 code (44) or a name (广东)")

    @field_validator("quarter")
    @classmethod
    def _quarter(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = v.strip().upper()
        if not _QUARTER.match(v):
            raise ValueError(f"quarter {v!r} must look like 2026Q3")
        return v

    def describe(self) -> str:
        """The filters in words, Chinese first: '住房和城乡建设部；吉林；2026-11-25 有效'."""
        from aggregator.campaigns.regions import province_name
        from aggregator.models import CERT_KIND_NAMES, DEPARTMENT_SHORT_NAMES

        parts = []
        if self.departments:
            parts.append("、".join(DEPARTMENT_SHORT_NAMES[d] for d in self.departments))
        if self.kinds:
            parts.append("、".join(CERT_KIND_NAMES[k] for k in self.kinds))
        if self.operation_item:
            parts.append(f"项目 {self.operation_item}")
        if self.issuer:
            parts.append(f"发证机关 {self.issuer}")
        if self.province:
            parts.append(province_name(self.province))
        if self.city:
            parts.append(f"城市 {self.city}")
        if self.quarter:
            parts.append(f"{self.quarter} 上报")
        if self.valid_on:
            parts.append(f"{self.valid_on.isoformat()} 有效")
        return "；".join(parts) or "全部现行上报记录 (every current uploaded record)"


Method = Literal["simple", "stratified"]
StratifyBy = Literal["issuer", "province", "city"]
Allocation = Literal["proportional", "equal"]


class Design(BaseModel):
    """How many to draw and how: simple random, or stratified by issuer or region with proportional or equal
    allocation. The seed makes the draw reproducible (a random one is chosen when none is given)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(ge=1, le=MAX_SAMPLE, description="样本量 sample size")
    method: Method = "simple"
    stratify_by: StratifyBy | None = None
    allocation: Allocation = "proportional"
    seed: int = Field(default_factory=lambda: secrets.randbelow(2**53), ge=0, lt=2**63)

    @model_validator(mode="after")
    def _strata(self) -> Design:
        if self.method == "stratified" and self.stratify_by is None:
            raise ValueError("a stratified sample needs stratify_by: issuer, province or city")
        if self.method == "simple" and self.stratify_by is not None:
            raise ValueError("stratify_by goes with method = stratified")
        return self


_FIELD_ZH = {
    "departments": "发证部门",
    "kinds": "证书类型",
    "operation_item": "操作项目",
    "issuer": "发证机关",
    "province": "省份",
    "city": "城市",
    "quarter": "上报季度",
    "valid_on": "有效日期",
    "n": "样本量",
    "method": "抽样方法",
    "stratify_by": "分层依据",
    "allocation": "样本分配",
    "seed": "随机种子",
}


def invalid(error: ValidationError, what: str) -> CampaignInvalid:
    """The first problem of a pydantic error, naming the field in Chinese and English."""
    first = error.errors()[0]
    name = ".".join(str(p) for p in first["loc"]) or what
    field = str(first["loc"][0]) if first["loc"] else what
    message = first["msg"].removeprefix("Value error, ")
    return CampaignInvalid(f"{_FIELD_ZH.get(field, field)} 有误：{message}", f"{name}: {message}")


def parse_population(data: object) -> Population:
    try:
        return Population.model_validate(data or {})
    except ValidationError as e:
        raise invalid(e, "filters") from None


def parse_design(data: object) -> Design:
    try:
        return Design.model_validate(data or {})
    except ValidationError as e:
        raise invalid(e, "design") from None
