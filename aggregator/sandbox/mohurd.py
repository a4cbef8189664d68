"""MOHURD 住建部 sandbox site (`mohurd_api`): JSON after the province-to-ministry exchange schema.

GET /api/v1/certs?certNum=京A012019000939   or   ?identityCard=110105199003071239
-> {"code": "0", "message": "success", "data": [{"certNum": ..., "certState": "01", ...}]}
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from aggregator.models import Certificate, CertStatus, Department
from aggregator.sandbox.sites import Site, iso, json_response

PATH = "/api/v1/certs"
_STATE_BY_TEXT = {"有效": "01", "暂扣": "02", "吊销": "03", "撤销": "04", "注销": "05", "过期": "06", "失效": "06"}
_STATE_BY_STATUS = {CertStatus.VALID: "01", CertStatus.SUSPENDED: "02", CertStatus.REVOKED: "03",
                    CertStatus.EXPIRED: "06", CertStatus.UNKNOWN: "99"}  # fmt: skip
_RENAMED = {"certNum": "certificateNo", "name": "personName", "gender": "sex", "identityCard": "idNumber",
            "operationCategory": "tradeCode", "categoryDescription": "tradeName", "issuAuth": "issuer",
            "issuedDate": "firstIssueDate", "effectiveDate": "validFrom", "expiringDate": "validTo",
            "certState": "state"}  # fmt: skip


def cert_state(cert: Certificate) -> str:
    return _STATE_BY_TEXT.get(cert.status_text or "", _STATE_BY_STATUS[cert.status])


def record(cert: Certificate) -> dict[str, Any]:
    return {
        "certNum": cert.number,
        "name": cert.holder_name,
        "gender": "1" if cert.gender == "男" else "2",
        "identityCard": cert.holder_id_number,
        "operationCategory": cert.number[2:4],
        "categoryDescription": cert.category,
        "issuAuth": cert.issuer,
        "issuedDate": iso(cert.issued_on),
        "effectiveDate": iso(cert.valid_from),
        "expiringDate": iso(cert.valid_until),
        "certState": cert_state(cert),
    }


class MohurdSite(Site):
    name = "mohurd"
    source_id = "mohurd_api"
    department = Department.MOHURD

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get(PATH, self.certs)

    def captcha_response(self) -> web.Response:
        return json_response({"code": "1", "message": "验证码错误，请重新输入验证码", "data": None})

    def error_response(self, status: int, message: str) -> web.Response:
        return json_response({"code": "1", "message": message}, status=status)

    async def certs(self, request: web.Request) -> web.Response:
        number = request.query.get("certNum", "").strip().upper()
        id_number = request.query.get("identityCard", "").strip().upper()
        if not number and not id_number:
            return self.error_response(400, "缺少查询参数 certNum 或 identityCard")
        if number:
            found = self.by_number.get(number, [])
            if id_number:
                found = [c for c in found if c.holder_id_number == id_number]
        else:
            found = self.by_id.get(id_number, [])
        if not found:
            return json_response({"code": "0", "message": "无数据", "data": []})
        rows = [record(c) for c in found]
        if self.layout_changed(request):
            rows = [{_RENAMED[k]: v for k, v in r.items()} for r in rows]
        return json_response({"code": "0", "message": "success", "data": rows})
