"""Settings of the web service (not of the sources): limits, trusted proxies, deadlines.

    WebConfig()                                             # the defaults below
    WebConfig(trusted_proxies=["10.0.0.0/8"], ip_per_minute=30)
    WebConfig.from_env()                                    # CERTQ_WEB_* environment variables

Environment (for `certq serve` and worker processes): CERTQ_WEB_TRUSTED_PROXIES (comma-separated CIDRs),
CERTQ_WEB_IP_PER_MINUTE, CERTQ_WEB_KEY_PER_MINUTE, CERTQ_WEB_BODY_LIMIT, CERTQ_WEB_UPLOAD_LIMIT,
CERTQ_WEB_DEADLINE_S, CERTQ_WEB_UPLOAD_DIR, CERTQ_WEB_FREEZE_GC, CERTQ_WEB_HEADER_TIMEOUT,
CERTQ_WEB_MAX_CONNECTIONS_PER_IP, CERTQ_WEB_NAMES_PER_CERTIFICATE, CERTQ_WEB_NAME_SALT, CERTQ_WEB_JOBS_IN_PROCESS,
CERTQ_WEB_JOB_CONCURRENCY, CERTQ_WEB_HOLDER_IP_LIMIT, CERTQ_WEB_HOLDER_IP_WINDOW_S, CERTQ_WEB_HOLDER_IP_LOCKOUT_S,
CERTQ_WEB_HOLDER_CERT_LIMIT, CERTQ_WEB_HOLDER_CERT_WINDOW_S, CERTQ_WEB_HOLDER_CERT_LOCKOUT_S.
"""

from __future__ import annotations

import ipaddress
import os
from functools import cached_property

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

MB = 1024 * 1024


class WebConfig(BaseModel):
    """Limits and trust settings of one web app. A limit of 0 requests per minute switches that limit off."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    trusted_proxies: list[str] = Field(default_factory=list)  # CIDRs whose X-Forwarded-For / X-Real-IP we believe
    body_limit: int = Field(2 * MB, ge=1024)  # any request body but multipart uploads
    upload_limit: int = Field(200 * MB, ge=1024)  # multipart bodies, and the uploaded file itself
    ip_per_minute: int = Field(120, ge=0)  # requests per client IP per sliding minute (anonymous callers)
    key_per_minute: int = Field(1200, ge=0)  # requests per API key per sliding minute
    deadline_s: float = Field(6.0, gt=0, le=120)  # one lookup, all sources
    batch_max: int = Field(1000, ge=1, le=10_000)  # pairs in one verification request
    batch_concurrency: int = Field(20, ge=1, le=200)  # lookups of one verification request at once
    key_cache_s: float = Field(2.0, ge=0)  # how long an authenticated key is trusted before asking the database
    # Distinct holder names one caller (a key; the public: a client IP) may have checked against one
    # certificate number per UTC day; further names are not checked (see namebudget.py). 0 switches it off.
    names_per_certificate: int = Field(5, ge=0)
    # The HMAC key of the stored name digests, the same on every instance. Unset: a random key is made once
    # and kept in the database every instance shares (see namebudget.py).
    name_salt: SecretStr | None = None
    upload_dir: str | None = None  # where uploads are streamed to (default: the system temp directory)
    # After start-up, move what start-up made into the garbage collector's permanent generation (gc.freeze),
    # so that full collections under load skip it: shorter pauses, a shorter latency tail. For server
    # processes (`certq serve`, `certq demo` set it); off by default, as it is process-wide.
    freeze_gc: bool = False
    # Slow clients (enforced by the server's HTTP protocol, aggregator/web/protocol.py, not by the app): the
    # seconds a connection has to deliver a whole request head (0 = off), and the concurrent connections one
    # socket peer IP may hold open on one server process (0 = off; peers in trusted_proxies are not capped:
    # a proxy's connections carry many clients, so cap on the proxy).
    header_timeout: float = Field(10.0, ge=0, le=600)
    max_connections_per_ip: int = Field(64, ge=0)
    # Jobs (rosters, monitoring, campaigns, webhooks): run them inside this process too? None: yes on the embedded
    # default (SQLite: there is nobody else to run them), no with PostgreSQL (`certq worker` processes run them).
    jobs_in_process: bool | None = None
    job_concurrency: int = Field(2, ge=1, le=64)  # jobs one process runs at once
    # The holder's view (web/holders/guard.py): attempts per client IP per window, failed attempts per
    # certificate per window, and how long going over locks that IP / certificate out. Never off (>= 1).
    holder_ip_limit: int = Field(10, ge=1, le=1000)
    holder_ip_window_s: int = Field(3600, ge=1, le=30 * 86400)
    holder_ip_lockout_s: int = Field(3600, ge=1, le=30 * 86400)
    holder_cert_limit: int = Field(5, ge=1, le=1000)
    holder_cert_window_s: int = Field(86400, ge=1, le=30 * 86400)
    holder_cert_lockout_s: int = Field(86400, ge=1, le=30 * 86400)

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        for cidr in v:
            try:
                ipaddress.ip_network(cidr.strip(), strict=False)
            except ValueError as e:
                raise ValueError(f"not an IP network: {cidr!r}") from e
        return [c.strip() for c in v]

    @cached_property
    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(c, strict=False) for c in self.trusted_proxies)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> WebConfig:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        if env.get("CERTQ_WEB_TRUSTED_PROXIES"):
            values["trusted_proxies"] = [c for c in env["CERTQ_WEB_TRUSTED_PROXIES"].split(",") if c.strip()]
        for name, key in (
            ("CERTQ_WEB_IP_PER_MINUTE", "ip_per_minute"),
            ("CERTQ_WEB_KEY_PER_MINUTE", "key_per_minute"),
            ("CERTQ_WEB_BODY_LIMIT", "body_limit"),
            ("CERTQ_WEB_UPLOAD_LIMIT", "upload_limit"),
            ("CERTQ_WEB_DEADLINE_S", "deadline_s"),
            ("CERTQ_WEB_UPLOAD_DIR", "upload_dir"),
            ("CERTQ_WEB_FREEZE_GC", "freeze_gc"),
            ("CERTQ_WEB_NAMES_PER_CERTIFICATE", "names_per_certificate"),
            ("CERTQ_WEB_NAME_SALT", "name_salt"),
            ("CERTQ_WEB_HEADER_TIMEOUT", "header_timeout"),
            ("CERTQ_WEB_MAX_CONNECTIONS_PER_IP", "max_connections_per_ip"),
            ("CERTQ_WEB_JOBS_IN_PROCESS", "jobs_in_process"),
            ("CERTQ_WEB_JOB_CONCURRENCY", "job_concurrency"),
            ("CERTQ_WEB_HOLDER_IP_LIMIT", "holder_ip_limit"),
            ("CERTQ_WEB_HOLDER_IP_WINDOW_S", "holder_ip_window_s"),
            ("CERTQ_WEB_HOLDER_IP_LOCKOUT_S", "holder_ip_lockout_s"),
            ("CERTQ_WEB_HOLDER_CERT_LIMIT", "holder_cert_limit"),
            ("CERTQ_WEB_HOLDER_CERT_WINDOW_S", "holder_cert_window_s"),
            ("CERTQ_WEB_HOLDER_CERT_LOCKOUT_S", "holder_cert_lockout_s"),
        ):
            if env.get(name):
                values[key] = env[name]
        return cls.model_validate(values)
