"""SAMR 市场监管总局 (特种设备作业人员证): two steps, and the 持证项目 codes.

1. the person query (`remotePubQuery.json?keyword=<ID>`) answers the person and an opaque `perId`, and sets
   the session cookie that step 2 needs (the runner keeps cookies within one query);
2. `getPerInfoBySfzh.json?sfzh=<ID>&perId=<perId>` answers every licence in `data.licList`.

The certificate number (zsbh) equals the holder's ID number. 持证项目 codes (TSG Z6002) come joined by 和,
with Roman numerals as the single characters Ⅱ Ⅳ or as II IV, sometimes upper-cased; `canonical_item`
writes them one way, the card's: `GTAW-FeⅡ-6G-3/60-FefS-02/10/12`.

    >>> split_items("GTAW-FEII-6G-3/60-FEFS-02/10/12和smaw-feⅡ-2g-12-fef3j")
    ['GTAW-FeⅡ-6G-3/60-FefS-02/10/12', 'SMAW-FeⅡ-2G-12-Fef3J']

`validFlag` "0" says only "not valid": it is reported as expired when the term has ended, else unknown.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Callable
from datetime import date
from typing import Any

from pydantic import Field, field_validator

from adapters.base import (
    HttpResponse,
    LookupFlow,
    NotFound,
    ParseError,
    UpstreamError,
)
from adapters.blocks import detect_block
from adapters.jsonapi import JsonRecords, RecordFields, decode_json
from adapters.parsing import MISSING, check_path, check_status, clean_text, dotted_get, fold
from adapters.request import (
    HttpSource,
    RequestShape,
    check_shapes_cover_patterns,
    choose_shape,
    query_vars,
    validate_options,
)
from aggregator.config import SourceConfig
from aggregator.models import Certificate, CertStatus, Query

# --- 持证项目 codes ---------------------------------------------------------------------------------

_ROMAN = {"I": "Ⅰ", "II": "Ⅱ", "III": "Ⅲ", "IV": "Ⅳ"}
_METAL = re.compile(r"(FE|AL|CU|NI|TI)(IV|I{1,3})?")  # base-metal class: FeⅡ, Al, Cu ...
_FILLER = re.compile(r"(FE|AL|CU|NI|TI)F([0-9A-Z]*)")  # filler-metal class: FefS, Fef3J ...
_DASHES = re.compile(r"[‐‑‒–—―−－]")
_ITEM_SEPARATORS = re.compile(r"[和、;；,，]+")


def canonical_item(code: str) -> str:
    """One 持证项目 code in the card's spelling: NFKC, upper-case, then the metal symbols and filler classes
    in their mixed case (Fe, Fef) and Roman numerals as Ⅰ Ⅱ Ⅲ Ⅳ. Codes without metals (Q2, N1, G1, A, T)
    come back upper-cased."""
    text = _DASHES.sub("-", unicodedata.normalize("NFKC", code))
    text = re.sub(r"\s+", "", text).upper()
    out = []
    for seg in text.split("-"):
        if m := _METAL.fullmatch(seg):
            out.append(m.group(1).title() + _ROMAN.get(m.group(2) or "", ""))
        elif m := _FILLER.fullmatch(seg):
            out.append(m.group(1).title() + "f" + m.group(2))
        else:
            out.append(seg)
    return "-".join(out)


def split_items(text: str | None) -> list[str]:
    """The codes in a 持证项目 value (joined by 和, or 、 ; ,), each `canonical_item`, in order, no repeats."""
    seen: list[str] = []
    for part in _ITEM_SEPARATORS.split(unicodedata.normalize("NFKC", text or "")):
        item = canonical_item(part)
        if item and item not in seen:
            seen.append(item)
    return seen


# --- options --------------------------------------------------------------------------------------


class SamrOptions(RecordFields):
    person: RequestShape  # step 1
    licences: RequestShape  # step 2 (the perId parameter is added)
    per_id_param: str = "perId"
    success: str = "success"  # path of the success flag
    message: str = "messageText"  # path of the source's message
    per_id: str = "data.perId"  # path of the opaque person id in step 1
    licence_list: str = "data.licList"  # path of the licences in step 2
    not_found_text: list[str] = Field(default_factory=lambda: ["未查询到"])
    session_expired_text: list[str] = Field(default_factory=lambda: ["会话已失效", "会话过期"])
    not_valid_flags: list[str] = Field(default_factory=lambda: ["0"])  # status values that say only "not valid"

    @field_validator("success", "message", "per_id", "licence_list")
    @classmethod
    def _paths(cls, v: str) -> str:
        return check_path(v)


class SessionExpired(UpstreamError):
    """Step 2 refused for want of the session cookie of step 1: retrying step 2 alone cannot help."""

    retryable = False


# --- adapter --------------------------------------------------------------------------------------


class SamrAdapter(HttpSource, JsonRecords):
    """SAMR's two-step JSON endpoint, queried by ID number."""

    options: SamrOptions

    def __init__(self, source: SourceConfig, *, today: Callable[[], date] = date.today) -> None:
        super().__init__(source)
        self.options = validate_options(SamrOptions, source)
        check_shapes_cover_patterns([self.options.person], source, key="person")
        self.today = today

    def lookup(self, query: Query) -> LookupFlow:
        values = query_vars(query)
        person = choose_shape([self.options.person], values, self.source.id)
        resp = yield person.build(self.endpoint, values, self.headers())
        per_id = self.parse_person(resp)
        req = self.options.licences.build(self.endpoint, values, self.headers())
        req = dataclasses.replace(req, params={**(req.params or {}), self.options.per_id_param: per_id})
        resp = yield req
        return self.parse_licences(resp)

    # --- step 1 -------------------------------------------------------------------------------

    def _message(self, body: dict[str, Any]) -> str:
        value = dotted_get(body, self.options.message, None)
        return clean_text(value) if value not in (None, MISSING) else ""

    def _success(self, body: dict[str, Any]) -> bool | None:
        value = dotted_get(body, self.options.success)
        if value is MISSING:
            return None
        return value is True or fold(value).lower() == "true"

    def _refusal(self, resp: HttpResponse, body: dict[str, Any], where: str) -> Exception:
        """What a body that is not a usable success is: a captcha or block message, the source's own error
        (success false), or a ParseError naming `where`."""
        msg = self._message(body)
        if block := detect_block(resp):
            return block
        if self._success(body) is False:
            return UpstreamError(f"数据源报错 (source error): {msg or 'success=false'}")
        return ParseError(where, f"neither a result nor a not-found message (message: {msg!r})")

    def parse_person(self, resp: HttpResponse) -> str:
        """Step 1: the opaque person id, or NotFound on the source's own "未查询到" message."""
        check_status(resp)
        body = decode_json(resp)
        msg = self._message(body)
        if self._success(body):
            per_id = dotted_get(body, self.options.per_id)
            if per_id not in (None, MISSING) and clean_text(per_id):
                return clean_text(per_id)
            if any(t in msg for t in self.options.not_found_text):
                raise NotFound(msg)
        raise self._refusal(resp, body, self.options.per_id)

    # --- step 2 -------------------------------------------------------------------------------

    def parse_licences(self, resp: HttpResponse) -> list[Certificate]:
        """Step 2: every licence in `data.licList`."""
        if resp.status == 401 and any(t in (resp.text or "") for t in self.options.session_expired_text):
            raise SessionExpired(
                "会话已失效：第二步未带上第一步的会话 (session expired: step 2 lacked step 1's cookie)"
            )
        check_status(resp)
        body = decode_json(resp)
        path = self.options.licence_list
        if self._success(body):
            licences = dotted_get(body, path)
            if isinstance(licences, list) and licences:
                return self.certificates(licences)
            if isinstance(licences, list):
                raise ParseError(path, "empty licence list although step 1 found the person")
        raise self._refusal(resp, body, path)

    def certificates(self, licences: list[Any]) -> list[Certificate]:
        out = []
        for i, licence in enumerate(licences):
            where = f"{self.options.licence_list}[{i}]"
            if not isinstance(licence, dict):
                raise ParseError(where, f"expected an object, got {type(licence).__name__}")
            out.append(self.lapsed(licence, self.to_certificate(licence, where)))
        return out

    def adjust(self, record: dict[str, Any], raw: dict[str, Any], where: str) -> dict[str, Any]:
        if "items" in raw or "operation_item" in raw:
            source_text = raw.get("items", raw.get("operation_item"))
            items = split_items(clean_text(source_text))
            raw = {**raw, "items": items, "operation_item": "和".join(items) or None}
        return raw

    def lapsed(self, licence: dict[str, Any], cert: Certificate) -> Certificate:
        """A "not valid" flag with a term already ended is expired; with a term still running it stays unknown
        (the source does not say whether it is suspended or revoked)."""
        path = self.options.fields.get("status")
        flag = fold(dotted_get(licence, path, "")) if path else ""
        not_valid = {fold(f) for f in self.options.not_valid_flags}
        if (
            flag in not_valid
            and cert.status == CertStatus.UNKNOWN
            and cert.valid_until
            and cert.valid_until < self.today()
        ):
            return cert.model_copy(update={"status": CertStatus.EXPIRED})
        return cert
