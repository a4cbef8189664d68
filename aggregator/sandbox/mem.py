"""MEM 应急管理部 sandbox site (`mem_api`): JSON `code`/`msg`/`data`, current and history records by ID number.

POST /prod-api/certsearch/certInfo/netQuery  {"idCard": "110105199003071239"}
-> {"code": 200, "msg": "查询成功", "data": [{"xm": "张伟", "zsbh": "T110105199003071239", ...}]}
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from aiohttp import web

from aggregator.models import Certificate, CertStatus, Department
from aggregator.sandbox.dataset import Dataset
from aggregator.sandbox.sites import Site, index, iso, json_response

PATH = "/prod-api/certsearch/certInfo/netQuery"
MEM_STATUS_TEXTS = {"有效", "暂扣", "吊销", "撤销", "注销", "过期"}
_STATUS_TEXT = {CertStatus.VALID: "有效", CertStatus.EXPIRED: "过期", CertStatus.SUSPENDED: "暂扣",
                CertStatus.REVOKED: "吊销"}  # fmt: skip
_ID = re.compile(r"^\d{17}[\dX]$")
# layout_changed: the same records with the field names a front-end rewrite might use.
_RENAMED = {"xm": "realName", "xb": "sex", "sfzh": "idNo", "zsbh": "certNo", "zylb": "workType", "czxm": "operItem",
            "clrq": "firstDate", "yxqksrq": "startDate", "yxqjsrq": "endDate", "yfsrq": "reviewDate",
            "sjfsrq": "actualReviewDate", "qfjg": "issueOrg", "zszt": "certStatus", "sjlx": "dataType"}  # fmt: skip


def record(cert: Certificate, kind: str, today_ordinal: int) -> dict[str, Any]:
    """One MEM record as the site serves it; `kind` is "current" or "history"."""
    review = cert.next_review_on
    actual = None
    if review is not None and review.toordinal() <= today_ordinal and cert.status == CertStatus.VALID:
        actual = review - timedelta(days=int(cert.number[-4:-1]) % 60)  # reviewed some weeks before it was due
    text = cert.status_text if cert.status_text in MEM_STATUS_TEXTS else _STATUS_TEXT.get(cert.status, "注销")
    return {
        "xm": cert.holder_name,
        "xb": cert.gender,
        "sfzh": cert.holder_id_number,
        "zsbh": cert.number,
        "zylb": cert.category,
        "czxm": cert.operation_item,
        "clrq": iso(cert.issued_on),
        "yxqksrq": iso(cert.valid_from),
        "yxqjsrq": iso(cert.valid_until),
        "yfsrq": iso(review),
        "sjfsrq": iso(actual),
        "qfjg": cert.issuer,
        "zszt": text,
        "sjlx": kind,
    }


class MemSite(Site):
    name = "mem"
    source_id = "mem_api"
    department = Department.MEM

    def __init__(self, dataset: Dataset, **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.history_by_id, _ = index(dataset.live_history.get(Department.MEM, []))

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(PATH, self.net_query)

    def captcha_response(self) -> web.Response:
        return json_response({"code": 500, "msg": "验证码错误或已失效"})

    def error_response(self, status: int, message: str) -> web.Response:
        return json_response({"code": status, "msg": message}, status=status)

    async def net_query(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return json_response({"code": 500, "msg": "请求参数格式错误"})
        id_card = str(body.get("idCard") or "").strip().upper()
        if len(id_card) == 19 and id_card.startswith("T"):
            id_card = id_card[1:]
        if not _ID.match(id_card):
            return json_response({"code": 500, "msg": "身份证号格式不正确"})
        today = self.today.toordinal()
        rows = [record(c, "current", today) for c in self.by_id.get(id_card, [])]
        rows += [record(c, "history", today) for c in self.history_by_id.get(id_card, [])]
        if not rows:
            return json_response({"code": 200, "msg": "未查询到相关证书信息", "data": []})
        if self.layout_changed(request):
            rows = [{_RENAMED[k]: v for k, v in r.items()} for r in rows]
        return json_response({"code": 200, "msg": "查询成功", "data": rows})
