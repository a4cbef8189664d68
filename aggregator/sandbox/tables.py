"""Fixed vocabularies for the synthetic data set: provinces, region codes, names, trades and items.

Plain data, no randomness. `dataset.py` draws from these with a seeded `random.Random`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Province:
    """A province-level division: its GB 2260 prefix, name, MOHURD abbreviation and issuing bodies."""

    code: str  # the first two digits of an ID number
    name: str  # 吉林省
    abbr: str  # 吉
    city_letters: str  # MOHURD city letters in use
    municipality: bool = False

    @property
    def mem_issuer(self) -> str:
        return f"{self.name}应急管理{'局' if self.municipality else '厅'}"

    @property
    def mohurd_issuer(self) -> str:
        return f"{self.name}住房和城乡建设{'委员会' if self.municipality else '厅'}"

    @property
    def samr_issuer(self) -> str:
        return f"{self.name}市场监督管理局"

    @property
    def osta_centre(self) -> str:
        return f"{self.name}职业技能鉴定指导中心"


PROVINCES: dict[str, Province] = {
    p.code: p
    for p in [
        Province("11", "北京市", "京", "ABC", municipality=True),
        Province("12", "天津市", "津", "AB", municipality=True),
        Province("13", "河北省", "冀", "ABCDEFGH"),
        Province("14", "山西省", "晋", "ABCDEFG"),
        Province("15", "内蒙古自治区", "蒙", "ABCDEF"),
        Province("21", "辽宁省", "辽", "ABCDEFG"),
        Province("22", "吉林省", "吉", "ABCDEFGH"),
        Province("23", "黑龙江省", "黑", "ABCDEFG"),
        Province("31", "上海市", "沪", "AB", municipality=True),
        Province("32", "江苏省", "苏", "ABCDEFGHJKLMN"),
        Province("33", "浙江省", "浙", "ABCDEFGHJKL"),
        Province("34", "安徽省", "皖", "ABCDEFGH"),
        Province("35", "福建省", "闽", "ABCDEFGH"),
        Province("36", "江西省", "赣", "ABCDEFGH"),
        Province("37", "山东省", "鲁", "ABCDEFGHJKLMN"),
        Province("41", "河南省", "豫", "ABCDEFGHJKLMN"),
        Province("42", "湖北省", "鄂", "ABCDEFGHJK"),
        Province("43", "湖南省", "湘", "ABCDEFGHJKLMN"),
        Province("44", "广东省", "粤", "ABCDEFGHJKLMNPQRS"),
        Province("45", "广西壮族自治区", "桂", "ABCDEFGHJK"),
        Province("46", "海南省", "琼", "AB"),
        Province("50", "重庆市", "渝", "AB", municipality=True),
        Province("51", "四川省", "川", "ABCDEFGHJKLMNPQRS"),
        Province("52", "贵州省", "贵", "ABCDEFGH"),
        Province("53", "云南省", "云", "ABCDEFGHJKLM"),
        Province("54", "西藏自治区", "藏", "ABCDEFG"),
        Province("61", "陕西省", "陕", "ABCDEFGHJK"),
        Province("62", "甘肃省", "甘", "ABCDEFGHJKLMN"),
        Province("63", "青海省", "青", "ABCDEFGH"),
        Province("64", "宁夏回族自治区", "宁", "ABCDE"),
        Province("65", "新疆维吾尔自治区", "新", "ABCDEFGHJKLMNPQR"),
    ]
}

# Real county-level region codes (GB/T 2260) with their city, weighted towards populous provinces by repetition.
REGIONS: list[tuple[str, str]] = [
    ("110101", "东城区"), ("110105", "朝阳区"), ("110108", "海淀区"), ("110106", "丰台区"),
    ("120104", "南开区"), ("120101", "和平区"),
    ("130102", "石家庄市"), ("130203", "唐山市"), ("130604", "保定市"),
    ("140105", "太原市"), ("140202", "大同市"),
    ("150102", "呼和浩特市"), ("150203", "包头市"),
    ("210102", "沈阳市"), ("210202", "大连市"), ("210302", "鞍山市"),
    ("220102", "长春市"), ("220104", "长春市"), ("220202", "吉林市"), ("220302", "四平市"), ("220581", "梅河口市"),
    ("230103", "哈尔滨市"), ("230202", "齐齐哈尔市"), ("230602", "大庆市"),
    ("310104", "徐汇区"), ("310115", "浦东新区"),
    ("320102", "南京市"), ("320506", "苏州市"), ("320211", "无锡市"), ("320311", "徐州市"),
    ("330106", "杭州市"), ("330203", "宁波市"), ("330302", "温州市"),
    ("340104", "合肥市"), ("340202", "芜湖市"),
    ("350102", "福州市"), ("350203", "厦门市"),
    ("360102", "南昌市"), ("360403", "九江市"),
    ("370102", "济南市"), ("370202", "青岛市"), ("370602", "烟台市"), ("371302", "临沂市"),
    ("410105", "郑州市"), ("410302", "洛阳市"), ("411302", "南阳市"), ("411502", "信阳市"),
    ("420106", "武汉市"), ("420502", "宜昌市"), ("421002", "荆州市"),
    ("430104", "长沙市"), ("430202", "株洲市"), ("431102", "永州市"),
    ("440106", "广州市"), ("440305", "深圳市"), ("441900", "东莞市"), ("440604", "佛山市"),
    ("450103", "南宁市"), ("450302", "桂林市"),
    ("460105", "海口市"),
    ("500103", "渝中区"), ("500112", "渝北区"), ("500235", "云阳县"),
    ("510107", "成都市"), ("510502", "泸州市"), ("511302", "南充市"), ("511602", "广安市"),
    ("520102", "贵阳市"), ("520302", "遵义市"),
    ("530102", "昆明市"), ("530302", "曲靖市"),
    ("540102", "拉萨市"),
    ("610113", "西安市"), ("610302", "宝鸡市"),
    ("620102", "兰州市"), ("620502", "天水市"),
    ("630102", "西宁市"),
    ("640104", "银川市"),
    ("650102", "乌鲁木齐市"), ("652901", "阿克苏市"), ("653101", "喀什市"),
]  # fmt: skip

# Where migrant workers often hold their cards (work province other than the ID's).
WORK_HUBS = ["44", "32", "33", "31", "11", "37", "35"]

SURNAMES = (
    "王王王李李李张张张刘刘陈陈杨杨黄赵赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕"
    "丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)
COMPOUND_SURNAMES = ["欧阳", "司马", "上官", "诸葛", "东方"]
MALE_GIVEN = "伟强磊军勇杰涛明超刚平辉鹏华飞鑫波斌宇浩凯健俊帆亮林成建国峰志文海东兵宏春晓立新旭阳龙庆永"
FEMALE_GIVEN = "芳娜敏静丽艳娟霞秀英玲桂兰红梅琳燕莉婷雪慧萍洁颖倩晶佳丹琴云凤月"
# Uyghur-style names are written given name · father's name.
MINORITY_MALE = ["艾力", "买买提", "阿不都热合曼", "吐尔逊", "艾合买提", "努尔兰", "热合曼", "阿迪力"]
MINORITY_FEMALE = ["古丽娜尔", "阿依古丽", "热依拉", "迪丽努尔", "帕提古丽", "米热古丽"]
MINORITY_FATHER = ["买买提", "吐尔逊", "艾买提", "阿不都拉", "依明", "托合提", "热西提", "司马义"]

# MEM 特种作业: category -> operation items.
MEM_ELECTRICAL = "电工作业"
MEM_WELDING = "焊接与热切割作业"
MEM_OTHER: list[tuple[str, str]] = [
    ("高处作业", "登高架设作业"),
    ("高处作业", "高处安装、维护、拆除作业"),
    ("制冷与空调作业", "制冷与空调设备运行操作作业"),
    ("制冷与空调作业", "制冷与空调设备安装修理作业"),
    (MEM_ELECTRICAL, "防爆电气作业"),
    (MEM_WELDING, "压力焊作业"),
    (MEM_WELDING, "钎焊作业"),
]

# SAMR 持证项目 codes for welders (TSG Z6002), written as on the card.
SAMR_WELD_ITEMS = [
    "GTAW-FeⅡ-6G-3/60-FefS-02/10/12",
    "SMAW-FeⅡ-2G-12-Fef3J",
    "SMAW-FeⅡ-3G(K)-12-Fef3J",
    "SMAW-FeⅡ-6G(K)-12/57-Fef3J",
    "GMAW-FeⅡ-2G-12-FefS-11/15",
    "GTAW-FeⅣ-6G-3/60-FefS-02/10/12",
    "FCAW-FeⅡ-3G(K)-12-FefS-11/15",
    "SAW-1G(K)-07/09/19",
]
SAMR_WELD_CATEGORY = "特种设备焊接操作人员"
SAMR_OTHER: list[tuple[str, str]] = [
    ("起重机司机", "Q2"),
    ("起重机指挥", "Q1"),
    ("叉车司机", "N1"),
    ("工业锅炉司炉", "G1"),
    ("电梯修理", "T"),
    ("特种设备安全管理", "A"),
    ("快开门式压力容器操作", "R1"),
    ("气瓶充装", "P"),
]

MOHURD_WELDER = "其他工种类别（建筑焊工）"

MOHRSS_OCCUPATIONS = ["电工", "焊工", "车工", "钳工", "电梯安装维修工", "汽车维修工", "中式烹调师", "育婴员", "保育师",
                      "砌筑工", "钢筋工", "制冷空调系统安装维修工", "保安员"]  # fmt: skip
MOHRSS_BODIES_S = ["职业技能培训学校", "技工学校", "职业技术学院", "职业培训中心"]
MOHRSS_BODIES_Y = ["电力有限公司", "建工集团有限公司", "重工机械有限公司", "汽车制造有限公司"]
MOHRSS_BRANDS = ["华建", "新华", "长城", "兴业", "恒泰", "安达", "鼎新", "宏图"]
