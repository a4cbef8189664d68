"""MOHRSS 技能人才评价证书全国联网查询 sandbox site (`mohrss_html`): a form POST answered with an HTML page.

    POST /zscx/query  CID=<ID>&name=<name>&zsbh=<number>
    -> <table class="tab_info1"> person </table> <table class="tab_info1"> one certificate </table> ...

Revoked certificates are not shown (the public query lists only certificates in force), so for them the
page says "对不起，没有查到相关信息！" while an older upload may still list them.
"""

from __future__ import annotations

from html import escape

from aiohttp import web

from aggregator.models import Certificate, CertKind, CertStatus, Department
from aggregator.sandbox.sites import Site

PATH = "/zscx/query"
NOT_FOUND = '<div id="nores_txt"><h2>对不起，没有查到相关信息！</h2></div>'
_HEAD = '<!DOCTYPE html><html><head><meta charset="utf-8"><title>技能人才评价证书全国联网查询</title></head><body>'
_FOOT = '<div class="footer">人力资源社会保障部职业技能鉴定中心</div></body></html>'


def page(inner: str) -> str:
    return f'{_HEAD}<div class="main"><div class="result">{inner}</div></div>{_FOOT}'


def _person_table(c: Certificate) -> str:
    return (
        '<table class="tab_info1">'
        f"<tr><th>姓名</th><td>{escape(c.holder_name or '')}</td><th>性别</th><td>{escape(c.gender or '')}</td></tr>"
        f'<tr><th>身份证号</th><td colspan="3">{escape(c.holder_id_number or "")}</td></tr>'
        "</table>"
    )


def _cert_rows(c: Certificate) -> list[tuple[str, str]]:
    skill = c.kind == CertKind.MOHRSS_SKILL_LEVEL
    return [
        ("职业（工种）", c.category or ""),
        ("等级", c.level or ""),
        ("证书编号", c.number),
        ("发证日期", c.issued_on.isoformat() if c.issued_on else ""),
        ("评价机构" if skill else "发证机关", c.issuer or ""),
        ("证书类型", "职业技能等级证书" if skill else "职业资格证书"),
    ]


def _cert_table(c: Certificate) -> str:
    rows = "".join(f'<tr><td class="lab">{label}</td><td>{escape(value)}</td></tr>' for label, value in _cert_rows(c))
    return f'<table class="tab_info1">{rows}</table>'


def _changed_layout(certs: list[Certificate]) -> str:
    """The same facts after a redesign: cards of definition lists, no `table.tab_info1`."""
    first = certs[0]
    cards = [f'<div class="person-card"><span class="p-name">{escape(first.holder_name or "")}</span></div>']
    for c in certs:
        items = "".join(f"<dt>{label}</dt><dd>{escape(value)}</dd>" for label, value in _cert_rows(c))
        cards.append(f'<div class="cert-card"><dl>{items}</dl></div>')
    return "".join(cards)


class MohrssSite(Site):
    name = "mohrss"
    source_id = "mohrss_html"
    department = Department.MOHRSS

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(PATH, self.query)

    def captcha_response(self) -> web.Response:
        form = (
            '<form id="queryForm" action="/zscx/query" method="post">'
            '<div class="yzm"><label>验证码</label><input type="text" name="yzm" maxlength="4">'
            '<img id="yzmImg" src="/zscx/captcha.jpg?t=1" alt="看不清，换一张"></div>'
            '<p class="tip">请输入图片中的验证码后再查询</p><button type="submit">查询</button></form>'
        )
        return web.Response(text=page(form), content_type="text/html", charset="utf-8")

    def error_response(self, status: int, message: str) -> web.Response:
        return web.Response(
            status=status, text=page(f'<div class="err">{escape(message)}</div>'), content_type="text/html"
        )

    def find(self, cid: str, number: str) -> list[Certificate]:
        if number:
            certs = self.by_number.get(number, [])
            if cid:
                certs = [c for c in certs if c.holder_id_number == cid]
        else:
            certs = self.by_id.get(cid, [])
        return [c for c in certs if c.status != CertStatus.REVOKED]

    async def query(self, request: web.Request) -> web.Response:
        form = await request.post()
        cid = str(form.get("CID") or "").strip().upper()
        number = str(form.get("zsbh") or "").strip().upper()
        if not cid and not number:
            return self.error_response(400, "请输入证书编号或身份证号")
        certs = self.find(cid, number)
        if not certs:
            inner = NOT_FOUND
        elif self.layout_changed(request):
            inner = _changed_layout(certs)
        else:
            inner = _person_table(certs[0]) + "".join(_cert_table(c) for c in certs)
        return web.Response(text=page(inner), content_type="text/html", charset="utf-8")
