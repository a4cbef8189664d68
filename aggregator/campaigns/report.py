"""A campaign's report: discrepancy rates per stratum with 95 % Wilson intervals, every discrepancy with its
evidence, the inconclusive checks apart, a chart, and the exports (CSV and XLSX with Chinese headers).

    report = build_report(campaign, items)
    report.strata[0].text                  # '3.2 %, 95 % CI 2.3-4.3 %, n = 1,200'
    svg = rate_chart(report)               # inline SVG: one bar and interval per stratum
    columns, rows = export_rows(campaign, items)

A stratum's rate is (items with at least one discrepancy) / (items checked conclusively): inconclusive checks
are not in n, and are counted apart. The overall line pools every stratum; for a stratified sample whose
allocation is not proportional it also gives the estimate weighted by the strata's population shares (N_h / N).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from html import escape
from typing import Any

from aggregator.campaigns.checks import KIND_ZH, OUTCOME_ZH
from aggregator.campaigns.regions import PROVINCES, province_name
from aggregator.campaigns.stats import pct, rate_text, wilson
from aggregator.campaigns.store import Campaign, Item
from aggregator.models import DEPARTMENT_SHORT_NAMES, Department, field_label

REASON_ZH = {
    "no_live_source": "本部门没有可自动查询的在线数据源",
    "timeout": "数据源响应超时",
    "blocked": "数据源拒绝访问",
    "captcha": "数据源要求验证码",
    "rate_limited": "数据源限流",
    "upstream_error": "数据源出错或维护中",
    "parse_error": "数据源页面无法解析",
    "circuit_open": "数据源连续失败，暂停查询",
}


@dataclass
class StratumRate:
    stratum: str
    label: str
    population: int
    sample: int
    checked: int  # conclusive
    discrepant: int
    inconclusive: int
    pending: int
    rate: float | None
    low: float | None
    high: float | None
    text: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Report:
    campaign: dict[str, Any]
    strata: list[StratumRate]
    overall: StratumRate
    weighted_rate: float | None
    outcomes: dict[str, int]
    kinds: dict[str, int]
    inconclusive_reasons: dict[str, int]
    discrepancies: list[dict[str, Any]] = field(default_factory=list)
    inconclusive: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "finished": self.finished,
            "outcomes": self.outcomes,
            "kinds": self.kinds,
            "inconclusive_reasons": self.inconclusive_reasons,
            "overall": self.overall.as_dict(),
            "weighted_rate": self.weighted_rate,
            "strata": [s.as_dict() for s in self.strata],
            "discrepancies": self.discrepancies,
            "inconclusive": self.inconclusive,
        }


def stratum_label(campaign: Campaign, stratum: str) -> str:
    if campaign.design.stratify_by == "province" and stratum in PROVINCES:
        return f"{province_name(stratum)} ({stratum})"
    return stratum


def _rate(stratum: str, label: str, population: int, items: list[Item]) -> StratumRate:
    outcomes = Counter(i.outcome for i in items)
    checked = outcomes["agrees"] + outcomes["discrepant"]
    k = outcomes["discrepant"]
    low = high = rate = None
    if checked:
        rate = k / checked
        low, high = wilson(k, checked)
    return StratumRate(
        stratum=stratum,
        label=label,
        population=population,
        sample=len(items),
        checked=checked,
        discrepant=k,
        inconclusive=outcomes["inconclusive"],
        pending=outcomes[None],
        rate=rate,
        low=low,
        high=high,
        text=rate_text(k, checked),
    )


def build_report(campaign: Campaign, items: list[Item]) -> Report:
    by_stratum: dict[str, list[Item]] = {}
    for i in items:
        by_stratum.setdefault(i.stratum, []).append(i)
    strata = [
        _rate(s.stratum, stratum_label(campaign, s.stratum), s.population, by_stratum.get(s.stratum, []))
        for s in campaign.strata
    ]
    overall = _rate("全部", "全部 overall", campaign.population_count, items)
    weighted = None
    if campaign.design.method == "stratified" and campaign.population_count and all(
        s.rate is not None for s in strata if s.sample
    ):
        weighted = sum((s.population / campaign.population_count) * (s.rate or 0.0) for s in strata if s.sample)
    discrepancies: list[dict[str, Any]] = []
    inconclusive: list[dict[str, Any]] = []
    kinds: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for i in items:
        result = i.result or {}
        for d in result.get("discrepancies", []):
            kinds[d["kind"]] += 1
            discrepancies.append({"seq": i.seq, "stratum": i.stratum, "holder_id_number": i.holder_id_number, **d})
        if i.outcome == "inconclusive":
            why = result.get("inconclusive") or [{"reason": "unknown"}]
            for w in why:
                reasons[w.get("reason") or "unknown"] += 1
            inconclusive.append(
                {"seq": i.seq, "stratum": i.stratum, "department": i.department, "number": i.number, "why": why}
            )
    outcomes = Counter(i.outcome or "pending" for i in items)
    return Report(
        campaign=campaign.summary(),
        strata=strata,
        overall=overall,
        weighted_rate=weighted,
        outcomes={k: outcomes.get(k, 0) for k in ("agrees", "discrepant", "inconclusive", "pending")},
        kinds={k: kinds.get(k, 0) for k in KIND_ZH},
        inconclusive_reasons=dict(reasons),
        discrepancies=discrepancies,
        inconclusive=inconclusive,
        finished=bool(items) and outcomes.get("pending", 0) == 0,
    )


# --- the chart ---------------------------------------------------------------------------------------------


def rate_chart(report: Report, *, width: int = 640) -> str:
    """Inline SVG: per stratum (and overall), a bar for the rate and a line for its 95 % interval."""
    rows = [s for s in report.strata if s.sample] + [report.overall]
    label_w, right = 150, 130
    plot_w = max(width - label_w - right, 100)
    top = max([s.high or 0.0 for s in rows] + [0.05])
    scale = min(1.0, (int(top * 20) + 1) / 20)  # a round upper end: 5 %, 10 %, ...
    bar_h, gap = 18, 10
    height = 30 + len(rows) * (bar_h + gap)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
        f'style="max-width:{width + 120}px;min-width:{width - 100}px" '
        f'role="img" aria-label="各层不一致率及 95% 置信区间 discrepancy rate per stratum with 95% CI" '
        f'class="rate-chart" font-size="12">'
    ]
    for tick in range(0, 6):
        x = label_w + plot_w * tick / 5
        out.append(f'<line x1="{x:.1f}" y1="18" x2="{x:.1f}" y2="{height - 4}" stroke="#d0d7de" stroke-width="1"/>')
        out.append(f'<text x="{x:.1f}" y="12" text-anchor="middle" fill="#57606a">{pct(scale * tick / 5)} %</text>')
    for n, s in enumerate(rows):
        y = 24 + n * (bar_h + gap)
        name = s.label if len(s.label) <= 12 else s.label[:11] + "…"
        out.append(
            f'<text x="{label_w - 6}" y="{y + bar_h - 5}" text-anchor="end">{escape(name)}</text>'
        )
        if s.rate is None:
            out.append(f'<text x="{label_w + 4}" y="{y + bar_h - 5}" fill="#57606a">尚无结果 n = 0</text>')
            continue
        w = plot_w * s.rate / scale
        colour = "#0969da" if s is not report.overall else "#1f2328"
        out.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}" opacity="0.75"/>')
        lo, hi = label_w + plot_w * (s.low or 0) / scale, label_w + plot_w * (s.high or 0) / scale
        mid = y + bar_h / 2
        out.append(f'<line x1="{lo:.1f}" y1="{mid}" x2="{hi:.1f}" y2="{mid}" stroke="#cf222e" stroke-width="2"/>')
        for x in (lo, hi):
            out.append(f'<line x1="{x:.1f}" y1="{y + 3}" x2="{x:.1f}" y2="{y + bar_h - 3}" stroke="#cf222e" stroke-width="2"/>')
        out.append(
            f'<text x="{label_w + plot_w + 6}" y="{y + bar_h - 5}">{pct(s.rate)} % (n = {s.checked:,})</text>'
        )
    out.append("</svg>")
    return "".join(out)


# --- the exports -------------------------------------------------------------------------------------------

EXPORT_COLUMNS = (
    "序号",
    "分层",
    "发证部门",
    "证书编号",
    "持证人身份证号",
    "姓名",
    "上报季度",
    "核查结果",
    "不一致类型",
    "字段",
    "上报值",
    "在线值",
    "数据源",
    "查询时间",
    "说明",
)
EXPORT_WIDTHS = (6, 16, 12, 24, 20, 10, 10, 10, 12, 14, 16, 16, 14, 26, 30)


def _field_name(name: str | None) -> str:
    if not name or name == "number":
        return "证书编号" if name == "number" else ""
    if name == "status":
        return "状态"
    try:
        return field_label(name, english=False)
    except KeyError:
        return name


def _department(value: str | None) -> str:
    try:
        return DEPARTMENT_SHORT_NAMES[Department(value)] if value else ""
    except ValueError:
        return value or ""


def export_rows(campaign: Campaign, items: list[Item]) -> tuple[tuple[str, ...], list[list[object]]]:
    """One row per discrepancy, and one per item without any (agrees, inconclusive or not checked yet)."""
    rows: list[list[object]] = []
    for i in items:
        result = i.result or {}
        base = [
            i.seq + 1,
            stratum_label(campaign, i.stratum),
            _department(i.department),
            i.number,
            i.holder_id_number or "",
            i.upload.get("holder_name") or "",
            i.upload.get("quarter") or "",
            OUTCOME_ZH.get(i.outcome or "", "待核查"),
        ]
        found = result.get("discrepancies", [])
        for d in found:
            note = ""
            if d["kind"] == "missing_from_upload":
                live = d.get("live_certificate") or {}
                note = f"{_department(d.get('department'))} {d.get('live')} {live.get('operation_item') or ''}".strip()
            rows.append(
                [
                    *base,
                    KIND_ZH.get(d["kind"], d["kind"]),
                    _field_name(d.get("field")),
                    "" if d.get("upload") is None else d.get("upload"),
                    "" if d.get("live") is None else d.get("live"),
                    d.get("source") or "",
                    d.get("fetched_at") or "",
                    note,
                ]
            )
        if not found:
            why = "；".join(REASON_ZH.get(w.get("reason") or "", w.get("reason") or "") for w in result.get("inconclusive", []))
            rows.append([*base, "", "", "", "", "", i.checked_at.isoformat() if i.checked_at else "", why])
    return EXPORT_COLUMNS, rows
