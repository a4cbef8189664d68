"""Random holders for the synthetic data set: names, ID numbers, trade profiles and each card's fate.

Every draw comes from the `Cards`' seeded `random.Random`, in a fixed order, so a seed always gives the
same people. A card's plan decides its status (about 85% valid, 8% expired, 3% suspended, 2% revoked) or
how the live site differs from the upload (suspended, renewed or issued after it: a few percent).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta

from aggregator.models import Certificate, CertStatus, Department
from aggregator.numbers import QUALIFICATION_LEVELS, SKILL_LEVELS, id_check_character
from aggregator.sandbox import tables as t
from aggregator.sandbox.cards import (
    VALID_YEARS,
    Cards,
    Holder,
    add_years,
    mem_card,
    mohrss_card,
    mohurd_card,
    renewed,
    samr_card,
    suspended,
)

# make(first issued, term start, status, status text) -> one card of a holder
Make = Callable[[date, date, CertStatus, "str | None"], Certificate]

PLANS: tuple[tuple[str, float], ...] = (
    ("expired", 0.08),
    ("suspended", 0.03),
    ("revoked", 0.02),
    ("suspended_later", 0.015),
    ("renewed_later", 0.015),
    ("issued_later", 0.015),
)
# name, weight, share of women
PROFILES: list[tuple[str, int, float]] = [
    ("lv_elec", 22, 0.05),
    ("hv_elec", 8, 0.03),
    ("welder", 16, 0.04),
    ("samr_welder", 6, 0.04),
    ("crane", 8, 0.05),
    ("construction", 10, 0.05),
    ("samr_other", 10, 0.2),
    ("mem_other", 8, 0.05),
    ("mohrss", 9, 0.5),
    ("mohrss_old", 3, 0.3),
]
_WEIGHTS = [w for _, w, _ in PROFILES]
_FIRST_BIRTH, _LAST_BIRTH = date(1960, 1, 1), date(2004, 12, 31)


class Synth:
    """Draws random holders and their certificates into a `Cards`."""

    def __init__(self, cards: Cards) -> None:
        self.cards = cards
        self.rng = cards.rng

    # --- people ---

    def name(self, gender: str, minority: bool) -> str:
        rng = self.rng
        if minority:  # Uyghur-style: given name · father's name
            given = rng.choice(t.MINORITY_MALE if gender == "男" else t.MINORITY_FEMALE)
            return f"{given}·{rng.choice(t.MINORITY_FATHER)}"
        surname = rng.choice(t.COMPOUND_SURNAMES) if rng.random() < 0.01 else rng.choice(t.SURNAMES)
        pool = t.MALE_GIVEN if gender == "男" else t.FEMALE_GIVEN
        return surname + "".join(rng.choice(pool) for _ in range(1 if rng.random() < 0.35 else 2))

    def holder(self, female_share: float) -> Holder:
        rng = self.rng
        gender = "女" if rng.random() < female_share else "男"
        while True:
            region = rng.choice(t.REGIONS)[0]
            birth = _FIRST_BIRTH + timedelta(days=rng.randrange((_LAST_BIRTH - _FIRST_BIRTH).days + 1))
            parity = rng.choice("13579" if gender == "男" else "02468")  # the 17th digit is odd for men
            first17 = f"{region}{birth:%Y%m%d}{rng.randrange(100):02d}{parity}"
            id_number = first17 + id_check_character(first17)
            if self.cards.claim(id_number):
                break
        return Holder(self.name(gender, region.startswith("65") and rng.random() < 0.6), id_number, gender)

    def work_province(self, h: Holder) -> t.Province:
        code = h.id_number[:2] if self.rng.random() < 0.8 else self.rng.choice(t.WORK_HUBS)
        return t.PROVINCES[code]

    # --- one card's fate ---

    def plan(self, department: Department) -> str:
        r = self.rng.random()
        if department == Department.MOHRSS:
            return "revoked" if r < 0.02 else "issued_later" if r < 0.035 else "valid"
        for plan, p in PLANS:
            if r < p:
                return plan
            r -= p
        return "valid"

    def emit(self, h: Holder, department: Department, make: Make) -> None:
        """Decide one card's dates and status and record its upload and live versions."""
        c, rng = self.cards, self.rng
        plan = self.plan(department)
        years = VALID_YEARS[department]
        if plan == "issued_later":
            start = c.day_between(c.as_of + timedelta(days=1), c.today)
            c.differing(None, make(start, start, CertStatus.VALID, None), "issued_after_upload")
            return
        if plan == "expired":
            until = c.day_between(c.today - timedelta(days=4 * 365), c.today - timedelta(days=1))
            start = add_years(until + timedelta(days=1), -years)
        elif plan == "renewed_later":
            until = c.day_between(c.as_of + timedelta(days=1), c.today + timedelta(days=120))
            start = add_years(until + timedelta(days=1), -years)
        else:
            start = c.day_between(add_years(c.today, -years) + timedelta(days=1), c.as_of)
        first = add_years(start, -years * rng.randint(0, 3))
        adult = add_years(h.birth_date, 18)
        while first < adult and first < start:
            first = add_years(first, years)
        if plan == "expired":
            # Some departments mark lapsed cards 过期; others leave 有效 with a past date.
            marked = rng.random() < 0.5
            live = make(first, start, CertStatus.EXPIRED if marked else CertStatus.VALID, None)
            if marked and live.valid_until is not None and live.valid_until >= c.as_of:
                c.differing(make(first, start, CertStatus.VALID, None), live, "expired_after_upload")
            else:
                c.same(live)
        elif plan == "suspended":
            c.same(make(first, start, CertStatus.SUSPENDED, "暂扣"))
        elif plan == "revoked":
            c.same(make(first, start, CertStatus.REVOKED, rng.choice(["吊销", "吊销", "撤销", "注销"])))
        elif plan == "suspended_later":
            up = make(first, start, CertStatus.VALID, None)
            c.differing(up, suspended(up), "suspended_after_upload")
        elif plan == "renewed_later":
            up = make(first, start, CertStatus.VALID, None)
            c.differing(up, renewed(up), "renewed_after_upload")
            if department == Department.MEM and up.valid_until is not None and up.valid_until < c.today:
                c.add_history(up.model_copy(update={"status": CertStatus.EXPIRED, "status_text": "过期"}))
        else:
            c.same(make(first, start, CertStatus.VALID, None))
        if department == Department.MEM and first < start and rng.random() < 0.5:
            c.add_history(make(first, add_years(start, -years), CertStatus.EXPIRED, None))

    # --- per department ---

    def mem(self, h: Holder, p: t.Province, category: str, item: str) -> None:
        def make(first: date, start: date, status: CertStatus, text: str | None) -> Certificate:
            return mem_card(h, p, category, item, first=first, start=start, status=status, text=text)

        self.emit(h, Department.MEM, make)

    def mohurd(self, h: Holder, p: t.Province, code: str) -> None:
        letter = self.rng.choice(p.city_letters)
        numbers: dict[int, str] = {}  # one number per card, however many versions of it are made

        def make(first: date, start: date, status: CertStatus, text: str | None) -> Certificate:
            if first.year not in numbers:
                draw = f"{p.abbr}{letter}{code}{first.year:04d}"
                numbers[first.year] = self.unique(lambda: f"{draw}{self.rng.randrange(1, 999999):06d}")
            return mohurd_card(h, p, numbers[first.year], first=first, start=start, status=status, text=text)

        self.emit(h, Department.MOHURD, make)

    def samr(self, h: Holder, p: t.Province, category: str, items: list[str]) -> None:
        def make(first: date, start: date, status: CertStatus, text: str | None) -> Certificate:
            return samr_card(h, p, category, items, first=first, start=start, status=status, text=text)

        self.emit(h, Department.SAMR, make)

    def mohrss(self, h: Holder, p: t.Province, occupation: str, *, qualification: bool = False) -> None:
        """A skill-level certificate (or an older qualification): valid, rarely revoked, a few issued later."""
        c, rng = self.cards, self.rng
        level = rng.choice([5, 5, 4, 4, 4, 3, 3, 2, 1])
        if qualification:
            year = rng.randint(max(2003, h.birth_date.year + 18), 2016)
            number = self.unique(lambda: f"{year % 100:02d}{p.code}{rng.randint(1, 20):02d}{rng.randint(1, 3)}"
                                 f"{rng.randint(1, 999):03d}{level}{rng.randint(1, 99999):05d}")  # fmt: skip
            issued = date(year, rng.randint(1, 12), rng.randint(1, 28))
            c.same(mohrss_card(h, number, p.osta_centre, occupation, QUALIFICATION_LEVELS[str(level)], issued=issued))
            return
        employer = rng.random() < 0.3
        body = rng.choice(t.MOHRSS_BODIES_Y if employer else t.MOHRSS_BODIES_S)
        issuer = f"{p.name}{'' if employer else rng.choice(t.MOHRSS_BRANDS)}{body}"
        prefix = f"{'Y' if employer else 'S'}{rng.randint(1, 9999):04d}{p.code}{rng.randint(1, 999999):06d}"
        plan = self.plan(Department.MOHRSS)
        if plan == "issued_later":
            issued = c.day_between(c.as_of + timedelta(days=1), c.today)
        else:
            issued = c.day_between(max(add_years(h.birth_date, 18), date(2019, 1, 1)), c.as_of)
        number = self.unique(lambda: f"{prefix}{issued.year % 100:02d}{level}{rng.randint(1, 999999):06d}")
        status = CertStatus.REVOKED if plan == "revoked" else CertStatus.VALID
        cert = mohrss_card(h, number, issuer, occupation, SKILL_LEVELS[level], issued=issued, status=status,
                           text="撤销" if plan == "revoked" else None)  # fmt: skip
        if plan == "issued_later":
            c.differing(None, cert, "issued_after_upload")
        else:
            c.same(cert)

    def unique(self, draw: Callable[[], str]) -> str:
        while not self.cards.claim(number := draw()):
            pass
        return number

    # --- profiles ---

    def person(self) -> Holder:
        """One random holder with the certificates of a trade profile (often from two or three departments)."""
        rng, chance = self.rng, self.rng.random
        profile, _, female = rng.choices(PROFILES, weights=_WEIGHTS)[0]
        h = self.holder(female)
        p = self.work_province(h)
        if profile == "lv_elec":
            self.mem(h, p, t.MEM_ELECTRICAL, "低压电工作业")
            if chance() < 0.35:
                self.mohurd(h, p, "01")
            if chance() < 0.2:
                self.mohrss(h, p, "电工")
        elif profile == "hv_elec":
            self.mem(h, p, t.MEM_ELECTRICAL, "高压电工作业")
            if chance() < 0.3:
                self.mem(h, p, t.MEM_ELECTRICAL, "低压电工作业")
            if chance() < 0.35:
                self.mohrss(h, p, "电工")
            if chance() < 0.1:
                self.mohurd(h, p, "01")
        elif profile == "welder":
            self.mem(h, p, t.MEM_WELDING, "熔化焊接与热切割作业")
            if chance() < 0.35:
                self.samr(h, p, t.SAMR_WELD_CATEGORY, rng.sample(t.SAMR_WELD_ITEMS, rng.randint(1, 3)))
            if chance() < 0.15:
                self.mohurd(h, p, "99")
            if chance() < 0.2:
                self.mohrss(h, p, "焊工")
        elif profile == "samr_welder":
            self.samr(h, p, t.SAMR_WELD_CATEGORY, rng.sample(t.SAMR_WELD_ITEMS, rng.randint(1, 3)))
            if chance() < 0.2:
                self.mohrss(h, p, "焊工")
        elif profile == "crane":
            self.mohurd(h, p, rng.choice(["04", "05", "05", "06", "08"]))
            if chance() < 0.3:
                self.samr(h, p, "起重机司机", ["Q2"])
        elif profile == "construction":
            self.mohurd(h, p, rng.choice(["02", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11"]))
        elif profile == "samr_other":
            category, item = rng.choice(t.SAMR_OTHER)
            self.samr(h, p, category, [item])
        elif profile == "mem_other":
            category, item = rng.choice(t.MEM_OTHER)
            self.mem(h, p, category, item)
            if item == "登高架设作业" and chance() < 0.2:
                self.mohurd(h, p, "02")
        elif profile == "mohrss":
            pool = t.MOHRSS_OCCUPATIONS if h.gender == "男" else ["育婴员", "保育师", "中式烹调师", "电工", "焊工"]
            self.mohrss(h, p, rng.choice(pool))
        elif h.birth_date.year > 1990:  # mohrss_old: too young for the old qualifications
            self.mohrss(h, p, rng.choice(["焊工", "电工", "车工"]))
        else:
            self.mohrss(h, p, rng.choice(["焊工", "电工", "车工", "钳工"]), qualification=True)
            if chance() < 0.3:
                self.mem(h, p, t.MEM_ELECTRICAL, "低压电工作业")
        return h
