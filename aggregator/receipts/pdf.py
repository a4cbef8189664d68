"""A receipt as a PDF (A4) that a person can file or print: the verdict, the certificates as the issuing role saw
them, every source's outcome and data date, the recognitions, and a QR code that opens the verify page.

    data = render_pdf(credential, verify_url=url, kid=kid, font=find_font(settings))    # bytes

The Chinese text needs a CJK font embedded in the PDF (subset: only the glyphs used, a few dozen KB). It comes
from an installed package, never from the network: Debian's `fonts-wqy-microhei` (WenQuanYi Micro Hei, which CI
already installs for the browser screenshots: one 5 MB file covering GB 18030's common characters and the
rarer ones of names, such as 堃 and 赟), or another installed CJK font named by CERTQ_RECEIPT_FONT. A PyPI
package with a CJK font would be 10-20 MB per weight for no better coverage. No font: `ReceiptFontMissing`,
naming the places looked at and the package to install.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from aggregator.errors import register
from aggregator.models import CERT_KIND_NAMES, DEPARTMENT_NAMES, VERDICT_LABELS, CertKind, Department, Verdict

# Installed CJK fonts, by Debian package, in order of preference (face 0 of a collection is the regular one).
FONT_CANDIDATES = (
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),  # fonts-wqy-microhei
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),  # fonts-wqy-zenhei
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),  # fonts-noto-cjk
)
BEIJING = timezone(timedelta(hours=8))
STATUS_WORDS = {
    "valid": "有效 valid",
    "expired": "已过期 expired",
    "suspended": "暂扣 suspended",
    "revoked": "吊销/撤销 revoked",
    "unknown": "状态不明 unknown",
}
OUTCOME_WORDS = {
    "found": "查到 found",
    "not_found": "未查到 not found",
    "unavailable": "不可用 unavailable",
    "manual": "需人工查询 by hand",
    "skipped": "未询问 skipped",
}
VERDICT_COLOURS = {"valid": (21, 115, 56), "expired": (160, 98, 0), "inconclusive": (90, 90, 90), "not_found": (90, 90, 90)}
BAD_COLOUR = (178, 34, 34)


class ReceiptFontMissing(Exception):
    """No CJK font to write a receipt's PDF with."""

    def __init__(self, looked: str) -> None:
        super().__init__(looked)
        self.looked = looked


register(
    ReceiptFontMissing, 503, 69, "pdf-font-missing",
    "缺少中文字体，无法生成 PDF 回执（已查找：{exc.looked}；请安装 Debian 软件包 fonts-wqy-microhei 或设置 CERTQ_RECEIPT_FONT）",
    "no CJK font for the receipt PDF (looked at {exc.looked}); install Debian's fonts-wqy-microhei or set CERTQ_RECEIPT_FONT",
)  # fmt: skip


def find_font(configured: Path | None = None) -> Path:
    """The font file to embed: `configured` (CERTQ_RECEIPT_FONT) if given, else the first installed candidate."""
    candidates = (configured,) if configured is not None else FONT_CANDIDATES
    for path in candidates:
        if path is not None and path.is_file():
            return path
    raise ReceiptFontMissing(", ".join(str(p) for p in candidates))


#: The cut-down fonts, smallest first: the 3,755 hanzi of GB 2312's first level (the common ones: almost every name,
#: place and occupation), then all 6,763 of GB 2312. Each loads and subsets in a fraction of the full font's time.
TIERS = ("common", "gb2312")


def _gb2312(tier: str) -> set[int]:
    """The characters of GB 2312 (its symbols, and the hanzi of level 1 for "common", of both levels else)."""
    out: set[int] = set()
    last_row = 0xD7 if tier == "common" else 0xF7
    for hi in range(0xA1, last_row + 1):
        for lo in range(0xA1, 0xFF):
            try:
                out.add(ord(bytes((hi, lo)).decode("gb2312")))
            except UnicodeDecodeError:
                continue
    return out


@functools.lru_cache(maxsize=8)
def lean_font(path: Path, cache_dir: Path | None = None, tier: str = "gb2312") -> tuple[Path, frozenset[int]]:
    """The font cut down to GB 2312, ASCII, CJK and full-width punctuation and every character of this module's
    own labels, without glyph names: a file that loads in a fraction of the full font's time (the full one is
    ~30,000 glyphs). A receipt with a character outside it (a rare name) uses the full font.

    Cutting takes seconds, so it is done once per process, and with `cache_dir` (the home's `cache/fonts`) once
    per font file: the cut font and the characters it covers are kept there under a key of the font file (path,
    size, mtime), this module's text and fontTools' version, so later processes load it at once."""
    if cache_dir is not None:
        try:
            key = _cache_key(path)
            stem = f"{path.stem}-{tier}-{key}"
            ttf, covers_file = cache_dir / f"{stem}.ttf", cache_dir / f"{stem}.json"
            if ttf.is_file() and covers_file.is_file():
                return ttf, frozenset(json.loads(covers_file.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            cache_dir = None  # unreadable cache: build as if there were none
    font = _cut(path, tier)
    covers = frozenset(font.getBestCmap())
    if cache_dir is not None:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            _replace(ttf, font.save)  # the font first: a covers file is only ever beside a whole font
            _replace(covers_file, lambda p: Path(p).write_text(json.dumps(sorted(covers)), encoding="utf-8"))
            return ttf, covers
        except OSError:
            pass  # a read-only home: this process's own copy below
    out = Path(tempfile.mkdtemp(prefix="certq-receipt-font-")) / f"{path.stem}-{tier}.ttf"
    font.save(str(out))
    return out, covers


def _cache_key(path: Path) -> str:
    import fontTools

    st = path.stat()
    h = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{fontTools.version}|".encode())
    h.update(Path(__file__).read_bytes())  # what is kept (and the labels) is decided here
    return h.hexdigest()[:16]


def _replace(target: Path, write: Any) -> None:
    """Write `target` through a temporary file beside it and rename it into place (atomic: processes building
    the same font at once each leave a whole file)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        write(str(tmp))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _cut(path: Path, tier: str) -> Any:
    from fontTools import subset, ttLib

    font = ttLib.TTFont(str(path), fontNumber=0, lazy=False)
    has = set(font.getBestCmap())
    wanted = _gb2312(tier) | set(range(0x20, 0x7F)) | set(range(0x3000, 0x3040)) | set(range(0xFF00, 0xFFF0))
    wanted |= {ord(c) for c in Path(__file__).read_text(encoding="utf-8")}
    options = subset.Options()
    options.glyph_names = False
    options.notdef_outline = True
    options.name_IDs = ["*"]
    options.drop_tables += ["FFTM"]
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=wanted & has)
    subsetter.subset(font)
    font["post"].formatType = 3.0  # no glyph name table to parse at every load
    return font


def font_for(credential: Mapping[str, Any], font: Path, *extra: str, cache_dir: Path | None = None) -> Path:
    """The smallest cut-down font that has every character the receipt uses (`TIERS`), else the full font."""
    text = {c for c in json.dumps(credential, ensure_ascii=False) + "".join(extra) if c.isprintable()}
    for tier in TIERS:
        try:
            lean, covers = lean_font(font, cache_dir, tier)
        except Exception:  # noqa: BLE001 - an unusual font file: the full one still works, only slower
            return font
        if all(ord(c) in covers for c in text):
            return lean
    return font


def _when(value: Any) -> str:
    if not value:
        return "—"
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        return moment.strftime("%Y-%m-%d")
    return moment.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M") + " 北京时间"


def _verdict(value: str) -> str:
    try:
        zh, en = VERDICT_LABELS[Verdict(value)]
    except ValueError:
        return value
    return f"{zh} {en}"


def _kind(value: Any) -> str:
    try:
        return CERT_KIND_NAMES[CertKind(value)]
    except ValueError:
        return str(value or "")


def _department(value: Any) -> str:
    try:
        return DEPARTMENT_NAMES[Department(value)]
    except ValueError:
        return str(value or "")


def qr_png(url: str) -> bytes:
    """The verify URL as a QR code (error correction M, with a quiet zone), as PNG bytes."""
    import segno

    out = io.BytesIO()
    segno.make_qr(url, error="m").save(out, kind="png", scale=8, border=4)
    return out.getvalue()


class _Receipt:
    """One PDF being written (fpdf2), with the few layout helpers a receipt needs."""

    def __init__(self, font: Path) -> None:
        from fpdf import FPDF

        self.pdf = FPDF(orientation="portrait", unit="mm", format="A4")
        self.pdf.set_margins(16, 14, 16)
        self.pdf.set_auto_page_break(auto=True, margin=16)
        number = 0 if font.suffix.lower() in (".ttc", ".otc") else None
        if number is None:
            self.pdf.add_font("cjk", fname=str(font))
        else:
            self.pdf.add_font("cjk", fname=str(font), collection_font_number=number)
        self.pdf.add_page()
        self.width = self.pdf.w - self.pdf.l_margin - self.pdf.r_margin

    def text(self, text: str, *, size: float = 10, colour: tuple[int, int, int] = (0, 0, 0), h: float = 5.2,
             w: float | None = None) -> None:  # fmt: skip
        from fpdf.enums import WrapMode, XPos, YPos

        self.pdf.set_font("cjk", size=size)
        self.pdf.set_text_color(*colour)
        self.pdf.multi_cell(w or self.width, h, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT, wrapmode=WrapMode.CHAR)

    def heading(self, text: str) -> None:
        self.pdf.ln(2.5)
        self.text(text, size=12.5, h=7)
        y = self.pdf.get_y()
        self.pdf.set_draw_color(200, 200, 200)
        self.pdf.line(self.pdf.l_margin, y, self.pdf.l_margin + self.width, y)
        self.pdf.ln(1.5)

    def rows(self, pairs: list[tuple[str, str]], *, label_w: float = 46) -> None:
        from fpdf.enums import WrapMode, XPos, YPos

        for label, value in pairs:
            self.pdf.set_font("cjk", size=9.5)
            self.pdf.set_text_color(95, 95, 95)
            y = self.pdf.get_y()
            self.pdf.multi_cell(label_w, 5.2, label, new_x=XPos.RIGHT, new_y=YPos.TOP, wrapmode=WrapMode.CHAR)
            self.pdf.set_text_color(0, 0, 0)
            self.pdf.set_xy(self.pdf.l_margin + label_w, y)
            self.pdf.multi_cell(self.width - label_w, 5.2, value or "—", new_x=XPos.LMARGIN, new_y=YPos.NEXT,
                                wrapmode=WrapMode.CHAR)  # fmt: skip

    def output(self) -> bytes:
        return bytes(self.pdf.output())


def render_pdf(credential: Mapping[str, Any], *, verify_url: str, kid: str, font: Path,
               superseded: str | None = None, font_cache: Path | None = None) -> bytes:  # fmt: skip
    """The PDF of a receipt's credential. `superseded`: a line saying since when it is out of date, if it is.
    `font_cache`: where the cut-down font is kept between processes (`lean_font`)."""
    subject = credential.get("credentialSubject") or {}
    verdict = str(subject.get("verdict") or "")
    doc = _Receipt(font_for(credential, font, verify_url, kid, superseded or "", cache_dir=font_cache))
    pdf = doc.pdf

    qr_size = 34.0
    pdf.image(io.BytesIO(qr_png(verify_url)), x=pdf.w - pdf.r_margin - qr_size, y=12, w=qr_size, h=qr_size)
    text_w = doc.width - qr_size - 4
    doc.text("证书核验回执", size=21, h=10, w=text_w)
    doc.text("Certificate check receipt · certq 职业技能证书一网通查", size=10, colour=(90, 90, 90), w=text_w)
    pdf.ln(3)
    colour = VERDICT_COLOURS.get(verdict, BAD_COLOUR)
    doc.text(f"结论 Verdict：{_verdict(verdict)}", size=16, h=8, colour=colour, w=text_w)
    doc.text(str(subject.get("verdict_reason") or ""), size=9.5, w=text_w)
    pdf.set_y(max(pdf.get_y(), 12 + qr_size + 2))
    doc.text("扫描二维码打开核验页，查看签名是否有效、是否过期或已被新的查询结果取代。"
             "Scan the code to open the verify page.", size=8.5, colour=(90, 90, 90))  # fmt: skip
    if superseded:
        pdf.ln(1)
        doc.text(superseded, size=10, colour=BAD_COLOUR)

    query = subject.get("query") or {}
    view = subject.get("view") or {}
    name_check = "未提供姓名 no name given"
    if query.get("name_given"):
        name_check = {"checked": "已核对 checked", "not_checked": "未核对（次数已用完） not checked"}.get(
            str(query.get("name_check")), "已提供 given"
        )
    doc.heading("回执信息 Receipt")
    doc.rows(
        [
            ("回执编号 Receipt", str(credential.get("id") or "").rsplit("/", 1)[-1]),
            ("签发时间 Issued", _when(credential.get("validFrom"))),
            ("有效期至 Valid until", _when(credential.get("validUntil"))),
            ("查询编号 Number asked", str(query.get("number") or "")),
            ("姓名核对 Name", name_check),
            ("查询时间 Answered", _when(subject.get("answered_at"))),
            ("视图 View", f"{view.get('role', '')}{'（已脱敏 masked）' if view.get('masked') else '（完整 full）'}"),
            ("核验网址 Verify at", verify_url),
        ]
    )

    # the certificate asked about first, the holder's other certificates (found through the ID number) after it
    certificates = sorted(subject.get("certificates") or [], key=lambda c: c.get("matched_by") == "holder")
    doc.heading(f"证书 Certificates（{len(certificates)}）")
    if not certificates:
        doc.text("无 none", size=9.5)
    for i, c in enumerate(certificates, start=1):
        status = STATUS_WORDS.get(str(c.get("effective") or c.get("status")), str(c.get("effective") or ""))
        bad = str(c.get("effective")) in ("suspended", "revoked")
        doc.text(f"{i}. {c.get('number', '')} · {_kind(c.get('kind'))} · {_department(c.get('department'))}",
                 size=10.5, h=6)  # fmt: skip
        item = " / ".join(str(x) for x in (c.get("category"), c.get("operation_item"), c.get("level")) if x)
        span = f"{c.get('valid_from') or '—'} 至 {c.get('valid_until') or '—'}"
        rows = [
            ("状态 Status", status + ("  ✕" if bad else "")),
            ("姓名 Name", str(c.get("holder_name") or "—")),
            ("类别/项目 Item", item),
            ("发证机关 Issuer", str(c.get("issuer") or "")),
            ("有效期 Valid", span),
            ("数据来源 Sources", "、".join(c.get("sources") or [])),
        ]
        if c.get("matched_by") == "holder":
            rows.append(("说明 Note", "同一持证人的其他证书 another certificate of the same holder"))
        doc.rows(rows)
        pdf.ln(1)

    doc.heading("数据源 Sources")
    for s in subject.get("sources") or []:
        outcome = OUTCOME_WORDS.get(str(s.get("outcome")), str(s.get("outcome")))
        if s.get("error_kind"):
            outcome += f"（{s['error_kind']}）"
        if s.get("stale"):
            outcome += " · 上次结果 last known"
        as_of = _when(s.get("data_as_of") or s.get("fetched_at"))
        doc.rows([(str(s.get("source")), f"{outcome} · 数据截至 as of {as_of}")], label_w=44)

    recognitions = list(subject.get("recognitions") or [])
    if recognitions:
        doc.heading("互认 Recognitions")
        for r in recognitions:
            if r.get("eligible"):
                targets = "；".join(f"{e.get('target')}（{e.get('waived')}）" for e in r.get("exemptions") or [])
                levels = "；".join(f"{k.get('occupation')} {k.get('counts_as')}" for k in r.get("skill_levels") or [])
                what = "；".join(x for x in (targets, levels) if x) or "可互认 eligible"
            else:
                what = f"不适用 not eligible：{r.get('reason') or ''}"
            doc.rows([(str(r.get("certificate") or ""), what)], label_w=44)

    pdf.ln(4)
    doc.text(
        f"本回执由 certq 以 Ed25519 电子签名（密钥 {kid}，公钥见 /.well-known/jwks.json）；内容为签发时的查询结果，"
        "证书的最新状态以核验页和发证机关为准。This receipt is signed (Ed25519); it states what certq found when it "
        "was issued. The verify page says whether it still holds.",
        size=8,
        colour=(90, 90, 90),
        h=4.4,
    )
    return doc.output()
