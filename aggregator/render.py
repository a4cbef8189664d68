"""Terminal rendering of answers and catalogues (rich). Pure presentation: no lookups here."""

from __future__ import annotations

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from aggregator.config import RecognitionCatalogue, Settings
from aggregator.models import (
    CERT_KIND_NAMES,
    DEPARTMENT_NAMES,
    DEPARTMENT_SHORT_NAMES,
    DETAIL_FIELDS,
    VERDICT_LABELS,
    Answer,
    Department,
    Outcome,
    Verdict,
    field_label,
)
from aggregator.numbers import SKILL_LEVELS

_VERDICT_COLOURS = {
    Verdict.VALID: "bold white on green",
    Verdict.EXPIRED: "bold white on dark_orange",
    Verdict.SUSPENDED: "bold white on red",
    Verdict.REVOKED: "bold white on red",
    Verdict.NOT_FOUND: "bold white on grey37",
    Verdict.NAME_MISMATCH: "bold white on red",
    Verdict.INCONCLUSIVE: "bold black on yellow",
}
VERDICT_STYLE = {v: (f"{zh} {en.upper()}", _VERDICT_COLOURS[v]) for v, (zh, en) in VERDICT_LABELS.items()}
OUTCOME_STYLE = {
    Outcome.FOUND: "green",
    Outcome.NOT_FOUND: "white",
    Outcome.UNAVAILABLE: "red",
    Outcome.MANUAL: "cyan",
    Outcome.SKIPPED: "grey50",
}
FIELD_LABELS = [(name, field_label(name, english=False)) for name in DETAIL_FIELDS]


def answer_card(a: Answer) -> Panel:
    label, style = VERDICT_STYLE[a.verdict]
    parts: list = [Text.assemble((f" {label} ", style), "  ", a.query.number)]
    if a.query.formats:
        parts.append(Text("编号格式: " + "；".join(f.label for f in a.query.formats), style="dim"))
    parts.append(Text(a.verdict_reason))
    for c in a.certificates:
        t = Table(show_header=False, box=None, padding=(0, 1))
        t.add_column(style="dim")
        t.add_column()
        t.add_row("证书", f"{CERT_KIND_NAMES[c.kind]} {c.number}  [{DEPARTMENT_NAMES[c.department]}]")
        t.add_row("状态", f"{c.effective.value}" + (f"（{c.status_text}）" if c.status_text else ""))
        for field, name in FIELD_LABELS[:-1]:
            v = getattr(c, field)
            if v:
                t.add_row(name, str(v))
        if c.name_matches is not None:
            t.add_row("姓名核对", "一致 match" if c.name_matches else "不符 mismatch")
        t.add_row("来源", ", ".join(c.sources))
        parts.append(Panel(t, expand=False))
    if a.conflicts:
        t = Table(title="来源之间的差异 conflicts", title_justify="left")
        for col in ("证书", "字段", "各来源的值", "采用"):
            t.add_column(col)
        for c in a.conflicts:
            t.add_row(c.certificate, c.field, "\n".join(f"{v.source}: {v.value}" for v in c.values), c.chosen_source)
        parts.append(t)
    for r in a.recognitions:
        if not r.eligible:
            parts.append(Text(f"互通互认: {r.certificate} {r.operation or ''} — {r.reason}", style="yellow"))
            continue
        lines = [f"互通互认 (对应目录): {r.operation or r.certificate}"]
        for e in r.exemptions:
            lines.append(f"  序号{e.entry} → {DEPARTMENT_NAMES[e.target_department]} {e.target}: {e.waived}" + (f"（{e.note}）" if e.note else ""))
        for s in r.skill_levels:
            lines.append(f"  视同 {s.occupation} {s.counts_as}，可报考 {s.may_apply_for}")
        parts.append(Text("\n".join(lines), style="green"))
    st = Table(title="数据源 sources", title_justify="left")
    for col in ("来源", "方式", "结果", "耗时", "数据截至", "说明"):
        st.add_column(col)
    for s in a.sources:
        outcome = s.outcome.value + (f"/{s.error_kind.value}" if s.error_kind else "")
        if s.from_cache:
            outcome += " (cache, stale)" if s.stale else " (cache)"
        as_of = s.data_as_of.strftime("%Y-%m-%d %H:%M") if s.data_as_of else ""
        note = s.link.url if s.link else (s.message or "")
        st.add_row(s.source, s.mode.value, Text(outcome, style=OUTCOME_STYLE[s.outcome]), f"{s.elapsed_ms:.0f} ms", as_of, note)
    parts.append(st)
    return Panel(Group(*parts), title="certq", expand=False)


def source_rows(settings: Settings) -> list[dict[str, str]]:
    """One row per source, as `certq sources` lists it (also for --json and --csv)."""
    rows = []
    for s in settings.sources:
        if s.mode.value == "records":
            where, state = "(records store)", "enabled"
        elif s.endpoint is None:
            where, state = f"(set {s.endpoint_env})" if s.endpoint_env else "(no endpoint)", "not configured"
        else:
            where, state = s.endpoint, "enabled"
        rows.append(
            {
                "id": s.id,
                "department": s.department.value,
                "mode": s.mode.value,
                "formats": ",".join(s.patterns),
                "endpoint": where,
                "timeout": f"{s.timeout_s:g}s",
                "state": state if s.enabled else "disabled",
            }
        )
    return rows


def sources_table(settings: Settings) -> Table:
    t = Table(title=f"sources ({settings.config_dir})", title_justify="left")
    # Nothing a person must type back is cut: ids never wrap, addresses and formats fold.
    for col, fold in (("id", False), ("部门", False), ("方式", False), ("编号格式", True), ("地址", True),
                      ("超时", False), ("状态", False)):  # fmt: skip
        t.add_column(col, overflow="fold", no_wrap=not fold)
    words = {"enabled": "启用", "not configured": "未配置", "disabled": "停用"}
    for row in source_rows(settings):
        cells = {**row, "department": DEPARTMENT_SHORT_NAMES[Department(row["department"])], "state": words[row["state"]]}
        t.add_row(*(escape(v) for v in cells.values()))
    return t


def catalogue_table(cat: RecognitionCatalogue) -> Table:
    t = Table(title=f"职业技能证书对应目录 — {cat.notice}", title_justify="left", show_lines=True)
    for col in ("序号", "持有", "可申请", "免予", "视同 / 可报考", "依据"):
        t.add_column(col, overflow="fold")
    for e in cat.entries:
        h = e.holder
        held = " / ".join(x for x in (DEPARTMENT_NAMES[h.department], h.category, h.operation_item) if x)
        skill = f"{e.skill.occupation} {SKILL_LEVELS[e.skill.counts_as]} / {SKILL_LEVELS[e.skill.may_apply_for]}" if e.skill else ""
        target = f"{DEPARTMENT_NAMES[e.target.department]} {e.target.certificate}" + (f"（{e.target.note}）" if e.target.note else "")
        t.add_row(str(e.entry), held, target, e.target.exemption, skill, e.basis)
    return t


def print_card(console: Console, a: Answer) -> None:
    console.print(answer_card(a))


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: object) -> str:
    """A CSV cell a spreadsheet will not run as a formula: a leading ' before = + - @ tab or CR."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def print_rows(rows: list[dict[str, object]], *, as_json: bool) -> None:
    """A listing as JSON (a list of objects) or CSV (a header line, then a line a row; formula injection
    neutralised), on standard output: for --json and --csv."""
    import csv
    import json
    import sys

    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=2, default=str))
        return
    writer = csv.writer(sys.stdout)
    if rows:
        writer.writerow(rows[0].keys())
    for row in rows:
        writer.writerow([neutralise(v) for v in row.values()])
