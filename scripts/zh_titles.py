"""Render the sample's English fashion product titles as Chinese e-commerce-style titles, by a word glossary.

    python scripts/zh_titles.py                      # sample_data/fashion/pairs.csv -> sample_data/fashion_zh/pairs.csv
    python scripts/zh_titles.py --pairs P --out O

What it is: a deterministic, rule-based rendering of the real Myntra product titles of `sample_data/fashion/`.
Each title is split on whitespace; runs of words found in `GLOSSARY` (case-insensitive, whole words, longest
phrase first) become their Simplified Chinese term, every other word (rare brands, model names, sizes, numbers)
stays in Latin as it is. Word order stays English, as in many Chinese catalogue titles
("Puma Men Blue Sneakers" -> "彪马男士蓝色运动鞋"). It is NOT a human translation: no grammar is rewritten, and
brands get a Chinese name only where an established one exists.

Why: to measure Chinese text features (word segmentation against character n-grams) on the same images and
labels as the English sample, offline. No translation model and no Chinese image-text data set is reachable
from this project's machines, so a glossary rendering of real titles is the honest substitute: the label
vocabulary is fully Chinese, the brand and model long tail partly Latin, as in real Chinese listings.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PAIRS = ROOT / "sample_data" / "fashion" / "pairs.csv"
DEFAULT_OUT = ROOT / "sample_data" / "fashion_zh" / "pairs.csv"
HAN = re.compile(r"[\u4e00-\u9fff]")

GLOSSARY: dict[str, str] = {
    # --- brands with an established Chinese name (others stay in Latin) ---
    "United Colors of Benetton": "贝纳通",
    "U.S. Polo Assn.": "美国马球协会",
    "ADIDAS Originals": "阿迪达斯三叶草",
    "Adidas": "阿迪达斯",
    "Puma": "彪马",
    "Nike": "耐克",
    "Reebok": "锐步",
    "Fila": "斐乐",
    "Levis": "李维斯",
    "Levi's": "李维斯",
    "Wrangler": "威格",
    "Lee": "李",
    "Clarks": "其乐",
    "Casio": "卡西欧",
    "Timberland": "添柏岚",
    "Skechers": "斯凯奇",
    "Crocs": "卡骆驰",
    "Vans": "范斯",
    "ASICS": "亚瑟士",
    "Playboy": "花花公子",
    "Esprit": "埃斯普利特",
    "Quiksilver": "极速骑板",
    "Lotto": "乐途",
    "Converse": "匡威",
    "Guess": "盖尔斯",
    "Rockport": "乐步",
    "Hush Puppies": "暇步士",
    "Manchester United": "曼联",
    "Warner Bros": "华纳兄弟",
    "Disney": "迪士尼",
    "Mickey Mouse": "米老鼠",
    "Batman": "蝙蝠侠",
    # --- gender and age ---
    "Men": "男士",
    "Mens": "男士",
    "Men's": "男士",
    "Gents": "男士",
    "Women": "女士",
    "Woman": "女士",
    "Womens": "女士",
    "Women's": "女士",
    "Ladies": "女士",
    "Unisex": "中性",
    "Kids": "儿童",
    "Kids-Unisex": "中性儿童",
    "Boys": "男童",
    "Boy": "男童",
    "Boys-Boys": "男童",
    "Girls": "女童",
    "Girl": "女童",
    "Baby": "婴儿",
    # --- colours ---
    "Black": "黑色",
    "White": "白色",
    "Off White": "米白色",
    "Blue": "蓝色",
    "Navy Blue": "藏青色",
    "Navy": "藏青色",
    "Royal Blue": "宝蓝色",
    "Brown": "棕色",
    "Chocolate Brown": "巧克力色",
    "Chocolate": "巧克力色",
    "Coffee": "咖啡色",
    "Grey": "灰色",
    "Gray": "灰色",
    "Dk.Grey": "深灰色",
    "Charcoal": "炭灰色",
    "Gun Metal Grey": "枪灰色",
    "Gun Metal": "枪色",
    "Red": "红色",
    "Maroon": "酒红色",
    "Pink": "粉色",
    "Magenta": "洋红色",
    "Purple": "紫色",
    "Lavender": "淡紫色",
    "Green": "绿色",
    "Olive": "橄榄绿",
    "Teal": "青绿色",
    "Yellow": "黄色",
    "Orange": "橙色",
    "Rust": "铁锈红",
    "Beige": "米色",
    "Cream": "奶油色",
    "Khaki": "卡其色",
    "Tan": "棕褐色",
    "Taupe": "灰褐色",
    "Mahogany": "红木色",
    "Nude": "裸色",
    "Indigo": "靛蓝色",
    "Gold": "金色",
    "Silver": "银色",
    "Bronze": "古铜色",
    "Copper": "铜色",
    "Multi": "多色",
    "Multi Colour": "多色",
    "Multi Color": "多色",
    "Black and Grey": "黑灰色",
    "Light": "浅",
    "Dark": "深",
    # --- patterns, materials, cuts, styles ---
    "Solid": "纯色",
    "Printed": "印花",
    "Print": "印花",
    "Pigment Print": "涂料印花",
    "Graphic": "图案",
    "Striped": "条纹",
    "Stripes": "条纹",
    "Stripped": "条纹",
    "Check": "格子",
    "Checked": "格子",
    "Checks": "格子",
    "Paisley": "腰果花",
    "Polka": "波点",
    "Flower": "花朵",
    "Design": "图案",
    "Embroidary": "刺绣",
    "Embroidered": "刺绣",
    "Sequin": "亮片",
    "Frill": "荷叶边",
    "Casual": "休闲",
    "Formal": "正装",
    "Sports": "运动",
    "Sport": "运动",
    "Running": "跑步",
    "Racing": "竞速",
    "Trainer": "运动",
    "Fitness": "健身",
    "Gym": "健身",
    "Hip Hop": "嘻哈",
    "Beach": "沙滩",
    "Classic": "经典",
    "Vintage": "复古",
    "Funky": "潮流",
    "Cute": "可爱",
    "Ethnic": "民族风",
    "Winter": "冬季",
    "Leather": "皮革",
    "Leatherette": "人造革",
    "Canvas": "帆布",
    "Cotton": "棉",
    "Silk": "真丝",
    "Polyester": "涤纶",
    "Fleece": "抓绒",
    "Steel": "精钢",
    "Knit": "针织",
    "Knitted": "针织",
    "Flat Knit": "平纹针织",
    "Cable": "麻花",
    "Rib": "罗纹",
    "Yarn Dyed": "色织",
    "Washed": "水洗",
    "Wash": "水洗",
    "Acid Wash": "酸洗",
    "Denims": "牛仔",
    "Slim Fit": "修身",
    "Slim": "修身",
    "Fit": "版型",
    "Midrise": "中腰",
    "Short": "短款",
    "Thin": "薄款",
    "Round Neck": "圆领",
    "LS Crew": "长袖圆领",
    "Polo": "翻领",
    "Spaghetti": "吊带",
    "Slip-On": "一脚蹬",
    "Closed": "包头",
    "Heeled": "高跟",
    "Buckel": "搭扣",
    "Button Flap": "按扣翻盖",
    "Zip": "拉链",
    "Logo": "标志",
    "Pack of 2": "2双装",
    "Pack of 3": "3双装",
    # --- watch and eyewear details ---
    "Analogue": "指针式",
    "Analog": "指针式",
    "Chronograph": "计时",
    "Luminous": "夜光",
    "Dial": "表盘",
    "Dials": "表盘",
    "Round": "圆形",
    "Three": "三",
    "Small": "小",
    "Strap": "表带",
    "Straps": "表带",
    "Interchangeable": "可替换",
    "With": "配",
    "Links": "链节",
    "Smooth Finish": "光面",
    "numbers": "数字",
    "Steel-Toned": "钢色",
    "Silver-Toned": "银色调",
    "Frame": "镜框",
    "Rectangular": "方形",
    "Eyewear": "眼镜",
    # --- article types (singular, plural, spelling variants) ---
    "Tshirts": "T恤",
    "Tshirt": "T恤",
    "T-shirts": "T恤",
    "T-shirt": "T恤",
    "TShirt": "T恤",
    "Polo Tshirt": "翻领T恤",
    "Polo Tshirts": "翻领T恤",
    "Jerseys": "球衣",
    "Jersey": "球衣",
    "Shirts": "衬衫",
    "Shirt": "衬衫",
    "Tops": "上衣",
    "Top": "上衣",
    "Shrug": "小开衫",
    "Kurtas": "库尔塔长衫",
    "Kurta": "库尔塔长衫",
    "Sweaters": "毛衣",
    "Sweater": "毛衣",
    "Sweatshirts": "卫衣",
    "Sweatshirt": "卫衣",
    "Sweat Shirts": "卫衣",
    "Sweat Shirt": "卫衣",
    "Hoody": "连帽衫",
    "Hoodie": "连帽衫",
    "Jeans": "牛仔裤",
    "Jean": "牛仔裤",
    "Trousers": "长裤",
    "Trouser": "长裤",
    "Chinos": "休闲裤",
    "Socks": "袜子",
    "Ankel": "短筒",
    "Ankle": "短筒",
    "Quarter": "中短筒",
    "Quarters": "中短筒",
    "Crew": "中筒",
    "Liner": "船袜",
    "Invisble": "隐形",
    "Invisible": "隐形",
    "Shoes": "鞋",
    "Shoe": "鞋",
    "Casual Shoes": "休闲鞋",
    "Casual Shoe": "休闲鞋",
    "Sports Shoes": "运动鞋",
    "Sports Shoe": "运动鞋",
    "Formal Shoes": "正装鞋",
    "Formal Shoe": "正装鞋",
    "Heeled Shoes": "高跟鞋",
    "Sneakers": "运动鞋",
    "Sneaker": "运动鞋",
    "Derbys": "德比鞋",
    "Moccasin": "莫卡辛鞋",
    "Ballerina": "芭蕾平底鞋",
    "Pumps": "浅口鞋",
    "Peep Toe": "鱼嘴",
    "Peep Toes": "鱼嘴鞋",
    "Heels": "高跟鞋",
    "Stilettos": "细跟高跟鞋",
    "Flats": "平底鞋",
    "Flat": "平底",
    "Wedges": "坡跟鞋",
    "Sandals": "凉鞋",
    "Sandal": "凉鞋",
    "Slippers": "拖鞋",
    "Slipper": "拖鞋",
    "Flip Flops": "人字拖",
    "Flip Flop": "人字拖",
    "Flops": "拖鞋",
    "Watches": "手表",
    "Watch": "手表",
    "Sunglasses": "太阳镜",
    "Wallets": "钱包",
    "Wallet": "钱包",
    "Passport Holder": "护照夹",
    "Belts": "腰带",
    "Belt": "腰带",
    "Handbags": "手提包",
    "Handbag": "手提包",
    "Sling Bag": "斜挎包",
    "Shoulderbag": "单肩包",
    "Satchel": "挎包",
    "Bags": "包",
    "Bag": "包",
}

# Brand and model names that contain a glossary word but are names, not descriptions: matched like glossary
# phrases (so they win over their words) and kept in Latin as written.
KEEP_LATIN: tuple[str, ...] = (
    "Lee Cooper",
    "Pepe Jeans",
    "Red Tape",
    "Black Coffee",
    "Classic Polo",
    "Indigo Nation",
    "Top Forcer",
    "Adi light",
)

_Key = tuple[str, ...]


def _key(phrase: str) -> _Key:
    return tuple(word.lower() for word in phrase.split())


_PHRASES: dict[_Key, str | None] = {_key(k): v for k, v in GLOSSARY.items()} | {_key(k): None for k in KEEP_LATIN}
_MAX_WORDS = max(len(k) for k in _PHRASES)


def _pieces(title: str) -> list[tuple[str, bool]]:
    """The title as (text, is_chinese) pieces, by greedy longest-phrase glossary matching over whitespace words."""
    words = title.split()
    pieces: list[tuple[str, bool]] = []
    i = 0
    while i < len(words):
        for n in range(min(_MAX_WORDS, len(words) - i), 0, -1):
            key = _key(" ".join(words[i : i + n]))
            if key in _PHRASES:
                zh = _PHRASES[key]
                pieces.append((" ".join(words[i : i + n]), False) if zh is None else (zh, True))
                i += n
                break
        else:
            pieces.append((words[i], False))
            i += 1
    return pieces


def to_chinese(title: str) -> str:
    """Chinese rendering of one English title: glossary terms joined without spaces, Latin words kept as written.

    A space separates two consecutive Latin pieces only ("Peter England Men Checked Blue Shirts" ->
    "Peter England男士格子蓝色衬衫").
    """
    out = ""
    prev_latin = False
    for text, is_chinese in _pieces(title):
        if out and prev_latin and not is_chinese:
            out += " "
        out += text
        prev_latin = not is_chinese
    return out


def latin_words(title: str) -> list[str]:
    """The words of `title` that the glossary leaves in Latin."""
    return [w for text, is_chinese in _pieces(title) if not is_chinese for w in text.split()]


def cjk_share(texts: Sequence[str]) -> float:
    """Share of the non-space characters of `texts` that are Han characters (U+4E00-U+9FFF)."""
    chars = "".join("".join(t.split()) for t in texts)
    return len(HAN.findall(chars)) / len(chars) if chars else 0.0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, default=DEFAULT_PAIRS, help="English pairs CSV (id,image,text,...)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Chinese pairs CSV to write")
    args = parser.parse_args(argv)

    src_dir = args.pairs.resolve().parent
    out_path: Path = args.out.resolve()
    with args.pairs.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = list(reader.fieldnames or [])
        rows = list(reader)
    for row in rows:
        row["text"] = to_chinese(row["text"])
        row["image"] = Path(os.path.relpath(src_dir / row["image"], out_path.parent)).as_posix()

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    share = cjk_share([row["text"] for row in rows])
    print(f"{out_path}: {len(rows)} titles, {share:.3f} of their non-space characters CJK", file=sys.stderr)


if __name__ == "__main__":
    main()
