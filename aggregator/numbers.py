"""Certificate and ID numbers: normalise what people type, and tell which formats a number fits.

    >>> normalise(" t１１０１０５ 1990-0307 1239 ")
    'T110105199003071239'
    >>> [f.format for f in classify("T110105199003071239").formats]
    ['mem_t_id']

Only the ID number (GB 11643) carries a check character; certificate numbers do not. Classification is
lenient: a number that fits no format may still exist in uploaded records, so it is not an error.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass, field

from aggregator.models import DEPARTMENT_NAMES, Department, NumberFormatInfo

MAX_INPUT_LENGTH = 64

# Province abbreviations used as the first character of MOHURD numbers.
PROVINCE_ABBREVIATIONS = "京津冀晋蒙辽吉黑沪苏浙皖闽赣鲁豫鄂湘粤桂琼渝川贵黔云滇藏陕秦甘陇青宁新港澳台兵"

FORMATS: dict[str, str] = {
    "id18": "居民身份证号码",
    "id15": "居民身份证号码（15位旧号）",
    "mem_t_id": "特种作业操作证（T+身份证号）",
    "mohurd": "建筑施工特种作业操作资格证书",
    "mohrss_skill": "职业技能等级证书（22位）",
    "mohrss_qual": "职业资格证书（16位）",
}

#: Which departments issue certificates whose number has each format. A MEM card is numbered T + the
#: holder's ID number (older cards: the bare ID number); a SAMR certificate number is the ID number itself.
FORMAT_ISSUERS: dict[str, frozenset[Department]] = {
    "id18": frozenset({Department.SAMR, Department.MEM}),
    "id15": frozenset({Department.SAMR, Department.MEM}),
    "mem_t_id": frozenset({Department.MEM}),
    "mohurd": frozenset({Department.MOHURD}),
    "mohrss_skill": frozenset({Department.MOHRSS}),
    "mohrss_qual": frozenset({Department.MOHRSS}),
}

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
_SEPARATORS = re.compile(r"[\s\-‐‑‒–—―_.·•/\\]+")
_ALLOWED = re.compile(rf"^[0-9A-Z{PROVINCE_ABBREVIATIONS}]*$")

MOHURD_TRADES: dict[str, str] = {
    "01": "建筑电工",
    "02": "建筑架子工（普通脚手架）",
    "03": "建筑架子工（附着升降脚手架）",
    "04": "建筑起重司索信号工",
    "05": "建筑起重机械司机（塔式起重机）",
    "06": "建筑起重机械司机（施工升降机）",
    "07": "建筑起重机械司机（物料提升机）",
    "08": "建筑起重机械安装拆卸工（塔式起重机）",
    "09": "建筑起重机械安装拆卸工（施工升降机）",
    "10": "建筑起重机械安装拆卸工（物料提升机）",
    "11": "高处作业吊篮安装拆卸工",
    "99": "其他工种（省级认定）",
}

SKILL_LEVELS: dict[int, str] = {
    5: "五级/初级工",
    4: "四级/中级工",
    3: "三级/高级工",
    2: "二级/技师",
    1: "一级/高级技师",
}

QUALIFICATION_LEVELS: dict[str, str] = {
    "5": "初级",
    "4": "中级",
    "3": "高级",
    "2": "技师",
    "1": "高级技师",
}

_MOHURD = re.compile(rf"^([{PROVINCE_ABBREVIATIONS}])([A-Z])(\d{{2}})(\d{{4}})(\d{{6}})$")
_MOHRSS_SKILL = re.compile(r"^([YS])(\d{4})(\d{2})(\d{6})(\d{2})([1-5])(\d{6})$")
_MOHRSS_QUAL = re.compile(r"^(\d{2})(\d{2})(\d{2})(\d)(\d{3})([1-5])(\d{5})$")


class NumberError(ValueError):
    """The input cannot be a certificate or ID number; `reason` says why, for the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Classification:
    number: str
    formats: list[NumberFormatInfo] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def names(self) -> set[str]:
        return {f.format for f in self.formats}


def normalise(raw: str) -> str:
    """NFKC (full-width to half-width), upper-case, strip spaces, dashes, dots and similar separators."""
    # Upper-casing or removing a separator can leave text that NFKC would change again (a combining mark
    # meeting a new base letter): repeat until nothing changes, so that normalising twice changes nothing.
    text = raw
    for _ in range(4):
        step = _SEPARATORS.sub("", unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).upper()))
        if step == text:
            break
        text = step
    return text


def id_check_character(first17: str) -> str:
    """The GB 11643 check character for the first 17 digits of an ID number."""
    total = sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK[total % 11]


def _valid_date(yyyymmdd: str) -> bool:
    from datetime import date

    try:
        date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8]))
    except ValueError:
        return False
    return True


def _id18(number: str, out: Classification, fmt: str, label: str) -> None:
    """Classify an 18-character ID number (bare, or inside a MEM T+ID)."""
    if not re.fullmatch(r"\d{17}[\dX]", number):
        return
    birth = number[6:14]
    if not _valid_date(birth):
        return
    expected = id_check_character(number[:17])
    parts = {
        "region": number[:6],
        "birth_date": f"{birth[:4]}-{birth[4:6]}-{birth[6:]}",
        "gender": "男" if int(number[16]) % 2 else "女",
    }
    if number[17] == expected:
        out.formats.append(NumberFormatInfo(format=fmt, label=label, parts=parts))
    else:
        out.warnings.append(
            f"身份证号校验位应为 {expected}，输入为 {number[17]}：可能输错了 "
            f"(ID check character should be {expected}, not {number[17]}: probably a typo)"
        )


def classify(number: str) -> Classification:
    """Every format in `FORMATS` that an already-normalised number fits, with its decoded parts."""
    out = Classification(number)
    n = number
    if len(n) == 18:
        _id18(n, out, "id18", FORMATS["id18"])
    elif len(n) == 19 and n[0] == "T":
        _id18(n[1:], out, "mem_t_id", FORMATS["mem_t_id"])
    if len(n) == 15 and n.isdigit() and _valid_date("19" + n[6:12]):
        out.formats.append(
            NumberFormatInfo(
                format="id15",
                label=FORMATS["id15"],
                parts={"region": n[:6], "birth_date": f"19{n[6:8]}-{n[8:10]}-{n[10:12]}"},
            )
        )
    if m := _MOHURD.match(n):
        province, city, trade, year, serial = m.groups()
        out.formats.append(
            NumberFormatInfo(
                format="mohurd",
                label=FORMATS["mohurd"],
                parts={
                    "province": province,
                    "city": city,
                    "trade_code": trade,
                    "trade": MOHURD_TRADES.get(trade, f"未知工种代码 {trade}"),
                    "year": year,
                    "serial": serial,
                },
            )
        )
    if m := _MOHRSS_SKILL.match(n):
        kind, body, province, site, year, level, serial = m.groups()
        out.formats.append(
            NumberFormatInfo(
                format="mohrss_skill",
                label=FORMATS["mohrss_skill"],
                parts={
                    "body_type": "用人单位" if kind == "Y" else "社会培训评价组织",
                    "body": body,
                    "province": province,
                    "site": site,
                    "year": "20" + year,
                    "level": SKILL_LEVELS[int(level)],
                    "serial": serial,
                },
            )
        )
    if m := _MOHRSS_QUAL.match(n):
        year, province, city, body_type, body, level, serial = m.groups()
        out.formats.append(
            NumberFormatInfo(
                format="mohrss_qual",
                label=FORMATS["mohrss_qual"],
                parts={
                    "year": year,
                    "province": province,
                    "city": city,
                    "body_type": body_type,
                    "body": body,
                    "level": QUALIFICATION_LEVELS[level],
                    "serial": serial,
                },
            )
        )
    return out


def issuers(classification: Classification) -> frozenset[Department]:
    """The departments that can have issued a number of these formats (empty: it fits no known format)."""
    out: frozenset[Department] = frozenset()
    for f in classification.formats:
        out |= FORMAT_ISSUERS.get(f.format, frozenset())
    return out


def foreign_format(number: str, department: Department) -> str | None:
    """Why `department` cannot have issued `number` (already normalised), or None when it can: the number
    fits known formats and none of them is the department's, e.g. "T+身份证号 is a 应急管理部 number"."""
    c = classify(number)
    owners = issuers(c)
    if not owners or department in owners:
        return None
    label = c.formats[0].label
    names = "、".join(DEPARTMENT_NAMES[d] for d in sorted(owners))
    return (
        f"{label} 是{names}的证书编号，不能由{DEPARTMENT_NAMES[department]}上报 "
        f"(a {c.formats[0].format} number is issued by {', '.join(sorted(owners))}, not {department.value})"
    )


def parse_number(raw: str) -> Classification:
    """Normalise and classify user input, or raise `NumberError` with a reason a person can act on."""
    if raw is None or not raw.strip():
        raise NumberError("请输入证书编号 (enter a certificate number)")
    if len(raw) > MAX_INPUT_LENGTH:
        raise NumberError(f"输入过长，最多 {MAX_INPUT_LENGTH} 个字符 (input longer than {MAX_INPUT_LENGTH} characters)")
    # Every lookup parses its number (a lookup with a name twice): the same input gives the same classification,
    # kept for recent inputs (bad input raises and is not kept); each caller gets lists of its own.
    c = _parse_number_kept(raw)
    return Classification(c.number, list(c.formats), list(c.warnings))


@functools.lru_cache(maxsize=4096)
def _parse_number_kept(raw: str) -> Classification:
    number = normalise(raw)
    if not number:
        raise NumberError("请输入证书编号 (enter a certificate number)")
    if not _ALLOWED.match(number):
        bad = sorted({c for c in number if not _ALLOWED.match(c)})
        raise NumberError(
            f"证书编号中不应有这些字符：{''.join(bad)} (characters no certificate number uses: {' '.join(bad)})"
        )
    if len(number) < 6:
        raise NumberError("证书编号过短 (too short to be a certificate number)")
    return classify(number)


def is_valid_id_number(value: str) -> bool:
    """A well-formed 18-character ID with a good check character, or a 15-digit legacy ID."""
    n = normalise(value)
    c = classify(n)
    return bool(c.names & {"id18", "id15"})
