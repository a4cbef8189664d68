"""SAMR 市场监管总局 sandbox site (`samr_api`): two steps by ID number, the second needing step 1's cookie.

    GET /info-pub/pub/remotePubQuery.json?keyword=<ID>            -> data.perId, Set-Cookie: SESSION=...
    GET /info-pub/pub/getPerInfoBySfzh.json?sfzh=<ID>&perId=<id>  -> data.licList (needs the SESSION cookie)

Like the real platform, 持证项目 codes are not always written the same way: for some holders the Roman
numerals come as ASCII (FeII) or the whole code upper-cased.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from typing import Any

from aiohttp import web

from aggregator.models import Certificate, Department
from aggregator.sandbox.dataset import FIXED_HOLDERS, Dataset
from aggregator.sandbox.sites import Site, is_valid_today, iso, json_response

PREFIX = "/info-pub/pub/"
STEP1 = PREFIX + "remotePubQuery.json"
STEP2 = PREFIX + "getPerInfoBySfzh.json"
MAX_SESSIONS = 10_000
_FIXED_IDS = frozenset(h.id_number for h in FIXED_HOLDERS)  # the canaries keep the card's own spelling
_RENAMED = {"ryxm": "name", "sfzh": "idCardNo", "ryxb": "gender", "zsbh": "certNo", "zslb": "certType",
            "cyzl": "workCategory", "fzjg": "issueOrg", "fzjgszd": "issuePlace", "czxm": "items", "pzrq": "approveDate",
            "yxrqs": "validFrom", "yxrqz": "validTo", "validFlag": "valid"}  # fmt: skip


def written_items(cert: Certificate) -> str:
    """The 持证项目 as this holder's record happens to spell it (deterministic per holder)."""
    text = cert.operation_item or ""
    if cert.holder_id_number in _FIXED_IDS:
        return text
    variant = int((cert.holder_id_number or "0")[:17]) % 20
    if variant in (1, 2):
        text = text.replace("Ⅱ", "II").replace("Ⅳ", "IV")
    elif variant == 3:
        text = text.upper()
    return text


def licence(cert: Certificate, site: SamrSite) -> dict[str, Any]:
    issuer = cert.issuer or ""
    return {
        "ryxm": cert.holder_name,
        "sfzh": cert.holder_id_number,
        "ryxb": cert.gender,
        "zsbh": cert.number,
        "zslb": "特种设备作业人员证",
        "cyzl": cert.category,
        "fzjg": issuer,
        "fzjgszd": issuer.removesuffix("市场监督管理局"),
        "czxm": written_items(cert),
        "pzrq": iso(cert.issued_on),
        "yxrqs": iso(cert.valid_from),
        "yxrqz": iso(cert.valid_until),
        "validFlag": "1" if is_valid_today(cert, site.today) else "0",
    }


class SamrSite(Site):
    name = "samr"
    source_id = "samr_api"
    department = Department.SAMR

    def __init__(self, dataset: Dataset, **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.sessions: OrderedDict[str, set[str]] = OrderedDict()  # SESSION cookie -> perIds it looked up
        self._salt = f"samr:{dataset.seed}"

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(STEP1, self.person)
        router.add_get(STEP2, self.licences)

    def captcha_response(self) -> web.Response:
        return json_response({"success": False, "messageText": "请先完成滑块验证码验证", "data": None})

    def error_response(self, status: int, message: str) -> web.Response:
        return json_response({"success": False, "messageText": message}, status=status)

    def per_id(self, id_number: str) -> str:
        return hashlib.sha256(f"{self._salt}:{id_number}".encode()).hexdigest()[:24]

    def _session(self, request: web.Request) -> tuple[str, set[str]]:
        token = request.cookies.get("SESSION", "")
        if token not in self.sessions:
            token = secrets.token_hex(16)
            self.sessions[token] = set()
            while len(self.sessions) > MAX_SESSIONS:
                self.sessions.popitem(last=False)
        return token, self.sessions[token]

    async def person(self, request: web.Request) -> web.Response:
        keyword = request.query.get("keyword", "").strip().upper()
        token, seen = self._session(request)
        certs = self.by_number.get(keyword) or self.by_id.get(keyword) or []
        if not keyword:
            response = json_response({"success": False, "messageText": "请输入查询条件", "data": None})
        elif not certs:
            response = json_response({"success": True, "messageText": "未查询到该人员的持证信息", "data": None})
        else:
            c = certs[0]
            per_id = self.per_id(c.holder_id_number or keyword)
            seen.add(per_id)
            data = {"ryxm": c.holder_name, "sfzh": c.holder_id_number, "zsbh": c.number, "perId": per_id}
            response = json_response({"success": True, "messageText": "", "data": data})
        response.set_cookie("SESSION", token, path="/", httponly=True)
        return response

    async def licences(self, request: web.Request) -> web.Response:
        token = request.cookies.get("SESSION")
        seen = self.sessions.get(token or "")
        if seen is None:
            return self.error_response(401, "会话已失效")
        sfzh = request.query.get("sfzh", "").strip().upper()
        per_id = request.query.get("perId", "").strip()
        if per_id not in seen or per_id != self.per_id(sfzh):
            return json_response({"success": False, "messageText": "参数错误：人员信息不匹配", "data": None})
        rows = [licence(c, self) for c in self.by_id.get(sfzh, [])]
        if self.layout_changed(request):
            rows = [{_RENAMED[k]: v for k, v in r.items()} for r in rows]
            return json_response({"success": True, "messageText": "", "data": {"certList": rows}})
        return json_response({"success": True, "messageText": "", "data": {"licList": rows}})
