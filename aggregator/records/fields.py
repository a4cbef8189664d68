"""Cell-level rules for uploaded records: header aliases, dates, status and gender texts, text cells.

    >>> normalise_header(" 身份证号码 ")
    '身份证号码'
    >>> parse_date("2024年1月2日"), parse_date("20240102"), parse_date(45293.0)
    (datetime.date(2024, 1, 2), datetime.date(2024, 1, 2), datetime.date(2024, 1, 2))

Everything here is pure and works on one value at a time; `importer` applies it to rows. A value that
cannot be read raises `FieldError`, whose `reason` is shown to the department (Chinese, then English).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from aggregator.models import DATE_FIELDS as MODEL_DATE_FIELDS
from aggregator.models import CertStatus
from aggregator.numbers import is_valid_id_number

# --- Canonical upload fields ---------------------------------------------------------------------

NUMBER = "number"
NAME = "name"
ID_NUMBER = "id_number"

#: The columns an upload may carry, in the order reports list them.
FIELDS: tuple[str, ...] = (
    NUMBER,
    NAME,
    ID_NUMBER,
    "gender",
    "category",
    "operation_item",
    "occupation",
    "level",
    "issuer",
    "issued_on",
    "valid_from",
    "valid_until",
    "next_review_on",
    "status",
)
REQUIRED: tuple[str, ...] = (NUMBER, NAME)
DATE_FIELDS: frozenset[str] = MODEL_DATE_FIELDS  # the upload columns holding dates are the certificate's

#: Header texts every department may use (on top of its own `column_aliases`).
COMMON_ALIASES: dict[str, tuple[str, ...]] = {
    NUMBER: ("证书编号", "证号", "证件号码", "证书号", "证书号码", "certificate_number", "certificate_no", "number"),
    NAME: ("姓名", "持证人", "持证人姓名", "name", "holder_name"),
    ID_NUMBER: ("身份证号", "公民身份号码", "身份证号码", "身份证", "id_number", "id_card", "identity_card"),
    "gender": ("性别", "gender", "sex"),
    "category": ("作业类别", "从业种类", "category"),
    "operation_item": ("操作项目", "准操项目", "持证项目", "作业项目", "operation_item"),
    "occupation": ("职业", "工种", "职业（工种）", "职业名称", "occupation"),
    "level": ("等级", "技能等级", "证书等级", "level"),
    "issuer": ("发证机关", "签发机关", "发证单位", "发证机构", "issuer"),
    "issued_on": ("初领日期", "发证日期", "批准日期", "领证日期", "issued_on", "issue_date"),
    "valid_from": ("有效期起", "有效期开始日期", "有效期开始", "有效期起始日期", "valid_from"),
    "valid_until": ("有效期至", "有效期止", "有效期结束日期", "有效期截止日期", "有效期结束", "valid_until"),
    "next_review_on": ("复审日期", "应复审日期", "next_review_on", "next_review"),
    "status": ("证书状态", "状态", "status"),
}

FIELD_LABELS: dict[str, str] = {
    NUMBER: "证书编号",
    NAME: "姓名",
    ID_NUMBER: "身份证号",
    "gender": "性别",
    "category": "作业类别",
    "operation_item": "操作项目",
    "occupation": "职业/工种",
    "level": "等级",
    "issuer": "发证机关",
    "issued_on": "初领日期",
    "valid_from": "有效期起",
    "valid_until": "有效期至",
    "next_review_on": "复审日期",
    "status": "证书状态",
}


class FieldError(ValueError):
    """A cell that cannot be read; `reason` says why, for the department that uploaded it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- Headers -------------------------------------------------------------------------------------

_HEADER_JUNK = re.compile(r"[\s_\-*:]+")


def normalise_header(text: object) -> str:
    """A header cell as compared with aliases: NFKC, no spaces, underscores, dashes, asterisks or colons,
    case-folded (so `Certificate Number`, `certificate_number` and `*证书编号：` all compare equal to an alias)."""
    if text is None:
        return ""
    return _HEADER_JUNK.sub("", unicodedata.normalize("NFKC", str(text))).casefold()


@dataclass
class HeaderMap:
    """Which column holds which canonical field, and what the header said besides."""

    columns: dict[str, int]  # canonical field -> column index
    labels: dict[str, str]  # canonical field -> the header text as written in the file
    unknown: list[str] = field(default_factory=list)  # header texts no alias matched (ignored)
    errors: list[str] = field(default_factory=list)  # problems that make the file unreadable


def alias_table(extra: Mapping[str, Iterable[str]] | None = None) -> dict[str, str]:
    """Normalised header text -> canonical field, from the common aliases plus a department's own."""
    table: dict[str, str] = {}
    for name in FIELDS:
        table[normalise_header(name)] = name
        for alias in COMMON_ALIASES.get(name, ()):
            table[normalise_header(alias)] = name
    for name, aliases in (extra or {}).items():
        if name not in FIELDS:
            raise ValueError(f"column_aliases: unknown field {name!r}; known: {', '.join(FIELDS)}")
        for alias in aliases:
            table[normalise_header(alias)] = name
    return table


def map_headers(header: list[object], aliases: Mapping[str, str]) -> HeaderMap:
    """Match a header row against an alias table (see `alias_table`)."""
    out = HeaderMap(columns={}, labels={})
    for index, cell in enumerate(header):
        written = "" if cell is None else str(cell).strip()
        key = normalise_header(written)
        if not key:
            continue
        name = aliases.get(key)
        if name is None:
            out.unknown.append(written)
        elif name in out.columns:
            out.errors.append(
                f"两列都对应{FIELD_LABELS[name]}：{out.labels[name]!r} 和 {written!r} "
                f"(two columns map to {name}: {out.labels[name]!r} and {written!r})"
            )
        else:
            out.columns[name] = index
            out.labels[name] = written
    for name in REQUIRED:
        if name not in out.columns:
            known = "/".join(COMMON_ALIASES[name][:3])
            out.errors.append(
                f"缺少必需的列：{FIELD_LABELS[name]}（可用列名：{known}） "
                f"(required column missing: {name}; accepted headers include {known})"
            )
    return out


# --- Dates ---------------------------------------------------------------------------------------

MIN_YEAR = 1900
MAX_YEAR = 2199
_EXCEL_EPOCH = date(1899, 12, 30)  # serial 1 = 1900-01-01, with Excel's phantom 1900-02-29 at 60
_MAX_SERIAL = 2958465  # 9999-12-31
_SEPARATED = re.compile(r"^(\d{4})\s*[-/.]\s*(\d{1,2})\s*[-/.]\s*(\d{1,2})$")
_CHINESE = re.compile(r"^(\d{4})\s*年\s*(\d{1,2})\s*月\s*(\d{1,2})\s*日?$")
_COMPACT = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_TEXT_SERIAL = re.compile(r"^(\d{5})(?:\.0+)?$")
_TIME_SUFFIX = re.compile(r"^(.*?\d)(?:[ T]+\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)$")
_DATE_FORMS = "2024-01-02, 2024/1/2, 2024.1.2, 2024年1月2日, 20240102"


def _checked(d: date, raw: object) -> date:
    if not MIN_YEAR <= d.year <= MAX_YEAR:
        raise FieldError(f"日期超出合理范围：{raw} (implausible date: {raw})")
    return d


def excel_serial_to_date(serial: float) -> date:
    """An Excel date serial (the 1900 date system; a fraction is a time of day and is dropped)."""
    if serial != serial or not 1 <= serial <= _MAX_SERIAL:  # NaN or out of range
        raise FieldError(f"不是有效的 Excel 日期序号：{serial} (not an Excel date serial: {serial})")
    days = int(serial)
    if days == 60:
        raise FieldError("Excel 日期序号 60 是不存在的 1900-02-29 (Excel serial 60 is the non-existent 1900-02-29)")
    if days < 60:
        days += 1  # before Excel's phantom leap day, serials are off by one
    return _checked(_EXCEL_EPOCH + timedelta(days=days), serial)


def _ymd(y: str, m: str, d: str, raw: str) -> date:
    try:
        return _checked(date(int(y), int(m), int(d)), raw)
    except ValueError as e:
        if isinstance(e, FieldError):
            raise
        raise FieldError(f"日期不存在：{raw} (no such date: {raw})") from None


def parse_date(value: object) -> date | None:
    """A date from any common way of writing one, or None for an empty cell.

    Text: 2024-01-02, 2024/1/2, 2024.1.2, 2024年1月2日, 20240102, optionally followed by a time of day, and
    5-digit Excel serials exported as text (45293). Spreadsheet cells: dates, datetimes and numeric serials.
    """
    if value is None:
        return None
    if isinstance(value, datetime):
        return _checked(value.date(), value)
    if isinstance(value, date):
        return _checked(value, value)
    if isinstance(value, bool):
        raise FieldError(f"不是日期：{value} (not a date: {value})")
    if isinstance(value, int | float):
        return excel_serial_to_date(float(value))
    if isinstance(value, time | timedelta):
        raise FieldError(f"只有时间没有日期：{value} (a time of day, not a date: {value})")
    text = unicodedata.normalize("NFKC", str(value)).strip()
    if not text:
        return None
    if len(text) == 10 and text[4] == "-" and text[7] == "-":
        try:
            return _checked(date.fromisoformat(text), text)
        except ValueError as e:
            if isinstance(e, FieldError):
                raise
    if m := _TIME_SUFFIX.match(text):
        text = m.group(1)
    for pattern in (_SEPARATED, _CHINESE, _COMPACT):
        if m := pattern.match(text):
            return _ymd(*m.groups(), raw=str(value))
    if m := _TEXT_SERIAL.match(text):
        return excel_serial_to_date(float(m.group(1)))
    raise FieldError(f"日期格式无法识别：{value!s}（可用格式：{_DATE_FORMS}） (not a date: {value!s}; use {_DATE_FORMS})")


# --- Status and gender ---------------------------------------------------------------------------

#: Status texts every department may use; a department's `status_map` adds to (and overrides) these.
COMMON_STATUS: dict[str, CertStatus] = {
    "有效": CertStatus.VALID,
    "正常": CertStatus.VALID,
    "在有效期内": CertStatus.VALID,
    "过期": CertStatus.EXPIRED,
    "已过期": CertStatus.EXPIRED,
    "失效": CertStatus.EXPIRED,
    "已失效": CertStatus.EXPIRED,
    "超期": CertStatus.EXPIRED,
    "暂扣": CertStatus.SUSPENDED,
    "已暂扣": CertStatus.SUSPENDED,
    "吊销": CertStatus.REVOKED,
    "已吊销": CertStatus.REVOKED,
    "撤销": CertStatus.REVOKED,
    "已撤销": CertStatus.REVOKED,
    "注销": CertStatus.REVOKED,
    "已注销": CertStatus.REVOKED,
    "其他": CertStatus.UNKNOWN,
    # MOHURD certState codes (DOMAIN.md): 01 有效, 02 暂扣, 03 吊销, 04 撤销, 05 注销, 06 失效, 99 其他
    "01": CertStatus.VALID,
    "02": CertStatus.SUSPENDED,
    "03": CertStatus.REVOKED,
    "04": CertStatus.REVOKED,
    "05": CertStatus.REVOKED,
    "06": CertStatus.EXPIRED,
    "99": CertStatus.UNKNOWN,
}
COMMON_STATUS.update({s.value: s for s in CertStatus})


def normalise_status_text(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip().casefold()


def status_table(extra: Mapping[str, CertStatus] | None = None) -> dict[str, CertStatus]:
    """Normalised status text -> canonical status: the common table plus a department's `status_map`."""
    table = {normalise_status_text(k): v for k, v in COMMON_STATUS.items()}
    for text, status in (extra or {}).items():
        table[normalise_status_text(text)] = CertStatus(status)
    return table


def map_status(text: str | None, table: Mapping[str, CertStatus]) -> CertStatus:
    """The canonical status for a status cell.

    An empty cell means `valid`: a department uploads the certificates it has issued, and a row that states
    no suspension or revocation is in force; whether it has expired is decided from `valid_until` at lookup
    time (`Certificate.effective_status`). A text nobody mapped is an error, so that a new status word is
    added to `status_map` in config/departments.toml instead of being silently misread.
    """
    if text is None or not text.strip():
        return CertStatus.VALID
    status = table.get(normalise_status_text(text))
    if status is None:
        raise FieldError(
            f"未知的证书状态：{text}（请在 config/departments.toml 的 status_map 中补充） "
            f"(unknown status {text!r}; add it to status_map in config/departments.toml)"
        )
    return status


GENDERS: dict[str, str] = {
    "男": "男",
    "男性": "男",
    "m": "男",
    "male": "男",
    "1": "男",
    "女": "女",
    "女性": "女",
    "f": "女",
    "female": "女",
    "2": "女",
}


def parse_gender(text: str | None) -> str | None:
    """男 or 女 from the usual spellings (MOHURD codes 1 and 2 included), None for an empty cell."""
    if text is None:
        return None
    key = unicodedata.normalize("NFKC", text).strip().casefold()
    if not key or key in ("未知", "unknown", "0", "9"):
        return None
    gender = GENDERS.get(key)
    if gender is None:
        raise FieldError(f"无法识别的性别：{text} (unknown gender {text!r}; use 男 or 女)")
    return gender


# --- Text cells ----------------------------------------------------------------------------------

_EXACT_FLOAT_LIMIT = 2**53  # integers up to here survive a round trip through a float
_LEGACY_ID_DIGITS = 15  # a number this long is a legacy ID number, or a 16-digit one that lost its leading 0


def cell_text(value: object, *, identifier: bool = False) -> str | None:
    """A cell as text, or None when empty.

    Spreadsheets store numbers as floats. For an identifier column (certificate or ID number) a number is
    accepted only if it converts exactly and cannot have lost a leading 0: an 18-digit ID number stored as
    a number has lost digits (1.1010519900307124e17), and a 15-digit number that is not a legacy ID number
    can only be a 16-digit certificate number whose leading 0 was dropped (0511011001300012 became
    511011001300012). A date in an identifier column is a formatting accident. All of these are errors
    telling the department to format the column as text.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        return text or None
    if isinstance(value, bool):
        return str(value).upper()
    if isinstance(value, float | int):
        if isinstance(value, float) and (value != value or not value.is_integer()):
            if identifier:
                raise FieldError(
                    f"编号列中的数字不是整数：{value}（请将该列设为文本格式） "
                    f"(a number that is not whole in an identifier column: {value}; format the column as text)"
                )
            return repr(value)
        whole = int(value)
        digits = str(abs(whole))
        if identifier and abs(whole) >= _EXACT_FLOAT_LIMIT:
            raise FieldError(
                f"编号以数字形式保存，已丢失精度：{value!r}（请将该列设为文本格式后重新导出） "
                f"(number stored as a spreadsheet number has lost digits: {value!r}; format the column as text)"
            )
        if identifier and len(digits) == _LEGACY_ID_DIGITS and not is_valid_id_number(digits):
            raise FieldError(
                f"编号以数字形式保存，开头的 0 可能已丢失：{digits}（请将该列设为文本格式后重新导出） "
                f"(number stored as a spreadsheet number may have lost its leading 0: {digits}; "
                "format the column as text)"
            )
        return str(whole)
    if isinstance(value, datetime | date | time | timedelta):
        if identifier:
            raise FieldError(
                f"编号列中出现日期：{value}（请将该列设为文本格式） "
                f"(a date in an identifier column: {value}; format the column as text)"
            )
        return value.isoformat() if not isinstance(value, timedelta) else str(value)
    return str(value).strip() or None


def split_items(operation_item: str | None) -> list[str]:
    """SAMR 持证项目 codes: split on 和 (and on commas), NFKC (Ⅱ becomes II), blanks dropped."""
    if not operation_item:
        return []
    text = unicodedata.normalize("NFKC", operation_item)
    return [part.strip() for part in re.split(r"和|[,;、]", text) if part.strip()]
