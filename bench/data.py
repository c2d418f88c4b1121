"""Random person documents like the seed's test data (``jj -gu name=@姓名 sex=@random(男,女) addr=@地址
idcard=@身份证``): one compact JSON object per line, deterministic for a given seed."""

from __future__ import annotations

import json
import random
from datetime import date, timedelta
from pathlib import Path
from typing import Optional

SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
    "姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
)
GIVEN = (
    "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华玉萍红娥玲芬燕彬鹏辉建国建华志强文博子涵浩然欣"
    "怡梓轩雨桐一诺思远嘉怡"
)
# (region code prefix, province, cities)
REGIONS = [
    ("110101", "北京市", ["东城区", "西城区", "朝阳区", "海淀区"]),
    ("310104", "上海市", ["徐汇区", "浦东新区", "静安区", "黄浦区"]),
    ("320102", "江苏省", ["南京市玄武区", "苏州市姑苏区", "无锡市梁溪区"]),
    ("330106", "浙江省", ["杭州市西湖区", "宁波市海曙区", "温州市鹿城区"]),
    ("440305", "广东省", ["深圳市南山区", "广州市天河区", "珠海市香洲区"]),
    ("510107", "四川省", ["成都市武侯区", "绵阳市涪城区"]),
    ("420106", "湖北省", ["武汉市武昌区", "宜昌市西陵区"]),
    ("370202", "山东省", ["青岛市市南区", "济南市历下区"]),
]
STREETS = ["人民路", "解放路", "中山路", "建设路", "和平街", "长江路", "黄河路", "文化路", "新华街", "光明大道"]
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"


def id_card(rng: random.Random, region: str) -> str:
    """An 18-character resident id number with a valid GB 11643 check character."""
    born = date(1950, 1, 1) + timedelta(days=rng.randrange(0, 365 * 55))
    body = f"{region}{born:%Y%m%d}{rng.randrange(0, 1000):03d}"
    return body + _CHECK[sum(int(c) * w for c, w in zip(body, _WEIGHTS)) % 11]


def person(rng: random.Random) -> dict:
    region, province, cities = rng.choice(REGIONS)
    given = "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))
    return {
        "name": rng.choice(SURNAMES) + given,
        "sex": rng.choice(("男", "女")),
        "addr": f"{province}{rng.choice(cities)}{rng.choice(STREETS)}{rng.randrange(1, 999)}号",
        "idcard": id_card(rng, region),
    }


def person_lines(n: int, seed: int = 6) -> list[str]:
    rng = random.Random(seed)
    return [json.dumps(person(rng), ensure_ascii=False, separators=(",", ":")) for _ in range(n)]


def write_people(path: Path, n: int, seed: int = 6) -> Path:
    path.write_text("\n".join(person_lines(n, seed)) + "\n", encoding="utf-8")
    return path


def bulk_body(index: Optional[str], docs: list[str]) -> str:
    """An NDJSON ``_bulk`` body indexing ``docs`` (auto ids) into ``index`` (None: the one in the URL)."""
    action = json.dumps({"index": {"_index": index} if index else {}}, separators=(",", ":"))
    return "".join(f"{action}\n{doc}\n" for doc in docs)
