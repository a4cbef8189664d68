"""Who is asking: the five roles of the web API and the principal a request acts as.

    Principal.anonymous()                      # the public: no key
    Principal(Role.DEPARTMENT, key_id="k3f9a0c1", label="应急管理部 数据科", department=Department.MEM)

What each role may do is declared on each endpoint (`endpoint.Access`, with the role sets below, which the
pages use too); what each role may *see* of an answer is decided in one place, `masking.mask_answer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from aggregator.models import Department


class Role(StrEnum):
    PUBLIC = "public"  # anonymous: masked answers
    EMPLOYER = "employer"  # masked answers plus whether the name it supplied matches; batch verification
    REGULATOR = "regulator"  # full records and conflicts; must state a purpose; reads the audit log
    DEPARTMENT = "department"  # uploads its own department's records; masked answers like the public
    ADMIN = "admin"  # everything


FULL_VIEW_ROLES = frozenset({Role.REGULATOR, Role.ADMIN})
# Who may do what (the API's endpoints and the signed-in pages use the same sets).
VERIFIERS = frozenset({Role.EMPLOYER, Role.REGULATOR, Role.ADMIN})  # batch verification
AUDITORS = frozenset({Role.REGULATOR, Role.ADMIN})  # the audit log
UPLOADERS = frozenset({Role.DEPARTMENT, Role.ADMIN})  # uploading records
UPLOAD_READERS = frozenset({Role.DEPARTMENT, Role.REGULATOR, Role.ADMIN})  # reading upload reports
# Rosters (issue 11): an employer's workforce is the employer's. Employers keep rosters; an admin key may too, but
# only as its own organisation (its label), like any employer: no role reads another organisation's rosters, and
# regulators, departments and the public read none (see web/services/rosters.py).
ROSTER_KEEPERS = frozenset({Role.EMPLOYER, Role.ADMIN})


@dataclass(frozen=True)
class Principal:
    """The identity a request acts as. `key_id` is None for the anonymous public."""

    role: Role
    key_id: str | None = None
    label: str | None = None
    department: Department | None = None  # set for (and only for) department keys

    @classmethod
    def anonymous(cls) -> Principal:
        return cls(Role.PUBLIC)

    @property
    def is_anonymous(self) -> bool:
        return self.key_id is None

    def sees_full_records(self) -> bool:
        return self.role in FULL_VIEW_ROLES
