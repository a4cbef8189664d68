"""The seed-independent holders: canaries and demo examples whose numbers never change.

Their ID and certificate numbers are hard-coded so that configs can name canary numbers that always exist;
their dates are relative to the upload so that a valid card stays valid whatever `today` is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from aggregator.models import CertStatus, Department
from aggregator.numbers import QUALIFICATION_LEVELS, SKILL_LEVELS
from aggregator.sandbox import tables as t
from aggregator.sandbox.cards import Cards, Holder, add_years, mem_card, mohrss_card, mohurd_card, renewed, samr_card
from aggregator.sandbox.cards import suspended as suspend


@dataclass(frozen=True)
class Example:
    """A number worth trying in the demo, what it shows, and a name to type with it (if any)."""

    number: str
    shows: str
    name: str | None = None


FIXED_HOLDERS: list[Holder] = [
    Holder("张伟", "110105199003071239", "男"),
    Holder("李建军", "220104198507153216", "男"),
    Holder("刘洋", "37010219880412215X", "男"),
    Holder("陈静", "320102199209210468", "女"),
    Holder("杨磊", "410105198701305713", "男"),
    Holder("黄勇", "440106197911023332", "男"),
    Holder("周杰", "22010219930518151X", "男"),
    Holder("吴刚", "510107198302264199", "男"),
    Holder("孙丽", "130102197506082621", "女"),
    Holder("马超", "62010219990812093X", "男"),
    Holder("阿依古丽·买买提", "650102199503041286", "女"),
    Holder("郑凯", "330106198605191230", "男"),
]
ZHANG, LI, LIU, CHEN, YANG, HUANG, ZHOU, WU, SUN, MA, AYI, ZHENG = FIXED_HOLDERS
MOHURD_ZHANG = "京A012019000939"
MOHURD_YANG = "豫A052018001207"
MOHURD_ZHOU = "吉A012020000417"
MOHRSS_LIU = "S021537000101234000517"
MOHRSS_SUN = "0813011023400571"
MOHURD_ZHENG = "浙A012021000388"  # uploaded, unknown to the live site
MOHRSS_ZHENG = "S043333000208224000611"  # uploaded, unknown to the live site

UNHELD_IDS = ("110101198001010010", "440305198606150078")
UNHELD_NUMBERS: dict[Department, str] = {
    Department.MEM: "T" + UNHELD_IDS[0],
    Department.SAMR: UNHELD_IDS[1],
    Department.MOHURD: "京A012019999999",
    Department.MOHRSS: "S021537000101234999999",
}
RESERVED: frozenset[str] = frozenset(
    [h.id_number for h in FIXED_HOLDERS]
    + [MOHURD_ZHANG, MOHURD_YANG, MOHURD_ZHOU, MOHRSS_LIU, MOHRSS_SUN, MOHURD_ZHENG, MOHRSS_ZHENG]
    + [*UNHELD_IDS, *UNHELD_NUMBERS.values()]
)

ELECTRICAL, LOW, HIGH = t.MEM_ELECTRICAL, "低压电工作业", "高压电工作业"
WELDING, FUSION = t.MEM_WELDING, "熔化焊接与热切割作业"


def add_fixed(cards: Cards) -> None:
    """Add the fixed holders' certificates (their upload and live versions) to `cards`."""
    q, day = cards.as_of, timedelta(days=1)
    bj, jl, sd, js, hn, gd, sc, hb, gs, xj, zj = (
        t.PROVINCES[c] for c in ("11", "22", "37", "32", "41", "44", "51", "13", "62", "65", "33")
    )
    # 张伟: low-voltage electrician with MEM and MOHURD cards (entries 1 and 3), and an older MEM card.
    start = q - 700 * day
    cards.same(mem_card(ZHANG, bj, ELECTRICAL, LOW, first=add_years(start, -6), start=start))
    cards.add_history(mem_card(ZHANG, bj, ELECTRICAL, LOW, first=add_years(start, -6), start=add_years(start, -6),
                               status=CertStatus.EXPIRED))  # fmt: skip
    cards.same(mohurd_card(ZHANG, bj, MOHURD_ZHANG, first=date(2019, 6, 12), start=q - 300 * day))
    # 李建军: MEM welder who also holds the SAMR welder's card (entries 4, 5, 7).
    cards.same(mem_card(LI, jl, WELDING, FUSION, first=q - 1500 * day, start=q - 1500 * day))
    items = [t.SAMR_WELD_ITEMS[0], t.SAMR_WELD_ITEMS[1]]
    cards.same(samr_card(LI, jl, t.SAMR_WELD_CATEGORY, items, first=q - 2000 * day, start=q - 540 * day))
    # 刘洋: high-voltage electrician (entry 2) with a MOHRSS 电工 四级 skill-level certificate.
    cards.same(mem_card(LIU, sd, ELECTRICAL, HIGH, first=q - 900 * day, start=q - 900 * day))
    cards.same(mohrss_card(LIU, MOHRSS_LIU, "山东省电力技师学院", "电工", SKILL_LEVELS[4], issued=date(2023, 7, 20)))
    # 陈静: an expired MEM card (lapsed before the upload).
    start = add_years(q - 199 * day, -6)
    cards.same(mem_card(CHEN, js, ELECTRICAL, LOW, first=start, start=start, status=CertStatus.EXPIRED))
    # 杨磊: a suspended MOHURD tower-crane driver.
    cards.same(mohurd_card(YANG, hn, MOHURD_YANG, first=date(2018, 3, 9), start=q - 250 * day,
                           status=CertStatus.SUSPENDED))  # fmt: skip
    # 黄勇: a revoked MEM welder's card.
    cards.same(mem_card(HUANG, gd, WELDING, FUSION, first=q - 1200 * day, start=q - 1200 * day,
                        status=CertStatus.REVOKED))  # fmt: skip
    # 周杰: uploaded as valid, suspended on the live site since.
    up = mohurd_card(ZHOU, jl, MOHURD_ZHOU, first=date(2020, 9, 1), start=q - 400 * day)
    cards.differing(up, suspend(up), "suspended_after_upload")
    # 吴刚: MEM card about to lapse at upload time, renewed on the live site since.
    start = add_years(q + 21 * day, -6)
    up = mem_card(WU, sc, ELECTRICAL, LOW, first=add_years(start, -6), start=start)
    cards.differing(up, renewed(up), "renewed_after_upload")
    # 孙丽: an older 16-digit 职业资格证书 (焊工 中级).
    cards.same(mohrss_card(SUN, MOHRSS_SUN, hb.osta_centre, "焊工", QUALIFICATION_LEVELS["4"],
                           issued=date(2008, 11, 15)))  # fmt: skip
    # 马超: a MEM card issued after the upload (live only).
    new_on = q + max(1, (cards.today - q).days // 2) * day
    cards.differing(None, mem_card(MA, gs, ELECTRICAL, LOW, first=new_on, start=new_on), "issued_after_upload")
    # 阿依古丽·买买提: a forklift driver (SAMR N1), a name with the middle dot.
    cards.same(samr_card(AYI, xj, "叉车司机", ["N1"], first=q - 800 * day, start=q - 800 * day))
    # 郑凯: two certificates in the upload that the live sites do not know (a spot check's "not found live").
    cards.upload_only(mohurd_card(ZHENG, zj, MOHURD_ZHENG, first=date(2021, 4, 8), start=q - 200 * day),
                      "not_on_live_site")  # fmt: skip
    cards.upload_only(mohrss_card(ZHENG, MOHRSS_ZHENG, "浙江省建设职业技能鉴定中心", "电工", SKILL_LEVELS[4],
                                  issued=date(2022, 9, 30)), "not_on_live_site")  # fmt: skip


def examples() -> list[Example]:
    return [
        Example("T" + ZHANG.id_number, "valid low-voltage electrician, MEM + MOHURD (recognitions 1 and 3)", "张伟"),
        Example(MOHURD_ZHANG, "the same electrician's MOHURD 建筑电工 card", "张伟"),
        Example("T" + LI.id_number, "valid MEM welder who also holds SAMR (recognitions 4, 5, 7)", "李建军"),
        Example("T" + LIU.id_number, "high-voltage electrician (recognition 2)", "刘洋"),
        Example(MOHRSS_LIU, "MOHRSS 职业技能等级证书 电工 四级 (22 characters)", "刘洋"),
        Example("T" + CHEN.id_number, "expired MEM card", "陈静"),
        Example(MOHURD_YANG, "suspended MOHURD card", "杨磊"),
        Example("T" + HUANG.id_number, "revoked MEM card", "黄勇"),
        Example(MOHURD_ZHOU, "conflict: uploaded as valid, suspended on the live site", "周杰"),
        Example("T" + WU.id_number, "conflict: renewed on the live site after the upload (later expiry)", "吴刚"),
        Example("T" + MA.id_number, "issued after the last upload: only the live site knows it", "马超"),
        Example(MOHRSS_SUN, "older 16-digit 职业资格证书 (焊工 中级)", "孙丽"),
        Example(AYI.id_number, "SAMR forklift driver; a name with the middle dot", "阿依古丽·买买提"),
        Example(UNHELD_NUMBERS[Department.MEM], "well-formed number nobody holds (not found)"),
        Example(UNHELD_NUMBERS[Department.MOHURD], "well-formed MOHURD number nobody holds (not found)"),
        Example("T" + ZHANG.id_number, "name mismatch: a real number with the wrong name", "张玮"),
    ]


def canaries() -> dict[Department, tuple[str, str]]:
    """(known-valid, known-invalid) number per department: the same for every seed and day."""
    valid = {
        Department.MEM: "T" + ZHANG.id_number,
        Department.MOHURD: MOHURD_ZHANG,
        Department.SAMR: LI.id_number,
        Department.MOHRSS: MOHRSS_LIU,
    }
    return {d: (valid[d], UNHELD_NUMBERS[d]) for d in Department}
