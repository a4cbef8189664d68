"""Where a certificate belongs: its province and city, read from its number or from the holder's ID number.

    region_of("京A012019000939", None)           # Region(province="11", city="京A")
    region_of("T110105199003071239", None)      # Region(province="11", city="1101")
    province_name("44")                          # "广东"

The number decides when it says where it was issued (a MOHURD number's province abbreviation and city letter,
a MOHRSS number's province digits, an older 职业资格证书's province and city); otherwise (MEM's T+ID and SAMR's
ID numbers, or a number of no known format) the holder's ID number's region code (GB/T 2260: two digits for
the province, four for the city) does. Provinces are their two-digit GB/T 2260 codes everywhere; a city is
the ID's four digits, or a MOHURD number's abbreviation and letter ("京A"), or a 职业资格证书's four digits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

#: GB/T 2260 province codes, with the abbreviations MOHURD numbers start with.
PROVINCES: dict[str, str] = {
    "11": "北京", "12": "天津", "13": "河北", "14": "山西", "15": "内蒙古",
    "21": "辽宁", "22": "吉林", "23": "黑龙江",
    "31": "上海", "32": "江苏", "33": "浙江", "34": "安徽", "35": "福建", "36": "江西", "37": "山东",
    "41": "河南", "42": "湖北", "43": "湖南", "44": "广东", "45": "广西", "46": "海南",
    "50": "重庆", "51": "四川", "52": "贵州", "53": "云南", "54": "西藏",
    "61": "陕西", "62": "甘肃", "63": "青海", "64": "宁夏", "65": "新疆", "66": "新疆生产建设兵团",
    "71": "台湾", "81": "香港", "82": "澳门",
}  # fmt: skip
ABBREVIATIONS: dict[str, str] = {
    "京": "11", "津": "12", "冀": "13", "晋": "14", "蒙": "15", "辽": "21", "吉": "22", "黑": "23",
    "沪": "31", "苏": "32", "浙": "33", "皖": "34", "闽": "35", "赣": "36", "鲁": "37", "豫": "41",
    "鄂": "42", "湘": "43", "粤": "44", "桂": "45", "琼": "46", "渝": "50", "川": "51", "贵": "52",
    "黔": "52", "云": "53", "滇": "53", "藏": "54", "陕": "61", "秦": "61", "甘": "62", "陇": "62",
    "青": "63", "宁": "64", "新": "65", "兵": "66", "台": "71", "港": "81", "澳": "82",
}  # fmt: skip


@dataclass(frozen=True)
class Region:
    province: str | None  # two-digit GB/T 2260 code
    city: str | None


def province_name(code: str | None) -> str:
    """"广东" for "44"; the code itself when unknown; "未知" for None."""
    if code is None:
        return "未知"
    return PROVINCES.get(code, code)


def _id_region(id_number: str | None) -> Region | None:
    if id_number and len(id_number) in (15, 18):
        return Region(id_number[:2], id_number[:4])
    return None


def region_of(number: str, holder_id_number: str | None) -> Region:
    """The certificate's province and city (see the module docstring), read by the shape of the number (the
    records were validated on import). `province_sql` and `city_sql` are the same rules as SQL."""
    n, h = number, holder_id_number
    if len(n) == 14 and n[0] in ABBREVIATIONS:  # MOHURD: province abbreviation + city letter
        return Region(ABBREVIATIONS[n[0]], n[:2])
    if len(n) == 22 and n[0] in "YS":  # MOHRSS skill level: the province at 6-7; the holder's city if there
        return Region(n[5:7], h[:4] if h and h[:2] == n[5:7] else None)
    if len(n) == 16:  # MOHRSS 职业资格证书: year, province, city
        return Region(n[2:4], n[2:6])
    if len(n) == 19 and n[0] == "T":  # MEM: T + the holder's ID number
        return Region(n[1:3], n[1:5])
    return _id_region(n) or _id_region(h) or Region(None, None)


def _shape(number: Any) -> tuple[Any, Any]:
    return sa.func.length(number), sa.func.substr(number, 1, 1)


def province_sql(number: Any, holder: Any) -> Any:
    """`region_of(...).province` as a SQL expression over the number and holder ID columns (NULL: unknown)."""
    length, first = _shape(number)
    return sa.case(
        (sa.and_(length == 14, first.in_(list(ABBREVIATIONS))), sa.case(ABBREVIATIONS, value=first)),
        (sa.and_(length == 22, first.in_(["Y", "S"])), sa.func.substr(number, 6, 2)),
        (length == 16, sa.func.substr(number, 3, 2)),
        (sa.and_(length == 19, first == "T"), sa.func.substr(number, 2, 2)),
        (length.in_([15, 18]), sa.func.substr(number, 1, 2)),
        (sa.func.length(holder).in_([15, 18]), sa.func.substr(holder, 1, 2)),
        else_=sa.null(),
    )


def city_sql(number: Any, holder: Any) -> Any:
    """`region_of(...).city` as a SQL expression (NULL: unknown)."""
    length, first = _shape(number)
    return sa.case(
        (sa.and_(length == 14, first.in_(list(ABBREVIATIONS))), sa.func.substr(number, 1, 2)),
        (
            sa.and_(length == 22, first.in_(["Y", "S"])),
            sa.case(
                (sa.func.substr(holder, 1, 2) == sa.func.substr(number, 6, 2), sa.func.substr(holder, 1, 4)),
                else_=sa.null(),
            ),
        ),
        (length == 16, sa.func.substr(number, 3, 4)),
        (sa.and_(length == 19, first == "T"), sa.func.substr(number, 2, 4)),
        (length.in_([15, 18]), sa.func.substr(number, 1, 4)),
        (sa.func.length(holder).in_([15, 18]), sa.func.substr(holder, 1, 4)),
        else_=sa.null(),
    )
