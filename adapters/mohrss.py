"""MOHRSS 人社部 技能人才评价证书全国联网查询 (zscx.osta.org.cn shape): the generic HTML adapter plus its quirks.

Config (config/sources/mohrss_html.toml) says where the tables are and what each label means. This module
adds what config cannot say:

- the kind of certificate: the 证书类型 cell when the page has one, else the number's format (22 characters:
  职业技能等级证书; 16 digits: 职业资格证书);
- masked values: the public page masks the ID number and name (110105********1239, 张*); a masked value is
  not the holder's, so it is dropped rather than compared;
- a person table that repeats the number as 证书编号 is not a certificate: only tables after the person's
  are certificates (`shared_tables`).
"""

from __future__ import annotations

from typing import Any

from adapters.html import HtmlAdapter
from adapters.parsing import clean_text
from aggregator.models import CertKind
from aggregator.numbers import classify, normalise

_KIND_BY_FORMAT = {
    "mohrss_skill": CertKind.MOHRSS_SKILL_LEVEL,
    "mohrss_qual": CertKind.MOHRSS_QUALIFICATION,
}
_MASKS = ("*", "＊", "●")


def is_masked(value: object) -> bool:
    text = clean_text(value)
    return any(m in text for m in _MASKS)


class MohrssAdapter(HtmlAdapter):
    """The MOHRSS certificate query page, by certificate number and/or ID number."""

    def adjust(self, raw: dict[str, Any], where: str) -> dict[str, Any]:
        return {k: v for k, v in raw.items() if not (k in ("holder_name", "holder_id_number") and is_masked(v))}

    def kind_for(self, raw: dict[str, Any]) -> CertKind:
        number = clean_text(raw.get("number"))
        for fmt in classify(normalise(number)).names if number else ():
            if (kind := _KIND_BY_FORMAT.get(fmt)) in self.source.kinds:
                return kind
        return self.source.kinds[0]
