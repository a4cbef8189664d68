"""What a certificate entitles its holder to under the mutual-recognition catalogue (对应目录).

The catalogue is data (config/recognition.toml); this module only matches certificates against it. Only a
legally issued and currently valid certificate qualifies: any other earns nothing, and the result says why.
"""

from __future__ import annotations

import unicodedata
from datetime import date

from aggregator.config import HolderRule, RecognitionCatalogue, RecognitionEntry
from aggregator.models import (
    Certificate,
    CertStatus,
    Exemption,
    Recognition,
    SkillEquivalence,
)
from aggregator.numbers import SKILL_LEVELS

_NOT_VALID_REASON = {
    CertStatus.EXPIRED: "证书已过期，不能用于互通互认 (the certificate has expired)",
    CertStatus.SUSPENDED: "证书被暂扣，不能用于互通互认 (the certificate is suspended)",
    CertStatus.REVOKED: "证书已吊销/撤销/注销，不能用于互通互认 (the certificate is revoked)",
    CertStatus.UNKNOWN: "证书状态不明，不能认定为合法有效 (the certificate's status is unknown)",
}


def _norm(text: str | None) -> str:
    return unicodedata.normalize("NFKC", text or "").replace(" ", "").upper()


def _matches(rule: HolderRule, cert: Certificate) -> bool:
    if cert.department != rule.department:
        return False
    if rule.category and _norm(rule.category) not in _norm(cert.category):
        return False
    if rule.operation_item and _norm(rule.operation_item) not in _norm(cert.operation_item):
        return False
    if rule.item_prefix:
        prefixes = [_norm(p) for p in rule.item_prefix]
        if not any(_norm(item).startswith(p) for item in cert.items for p in prefixes):
            return False
    return True


def matching_entries(catalogue: RecognitionCatalogue, cert: Certificate) -> list[RecognitionEntry]:
    return [e for e in catalogue.entries if _matches(e.holder, cert)]


def recognise(catalogue: RecognitionCatalogue, cert: Certificate, today: date) -> Recognition | None:
    """The exemptions and skill level `cert` earns, or None when no catalogue entry concerns it."""
    entries = matching_entries(catalogue, cert)
    if not entries:
        return None
    status = cert.effective_status(today)
    base = Recognition(
        certificate=cert.number,
        department=cert.department,
        operation=cert.operation_item or cert.category,
        eligible=status == CertStatus.VALID,
    )
    if status != CertStatus.VALID:
        base.reason = _NOT_VALID_REASON[status]
        return base
    skills: dict[tuple[str, int, int], SkillEquivalence] = {}
    for e in entries:
        t = e.target
        base.exemptions.append(
            Exemption(
                entry=e.entry,
                target_department=t.department,
                target=t.certificate,
                waived=t.exemption,
                note=t.note,
                basis=e.basis,
            )
        )
        if e.skill:
            k = (e.skill.occupation, e.skill.counts_as, e.skill.may_apply_for)
            skills.setdefault(
                k,
                SkillEquivalence(
                    occupation=e.skill.occupation,
                    counts_as=SKILL_LEVELS[e.skill.counts_as],
                    may_apply_for=SKILL_LEVELS[e.skill.may_apply_for],
                    basis=e.basis,
                ),
            )
    base.skill_levels = list(skills.values())
    return base


def recognise_all(catalogue: RecognitionCatalogue, certs: list[Certificate], today: date) -> list[Recognition]:
    out = []
    for c in certs:
        r = recognise(catalogue, c, today)
        if r is not None:
            out.append(r)
    return out
