"""Sentences for the synthetic corpus: templates over word lists (English, Mandarin in Han characters),
a small parallel English–Mandarin phrase list for speech translation, and style instructions.

Everything is a pure function of a :class:`random.Random`, so the corpus is reproducible from its
seed. Numbers are written as words in both languages, so a transcript has one spelling.
"""

from __future__ import annotations

import functools
import random

LANGUAGES = ("en", "zh")

# ---------------------------------------------------------------------------- English
_EN = {
    "name": "Anna Ben Clara David Emma Frank Grace Henry Iris Jack Kate Leo Maria Nina Oscar Paul Rosa Sam "
    "Tom Vera Lucy Peter Alice Mark".split(),
    "subj": [
        "the old man",
        "my sister",
        "a young doctor",
        "the teacher",
        "our neighbour",
        "the little boy",
        "a tired driver",
        "the new student",
        "my grandmother",
        "the farmer",
        "a quiet girl",
        "the baker",
        "his brother",
        "the captain",
        "a friendly nurse",
        "the manager",
        "her father",
        "the painter",
    ],
    "verb": "found bought painted cleaned carried opened lost fixed sold watched moved washed "
    "borrowed dropped shared wrapped".split(),
    "base": "find buy paint clean carry open fix sell watch move wash borrow share wrap".split(),
    "obj": [
        "a red bicycle",
        "the wooden box",
        "an old map",
        "three green apples",
        "a warm coat",
        "the broken clock",
        "a blue umbrella",
        "two small boats",
        "the heavy bag",
        "a bright lamp",
        "the silver key",
        "a long letter",
        "four fresh eggs",
        "the yellow door",
        "a glass of water",
        "the kitchen table",
        "five paper cups",
        "a pair of shoes",
    ],
    "place": [
        "in the garden",
        "near the station",
        "at the market",
        "by the river",
        "in the kitchen",
        "at the office",
        "on the bridge",
        "in the library",
        "behind the school",
        "at the airport",
        "in the park",
        "on the beach",
        "at the hotel",
        "in the small village",
    ],
    "time": [
        "this morning",
        "last night",
        "on Sunday",
        "after lunch",
        "before dinner",
        "every day",
        "in the evening",
        "yesterday",
        "next week",
        "on Friday afternoon",
        "at midnight",
        "in winter",
    ],
    "adj": "cold warm quiet busy bright dark clean noisy empty beautiful cheap expensive strange "
    "safe slow fast".split(),
    "noun": "weather room city coffee movie soup street river garden train music window market story".split(),
    "num": "two three four five six seven eight nine ten eleven twelve twenty".split(),
    "plural": "birds chairs books cars trees students boxes flowers houses boats".split(),
}
_EN_TEMPLATES = (
    "{Subj} {verb} {obj} {place}.",
    "{name} {verb} {obj} {time}.",
    "Did {subj} {base} {obj} {time}?",
    "The {noun} is very {adj} {time}.",
    "{name} wants to {base} {obj} {place}.",
    "We will meet {place} at {num} o'clock.",
    "{name} said that the {noun} was {adj}.",
    "There are {num} {plural} {place}.",
    "Please {base} {obj} {time}.",
    "How {adj} is the {noun} {place}?",
    "{Subj} and {name} {verb} {obj}.",
    "I think the {noun} {place} is too {adj}.",
)

# ---------------------------------------------------------------------------- Mandarin
_ZH = {
    "name": "小明 小红 王老师 李医生 张先生 刘阿姨 陈同学 我妈妈 我的朋友 他的哥哥 她的妹妹 老板 "
    "赵师傅 孙奶奶".split(),
    "verb": "买了 找到了 打开了 洗了 看见了 修好了 带来了 放下了 借了 卖了 拿走了 送来了".split(),
    "base": "买 找 看 修 洗 带 借 卖 送 拿".split(),
    "obj": "一本书 两个苹果 一辆自行车 一张地图 一杯茶 三把椅子 一只小猫 一封信 一件外套 四个鸡蛋 "
    "一把雨伞 五个杯子 一双鞋".split(),
    "place": "在公园里 在学校 在火车站 在河边 在超市 在家里 在办公室 在图书馆 在机场 在厨房 "
    "在桥上 在海边".split(),
    "time": "今天早上 昨天晚上 星期天 下午 明天 上个月 刚才 每天 晚饭以前 冬天".split(),
    "adj": "很好 很冷 很热 很漂亮 很安静 很忙 很大 很便宜 很贵 很干净 很吵 很慢".split(),
    "noun": "天气 房间 城市 咖啡 电影 饭菜 街道 花园 音乐 火车 窗户 故事".split(),
    "num": "一 两 三 四 五 六 七 八 九 十 二十".split(),
}
_ZH_TEMPLATES = (
    "{time}{name}{place}{verb}{obj}。",
    "{name}{time}{verb}{obj}。",
    "这里的{noun}{adj}。",
    "{name}想{place}{base}{obj}。",
    "{time}的{noun}{adj}吗？",
    "我们{time}{place}见面吧。",
    "{name}说{noun}{adj}。",
    "{place}有{num}个人。",
    "请你{time}{base}{obj}。",
    "{name}和{name2}{place}{verb}{obj}。",
    "我觉得{place}的{noun}{adj}。",
)

# ---------------------------------------------------------------------------- translation phrases
PHRASES = (
    ("Good morning.", "早上好。"), ("Thank you very much.", "非常感谢。"), ("Where is the station?", "车站在哪里？"),
    ("I am very happy today.", "我今天很高兴。"), ("The weather is nice.", "天气很好。"),
    ("Please sit down.", "请坐。"), ("How much is this?", "这个多少钱？"), ("I like green tea.", "我喜欢绿茶。"),
    ("See you tomorrow.", "明天见。"), ("What time is it?", "现在几点了？"), ("I am hungry.", "我饿了。"),
    ("Open the window, please.", "请打开窗户。"), ("My friend is a doctor.", "我的朋友是医生。"),
    ("The train is late.", "火车晚点了。"), ("Do you speak Chinese?", "你会说中文吗？"),
    ("It is raining outside.", "外面在下雨。"), ("I live in a small city.", "我住在一个小城市。"),
    ("Let us go to the park.", "我们去公园吧。"), ("This book is interesting.", "这本书很有意思。"),
    ("The coffee is too hot.", "咖啡太烫了。"), ("Happy birthday.", "生日快乐。"), ("I am sorry.", "对不起。"),
    ("Where do you work?", "你在哪里工作？"), ("The shop is closed.", "商店关门了。"),
    ("I need a taxi.", "我需要一辆出租车。"), ("Welcome to our home.", "欢迎来我们家。"),
    ("The room is very clean.", "房间很干净。"), ("Can you help me?", "你能帮我吗？"),
    ("I will call you later.", "我待会儿给你打电话。"), ("The food is delicious.", "饭菜很好吃。"),
    ("My phone is broken.", "我的手机坏了。"), ("We are going home.", "我们要回家了。"),
    ("Turn left at the corner.", "在拐角处左转。"), ("The music is too loud.", "音乐太吵了。"),
    ("She is my sister.", "她是我的妹妹。"), ("I do not understand.", "我不明白。"),
    ("Have a good trip.", "一路平安。"), ("The lesson starts at nine.", "课九点开始。"),
    ("Please speak slowly.", "请说慢一点。"), ("Good night.", "晚安。"),
)  # fmt: skip


def sentence(lang: str, rng: random.Random) -> str:
    """One sentence in ``lang`` (``en`` or ``zh``) drawn from the templates and word lists."""
    if lang == "en":
        words, template = _EN, rng.choice(_EN_TEMPLATES)
        slots = {k: rng.choice(v) for k, v in words.items()}
        slots["Subj"] = slots["subj"][0].upper() + slots["subj"][1:]
    elif lang == "zh":
        words, template = _ZH, rng.choice(_ZH_TEMPLATES)
        slots = {k: rng.choice(v) for k, v in words.items()}
        slots["name2"] = rng.choice([n for n in words["name"] if n != slots["name"]])
    else:
        raise ValueError(f"unknown language {lang!r} (known: {', '.join(LANGUAGES)})")
    return template.format(**slots)


# The Mandarin phrases cut into words by hand (one string per phrase, words separated by spaces, no
# punctuation); ``phrase_words`` checks that each cut spells its phrase exactly.
_ZH_PHRASE_WORDS = (
    "早上 好", "非常 感谢", "车站 在 哪里", "我 今天 很 高兴", "天气 很 好", "请 坐", "这个 多少 钱",
    "我 喜欢 绿茶", "明天 见", "现在 几点 了", "我 饿 了", "请 打开 窗户", "我的 朋友 是 医生",
    "火车 晚点 了", "你 会 说 中文 吗", "外面 在 下雨", "我 住在 一个 小 城市", "我们 去 公园 吧",
    "这本 书 很 有意思", "咖啡 太 烫 了", "生日 快乐", "对不起", "你 在 哪里 工作", "商店 关门 了",
    "我 需要 一辆 出租车", "欢迎 来 我们 家", "房间 很 干净", "你 能 帮 我 吗", "我 待会儿 给 你 打电话",
    "饭菜 很 好吃", "我的 手机 坏 了", "我们 要 回家 了", "在 拐角处 左转", "音乐 太 吵 了",
    "她 是 我的 妹妹", "我 不 明白", "一路 平安", "课 九点 开始", "请 说 慢 一点", "晚安",
)  # fmt: skip
_PUNCT = ".,?!。，？！"


@functools.cache
def phrase_words(lang: str) -> tuple[str, ...]:
    """The distinct words of the 40 translation phrases in ``lang``, in first-seen order (English: a
    phrase's first word lower-cased unless it is "I"; Mandarin: a hand segmentation)."""
    if lang == "en":
        words = []
        for english, _ in PHRASES:
            first, *rest = (w.strip(_PUNCT) for w in english.split())
            words += [first if first == "I" else first.lower(), *rest]
    elif lang == "zh":
        for cut, (_, z) in zip(_ZH_PHRASE_WORDS, PHRASES, strict=True):
            if cut.replace(" ", "") != z.rstrip(_PUNCT):
                raise AssertionError(f"the word cut {cut!r} does not spell {z!r}")
        words = [w for cut in _ZH_PHRASE_WORDS for w in cut.split()]
    else:
        raise ValueError(f"unknown language {lang!r} (known: {', '.join(LANGUAGES)})")
    return tuple(dict.fromkeys(words))


def _key(text: str) -> str:
    """A sentence reduced to its lower-cased characters without spaces or punctuation."""
    return "".join(c for c in text.lower() if c not in _PUNCT and not c.isspace())


@functools.cache
def _phrase_keys(lang: str) -> frozenset[str]:
    return frozenset(_key(pair[LANGUAGES.index(lang)]) for pair in PHRASES)


def word_sequence(lang: str, rng: random.Random, phrase_share: float = 0.0) -> str:
    """A template-free sentence: 3–7 slot phrases of ``lang`` (any slot, any order), e.g. "Emma the
    yellow door quiet at midnight." Such sentences carry no sentence-level prior, so a model trained
    on them has to hear each word (docs/DEFAULT_MODEL.md §7, session 6).

    With probability ``phrase_share`` it is instead a short sequence of 2–5 words of the translation
    phrases (:func:`phrase_words`), e.g. "Taxi birthday need." or "晚安出租车。": short clips whose words
    the phrases use, so that the *vocabulary* of the held-out phrases is heard in training (the
    phrases themselves stay held out) and a short clip is not taken for the nearest training phrase
    (§7, session 12). At 0 the draws are those of earlier versions.
    """
    words = {"en": _EN, "zh": _ZH}.get(lang)
    if words is None:
        raise ValueError(f"unknown language {lang!r} (known: {', '.join(LANGUAGES)})")
    if phrase_share > 0 and rng.random() < phrase_share:
        vocab, phrases = phrase_words(lang), _phrase_keys(lang)
        units = [rng.choice(vocab) for _ in range(rng.randint(2, 5))]
        while _key(" ".join(units)) in phrases:  # never a phrase itself (e.g. "Good night.")
            units = [rng.choice(vocab) for _ in range(rng.randint(2, 5))]
    else:
        units = [rng.choice(words[k]) for k in rng.choices(sorted(words), k=rng.randint(3, 7))]
    if lang == "zh":
        return "".join(units) + "。"
    text = " ".join(units)
    return text[0].upper() + text[1:] + "."


def sentence_pools(
    languages: tuple[str, ...],
    n_train: int,
    n_test: int,
    seed: int,
    word_sequences: float = 0.0,
    phrase_share: float = 0.0,
) -> dict[str, dict[str, list[str]]]:
    """Disjoint train and held-out sentence pools per language: ``{"train"|"test": {lang: [...]}}``.

    Held-out sentences are drawn first from their own stream; train draws skip them. A pool may be
    smaller than asked when the templates run out of distinct sentences. ``word_sequences`` is the
    share of train sentences drawn by :func:`word_sequence` instead of the templates (the held-out
    pool keeps to the templates); at 0 the pools are those of earlier versions. ``phrase_share`` is
    passed to :func:`word_sequence`.
    """
    pools: dict[str, dict[str, list[str]]] = {"train": {}, "test": {}}
    for lang in languages:
        taken: set[str] = set()
        for split, n in (("test", n_test), ("train", n_train)):
            rng = random.Random(f"{seed}:{split}:{lang}")
            out: list[str] = []
            for _ in range(n * 20):
                if len(out) >= n:
                    break
                free = split == "train" and word_sequences > 0 and rng.random() < word_sequences
                s = word_sequence(lang, rng, phrase_share) if free else sentence(lang, rng)
                if s not in taken:
                    taken.add(s)
                    out.append(s)
            pools[split][lang] = out
    return pools


def phrase_split(seed: int, test_fraction: float) -> dict[str, list[tuple[str, str]]]:
    """The parallel phrases split into ``train`` / ``test`` lists of ``(english, mandarin)``."""
    order = list(PHRASES)
    random.Random(f"{seed}:phrases").shuffle(order)
    k = max(1, round(len(order) * test_fraction))
    return {"test": order[:k], "train": order[k:]}


# ---------------------------------------------------------------------------- style instructions
_STYLE_WORDS = {
    "en": {
        "rate": {"slow": "slowly", "fast": "quickly"},
        "pitch": {"low": "in a low voice", "high": "in a high voice"},
        "volume": {"quiet": "softly", "loud": "loudly"},
        "whisper": "in a whisper",
        "gender": {"F": "with a female voice", "M": "with a male voice"},
    },
    "zh": {
        "rate": {"slow": "语速慢一点", "fast": "语速快一点"},
        "pitch": {"low": "声音低沉", "high": "声音高亢"},
        "volume": {"quiet": "声音轻一点", "loud": "声音大一点"},
        "whisper": "用耳语的方式说",
        "gender": {"F": "用女声", "M": "用男声"},
    },
}


def instruction(style: dict[str, str], gender: str | None, lang: str) -> str:
    """A natural-language instruction naming a style.

    ``style`` maps ``rate`` (slow/normal/fast), ``pitch`` (low/normal/high), ``volume``
    (quiet/normal/loud) and ``whisper`` ("yes"/"no"); ``gender`` is ``F``/``M``/None. Instruction
    language ``lang`` is independent of the spoken text's language.
    """
    w = _STYLE_WORDS[lang]
    parts = []
    if gender:
        parts.append(w["gender"][gender])
    if style.get("whisper") == "yes":
        parts.append(w["whisper"])
    for key in ("rate", "pitch", "volume"):
        value = style.get(key, "normal")
        if value != "normal":
            parts.append(w[key][value])
    if not parts:
        return "Speak in a normal, neutral voice." if lang == "en" else "用正常平稳的语气说。"
    if lang == "en":
        return "Speak " + ", ".join(parts) + "."
    return "，".join(parts) + "。"
