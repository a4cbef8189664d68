"""Configuration as validated data.

The config directory (default: the repository's `config/`, or `CERTQ_CONFIG_DIR`) holds
`sources/*.toml` (one source a file), `departments.toml` and `recognition.toml`. Everything is validated
by pydantic at start-up; a mistake is reported as `file: key: problem`, all of them at once.

String values may name environment variables as `${NAME}` or `${NAME:-default}`, so that endpoints and
credentials can differ per machine without editing files.
"""

from __future__ import annotations

import os
import re
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aggregator.models import LIVE_MODES, CertKind, CertStatus, Department, Mode

_ENV_REF = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """One or more problems in the config directory, each naming its file and key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- Sources ------------------------------------------------------------------------------------


class RateLimit(_Strict):
    per_second: float = Field(2.0, gt=0)
    burst: int = Field(2, ge=1)


class Retries(_Strict):
    attempts: int = Field(3, ge=1, le=10)  # total tries, the first included
    backoff_s: float = Field(0.1, ge=0)  # first backoff; doubles, with jitter
    max_backoff_s: float = Field(2.0, ge=0)


class Circuit(_Strict):
    failure_threshold: int = Field(5, ge=1)
    base_backoff_s: float = Field(5.0, gt=0)
    max_backoff_s: float = Field(300.0, gt=0)


class CacheTtl(_Strict):
    found_s: int = Field(6 * 3600, ge=0)
    not_found_s: int = Field(15 * 60, ge=0)
    max_stale_s: int = Field(7 * 24 * 3600, ge=0)  # serve-stale window after the TTL


class Canary(_Strict):
    valid: str  # a number the source is known to hold
    invalid: str  # a number it is known not to hold


class SourceConfig(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    name: str  # shown to people, e.g. 应急管理部 特种作业操作证 查询
    department: Department
    mode: Mode
    adapter: str  # records | html | jsonapi | link | mem | samr | mohrss | mohurd
    kinds: list[CertKind] = Field(min_length=1)
    # The number formats (see numbers.FORMATS) this source can answer; "*" means any number.
    patterns: list[str] = Field(min_length=1)
    # For sources queried by ID number (MEM, SAMR): also answer when the query carries an ID number.
    enabled: bool = True
    endpoint: str | None = None
    timeout_s: float = Field(5.0, gt=0)
    connect_timeout_s: float = Field(2.0, gt=0)
    max_concurrency: int = Field(8, ge=1)
    user_agent: str = "certq/0.1 (+certificate verification; contact: ops@certq.invalid)"
    credentials_env: str | None = None  # environment variable that holds the institutional token
    rate_limit: RateLimit = RateLimit()
    retries: Retries = Retries()
    circuit: Circuit = Circuit()
    cache: CacheTtl = CacheTtl()
    canary: Canary | None = None
    options: dict[str, Any] = Field(default_factory=dict)  # adapter-specific, validated by the adapter

    # The environment variable the endpoint names (`${CERTQ_MEM_URL:-}`), set at load time: where a home's
    # settings.toml or the demo says where this source is.
    endpoint_env: str | None = None

    @field_validator("endpoint", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("endpoint")
    @classmethod
    def _a_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from urllib.parse import urlsplit

        parts = urlsplit(v.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{v!r} is not an http(s) URL")
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number or out of range
        except ValueError as e:
            raise ValueError(f"{v!r} is not an http(s) URL: {e}") from None
        return v.strip()

    @model_validator(mode="after")
    def _endpoint_for_link(self) -> SourceConfig:
        if self.mode == Mode.LINK and not self.endpoint:
            raise ValueError("mode 'link' needs an endpoint (the public page to link to)")
        return self

    @property
    def configured(self) -> bool:
        """A live source without an endpoint (none set for this machine) is not asked: it is skipped."""
        return self.mode not in LIVE_MODES or self.endpoint is not None

    @field_validator("patterns")
    @classmethod
    def _known_patterns(cls, v: list[str]) -> list[str]:
        from aggregator.numbers import FORMATS

        unknown = [p for p in v if p != "*" and p not in FORMATS]
        if unknown:
            raise ValueError(f"unknown number format(s) {unknown}; known: {sorted(FORMATS)} or '*'")
        return v


# --- Departments (uploads) ----------------------------------------------------------------------


class DepartmentConfig(_Strict):
    id: Department
    name: str
    kind: CertKind  # what its uploaded rows are, unless a row says otherwise
    encodings: list[str] = Field(default_factory=lambda: ["utf-8-sig", "utf-8", "gb18030"])
    # canonical field -> extra header aliases for this department (on top of the common ones)
    column_aliases: dict[str, list[str]] = Field(default_factory=dict)
    # status text as written in uploads -> canonical status (on top of the common table)
    status_map: dict[str, CertStatus] = Field(default_factory=dict)


# --- Recognition catalogue (对应目录) -----------------------------------------------------------


class HolderRule(_Strict):
    """Which certificates an entry applies to. Every given field must match (substring, NFKC)."""

    department: Department
    category: str | None = None
    operation_item: str | None = None
    item_prefix: list[str] | None = None  # SAMR: any 持证项目 code starting with one of these


class TargetRule(_Strict):
    department: Department
    certificate: str
    exemption: str
    note: str | None = None


class SkillRule(_Strict):
    occupation: str
    counts_as: int = Field(ge=1, le=5)  # 5 = 五级/初级工 .. 1 = 一级/高级技师
    may_apply_for: int = Field(ge=1, le=5)


class RecognitionEntry(_Strict):
    entry: int = Field(ge=1)
    title: str
    holder: HolderRule
    target: TargetRule
    skill: SkillRule | None = None
    basis: str  # where the rule comes from (notice section, attachment row)


class RecognitionCatalogue(_Strict):
    notice: str
    requires: Literal["valid"] = "valid"
    entries: list[RecognitionEntry] = Field(min_length=1)

    @field_validator("entries")
    @classmethod
    def _unique(cls, v: list[RecognitionEntry]) -> list[RecognitionEntry]:
        seen = [e.entry for e in v]
        if len(seen) != len(set(seen)):
            raise ValueError(f"duplicate entry numbers: {seen}")
        return v


# --- Sources' health history and upload freshness (health.toml, optional) -----------------------


class HealthConfig(_Strict):
    """`health.toml`: how the sources' health history is kept and read, and when an upload is overdue."""

    retention_days: int = Field(90, ge=1, le=3660)  # 5-minute buckets older than this are deleted
    flush_s: float = Field(5.0, gt=0, le=300)  # how often each process writes its counts to the database
    # A 5-minute bucket is "down" when the share of calls the source answered is below this (rate-limited calls
    # count neither way); an incident is a run of down buckets lasting at least `incident_min_minutes`.
    down_below: float = Field(0.5, gt=0, le=1)
    incident_min_minutes: int = Field(10, ge=5, le=7 * 24 * 60)
    # A department is overdue once the last complete quarter has not arrived this many days after it ended.
    upload_overdue_days: int = Field(30, ge=0, le=366)


# --- Loading ------------------------------------------------------------------------------------


def default_config_dir() -> Path:
    """The home's config directory (CERTQ_CONFIG_DIR or its settings.toml), else the repository's `config/`,
    else the copy installed with the package."""
    from aggregator.home import Home

    chosen = Home.load().config_dir
    if chosen is not None:
        return chosen
    repo = Path(__file__).resolve().parent.parent / "config"
    if repo.is_dir():
        return repo
    return Path(__file__).resolve().parent / "_default_config"


def _expand_env(value: Any) -> Any:
    if isinstance(value, str):
        return _ENV_REF.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ""), value)
    if isinstance(value, dict):
        return {k: _expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v) for v in value]
    return value


def _read_toml(path: Path, problems: list[str], *, expand: bool = True) -> dict[str, Any] | None:
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
        return _expand_env(raw) if expand else raw
    except FileNotFoundError:
        problems.append(f"{path}: file is missing")
    except tomllib.TOMLDecodeError as e:
        problems.append(f"{path}: not valid TOML: {e}")
    return None


def _validation_problems(path: Path, err: ValidationError, prefix: str = "") -> list[str]:
    out = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        out.append(f"{path}: {prefix}{key}: {e['msg']}")
    return out


class Settings:
    """The whole validated configuration. Build with `Settings.load()`."""

    def __init__(
        self,
        config_dir: Path,
        sources: list[SourceConfig],
        departments: dict[Department, DepartmentConfig],
        recognition: RecognitionCatalogue,
        health: HealthConfig | None = None,
    ) -> None:
        self.config_dir = config_dir
        self.sources = sources
        self.departments = departments
        self.recognition = recognition
        self.health = health or HealthConfig()

    @cached_property
    def source_by_id(self) -> dict[str, SourceConfig]:
        return {s.id: s for s in self.sources}

    def with_endpoints(self, endpoints: dict[str, str]) -> Settings:
        """A copy whose sources point at other base URLs (the sandbox, a test server)."""
        sources = [s.model_copy(update={"endpoint": endpoints[s.id]}) if s.id in endpoints else s for s in self.sources]
        return Settings(self.config_dir, sources, self.departments, self.recognition, self.health)

    def with_sources(self, sources: list[SourceConfig]) -> Settings:
        return Settings(self.config_dir, sources, self.departments, self.recognition, self.health)

    def with_health(self, **changes: Any) -> Settings:
        """A copy with other health settings (validated: `HealthConfig`)."""
        health = HealthConfig.model_validate({**self.health.model_dump(), **changes})
        return Settings(self.config_dir, self.sources, self.departments, self.recognition, health)

    @classmethod
    def load(cls, config_dir: Path | str | None = None) -> Settings:
        root = Path(config_dir) if config_dir else default_config_dir()
        problems: list[str] = []
        if not root.is_dir():
            raise ConfigError([f"{root}: config directory not found (set CERTQ_CONFIG_DIR)"])

        sources: list[SourceConfig] = []
        for path in sorted((root / "sources").glob("*.toml")):
            raw = _read_toml(path, problems, expand=False)
            if raw is None:
                continue
            if isinstance(raw.get("endpoint"), str) and (ref := _ENV_REF.search(raw["endpoint"])):
                raw.setdefault("endpoint_env", ref.group(1))
            raw = _expand_env(raw)
            raw.setdefault("id", path.stem)
            if raw["id"] != path.stem:
                problems.append(f"{path}: id: {raw['id']!r} differs from the file name {path.stem!r}")
                continue
            try:
                sources.append(SourceConfig.model_validate(raw))
            except ValidationError as e:
                problems.extend(_validation_problems(path, e))
        if not sources and not problems:
            problems.append(f"{root / 'sources'}: no source files (*.toml)")

        departments: dict[Department, DepartmentConfig] = {}
        dpath = root / "departments.toml"
        raw = _read_toml(dpath, problems)
        if raw is not None:
            for i, item in enumerate(raw.get("department", [])):
                try:
                    d = DepartmentConfig.model_validate(item)
                    departments[d.id] = d
                except ValidationError as e:
                    problems.extend(_validation_problems(dpath, e, prefix=f"department[{i}]."))
            missing = [d.value for d in Department if d not in departments]
            if missing and not problems:
                problems.append(f"{dpath}: department: no entry for {missing}")

        recognition = None
        rpath = root / "recognition.toml"
        raw = _read_toml(rpath, problems)
        if raw is not None:
            try:
                recognition = RecognitionCatalogue.model_validate(raw)
            except ValidationError as e:
                problems.extend(_validation_problems(rpath, e))

        health = HealthConfig()
        hpath = root / "health.toml"
        raw = _read_toml(hpath, problems) if hpath.exists() else None
        if raw is not None:
            try:
                health = HealthConfig.model_validate(raw)
            except ValidationError as e:
                problems.extend(_validation_problems(hpath, e))

        if problems or recognition is None:
            raise ConfigError(problems or [f"{rpath}: could not be read"])
        return cls(root, sources, departments, recognition, health)
