"""Synthetic speech corpus on espeak-ng (``mimo-audio data synth``): clips plus JSONL manifests in the
training stack's record format (:mod:`mimo_audio.train.lm_data`).

The corpus is a list of *units*, each rendering one clip or a group of three clip pairs:

| unit | clips | manifests |
|---|---|---|
| ``plain`` | a clean clip, neutral style | continuation |
| ``styled`` | a clip with a drawn rate / pitch / volume / whisper | instruct_tts |
| ``noisy`` | a clip with noise and/or reverberation | (asr, tokenizer) |
| ``vc`` | 3 pairs: same text, source voice → one target voice | vc (in-context, 2 examples + query) |
| ``speed`` | 3 pairs: same voice and text, normal → slow or fast | speed |
| ``denoise`` | 3 pairs: noisy → clean | denoise |
| ``translate`` | 3 pairs: same voice, English ↔ Mandarin phrase | translate (needs both languages) |

``units`` restricts the corpus to some kinds (e.g. only ``vc``); ``blend_voices`` adds that many train
speakers, each a blend of two train variants (:func:`synth_audio.blend_speakers`), so in-context
units see far more voices than espeak-ng's ~60 variants. The test split never changes with either.

Every clip (styled, noisy and paired ones included) also gets an ``asr`` and a ``tokenizer`` record,
and every clean clip in the neutral style (rate class normal) a ``tts`` record; with ``word_times``
the ``tts`` and ``instruct_tts`` records carry when each word starts (:func:`add_word_starts`).
Held-out speakers and held-out sentences (and phrases) form the test split: ``test_<name>.jsonl`` next to
``train_<name>.jsonl``; ``train_lm.jsonl`` / ``test_lm.jsonl`` join the LM tasks. Clips live in
``clips/<xx>/<key>.wav`` (24 kHz mono 16-bit), named by a hash of what they contain, so a re-run
skips clips already written (all writes are atomic) and the corpus is a pure function of its options.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from ..audio import atomic_write, write_audio
from ..errors import MimoAudioError
from . import synth_audio as sa
from . import synth_text as st

UNIT_WEIGHTS = {
    "plain": 0.25, "styled": 0.35, "noisy": 0.15,
    "vc": 0.08, "speed": 0.06, "denoise": 0.05, "translate": 0.06,
}  # fmt: skip
NEUTRAL = {"rate": "normal", "pitch": "normal", "volume": "normal", "whisper": "no"}
GROUP_UNITS = ("vc", "speed", "denoise", "translate")
LM_MANIFESTS = ("asr", "tts", "instruct_tts", "continuation", "vc", "speed", "denoise", "translate")
MANIFESTS = (*LM_MANIFESTS, "tokenizer")
GROUP_PAIRS = 3  # pairs per in-context group: 2 examples + the query
HELD_OUT_SPEAKERS = 0.15  # share of the speakers kept for the test split
SECONDS_PER_CLIP = 2.7  # mean clip length of a 1 652-clip corpus (seed 0); sizes --hours
ICL_INSTRUCTIONS = {
    "vc": "Convert the timbre of the input speech to target timbre.",
    "speed": "Convert the speaking rate of the input speech to target speaking rate.",
    "denoise": "Remove the background noise from the input speech.",
    "translate": "Translate the input speech into the target language.",
}  # the few-shot presets of mimo_audio.api (FEWSHOT_PRESETS); checked equal in tests


@dataclass(frozen=True)
class Clip:
    """What one clip holds; :attr:`key` (a hash of all of it) names the file."""

    text: str
    lang: str
    speaker: sa.Speaker
    style: sa.Style
    augment: sa.Augment | None = None

    @property
    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True, ensure_ascii=False)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    @property
    def path(self) -> str:
        return f"clips/{self.key[:2]}/{self.key}.wav"

    def meta(self) -> dict:
        return {"lang": self.lang, "speaker": self.speaker.id, "style": self.style.as_dict(),
                "augment": self.augment.as_dict() if self.augment else None}  # fmt: skip


@dataclass
class SynthOptions:
    """Corpus options: ``utterances`` train clips (about; units are whole), held-out share, languages."""

    out: Path
    utterances: int = 1000
    seed: int = 0
    languages: tuple[str, ...] = ("en", "zh")
    test_fraction: float = 0.1
    word_sequences: float = 0.0  # share of train sentences that are template-free word sequences
    phrase_words: float = 0.0  # share of word sequences made of the translation phrases' words
    word_times: bool = False  # tts / instruct_tts records get espeak-ng's word start times
    blend_voices: int = 0  # extra train speakers, each a blend of two train variants
    units: tuple[str, ...] = ()  # unit kinds to draw (empty: all of UNIT_WEIGHTS)
    jobs: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        bad = [lang for lang in self.languages if lang not in st.LANGUAGES]
        if bad or not self.languages:
            raise MimoAudioError(f"--languages: use a comma list of {', '.join(st.LANGUAGES)}, got {bad}")
        if self.utterances < 1:
            raise MimoAudioError(f"--utterances must be >= 1, got {self.utterances}")
        if not 0 < self.test_fraction < 1:
            raise MimoAudioError(f"--test-fraction must be in (0, 1), got {self.test_fraction}")
        if not 0 <= self.word_sequences <= 1:
            raise MimoAudioError(f"--word-sequences must be in [0, 1], got {self.word_sequences}")
        if not 0 <= self.phrase_words <= 1:
            raise MimoAudioError(f"--phrase-words must be in [0, 1], got {self.phrase_words}")
        if self.phrase_words > 0 and self.word_sequences == 0:
            raise MimoAudioError("--phrase-words applies to word sequences: give --word-sequences too")
        if self.jobs < 1:
            raise MimoAudioError(f"--jobs must be >= 1, got {self.jobs}")
        if self.blend_voices < 0:
            raise MimoAudioError(f"--blend-voices must be >= 0, got {self.blend_voices}")
        self.units = tuple(self.units)
        bad = [u for u in self.units if u not in UNIT_WEIGHTS]
        if bad:
            raise MimoAudioError(f"--units: use a comma list of {', '.join(UNIT_WEIGHTS)}, got {bad}")
        if self.units == ("translate",) and len(self.languages) < 2:
            raise MimoAudioError("--units translate needs both languages (--languages en,zh)")


@dataclass
class Plan:
    """Every clip to render (by key) and every manifest's records, per split."""

    clips: dict[str, Clip] = field(default_factory=dict)
    records: dict[str, dict[str, list[dict]]] = field(default_factory=dict)
    speakers: dict[str, list[str]] = field(default_factory=dict)


# ---------------------------------------------------------------------------- planning
class _SplitPlanner:
    """Draws the units of one split from its own speakers, sentences and phrases."""

    def __init__(self, plan: Plan, split: str, opts: SynthOptions, speakers, sentences, phrases) -> None:
        self.plan, self.opts = plan, opts
        self.rng = random.Random(f"{opts.seed}:{split}:units")
        self.speakers, self.sentences, self.phrases = speakers, sentences, phrases
        self.rec = plan.records.setdefault(split, {name: [] for name in MANIFESTS})
        self.kinds = [
            k
            for k in UNIT_WEIGHTS
            if (k != "translate" or len(opts.languages) == 2) and (not opts.units or k in opts.units)
        ]

    def add(self, clip: Clip) -> str:
        """Register a clip; a new one gets ``tokenizer`` and ``asr`` records, and a ``tts`` record when
        it is clean and in the neutral style. Returns its path."""
        if clip.key not in self.plan.clips:
            self.plan.clips[clip.key] = clip
            meta = clip.meta()
            self.rec["tokenizer"].append({"audio": clip.path, "text": clip.text})
            self.rec["asr"].append({"task": "asr", "audio": clip.path, "text": clip.text, "meta": meta})
            if clip.augment is None and clip.style.as_dict() == NEUTRAL:
                self.rec["tts"].append({"task": "tts", "text": clip.text, "audio": clip.path, "meta": meta})
        return clip.path

    def run(self, target_clips: int) -> None:
        """Add units until the split holds ``target_clips`` clips: each kind once, then by weight."""
        made = units = 0
        weights = [UNIT_WEIGHTS[k] for k in self.kinds]
        while made < target_clips or units < len(self.kinds):
            kind = self.kinds[units] if units < len(self.kinds) else self.rng.choices(self.kinds, weights)[0]
            made += getattr(self, f"_{kind}")()
            units += 1

    # ----- draws
    def _lang(self) -> str:
        return self.rng.choice(self.opts.languages)

    def _text(self, lang: str) -> str:
        return self.rng.choice(self.sentences[lang])

    def _neutral(self, speaker: sa.Speaker, text: str, lang: str, rate: str | None = None) -> Clip:
        return Clip(text, lang, speaker, sa.draw_style(self.rng, rate=rate, plain=True))

    # ----- single-clip units
    def _plain(self) -> int:
        lang = self._lang()
        clip = self._neutral(self.rng.choice(self.speakers), self._text(lang), lang)
        self.rec["continuation"].append({"task": "continuation", "audio": self.add(clip)})
        return 1

    def _styled(self) -> int:
        lang, speaker = self._lang(), self.rng.choice(self.speakers)
        clip = Clip(self._text(lang), lang, speaker, sa.draw_style(self.rng))
        path = self.add(clip)
        gender = speaker.gender if self.rng.random() < 0.5 else None
        text = st.instruction(clip.style.as_dict(), gender, self._lang())
        self.rec["instruct_tts"].append(
            {"task": "tts", "text": clip.text, "audio": path, "instruction": text, "meta": clip.meta()}
        )
        return 1

    def _noisy(self) -> int:
        lang = self._lang()
        clean = self._neutral(self.rng.choice(self.speakers), self._text(lang), lang)
        self.add(replace(clean, augment=sa.draw_augment(self.rng)))
        return 1

    # ----- pair groups (in-context S2S)
    def _group(self, kind: str, pairs: list[tuple[Clip, Clip]]) -> int:
        """Records of a group of pairs: each pair in turn is the query, the others the examples."""
        paths = [(self.add(a), self.add(b), b.text) for a, b in pairs]
        for q, (q_in, q_out, q_text) in enumerate(paths):
            examples = [p for j, p in enumerate(paths) if j != q]
            self.rec[kind].append(
                {
                    "task": "in_context_s2s",
                    "instruction": ICL_INSTRUCTIONS[kind],
                    "examples": [
                        {"input_audio": i, "output_audio": o, "output_transcription": t}
                        for i, o, t in examples
                    ],
                    "audio": q_in,
                    "output_audio": q_out,
                    "output_transcription": q_text,
                }
            )
        return 2 * len(pairs)

    def _vc(self) -> int:
        lang, target = self._lang(), self.rng.choice(self.speakers)
        others = [s for s in self.speakers if s != target]
        pairs = []
        for _ in range(GROUP_PAIRS):
            text = self._text(lang)
            pairs.append(
                (self._neutral(self.rng.choice(others), text, lang), self._neutral(target, text, lang))
            )
        return self._group("vc", pairs)

    def _speed(self) -> int:
        lang, speaker, rate = self._lang(), self.rng.choice(self.speakers), self.rng.choice(("slow", "fast"))
        pairs = []
        for _ in range(GROUP_PAIRS):
            text = self._text(lang)
            pairs.append(
                (self._neutral(speaker, text, lang, "normal"), self._neutral(speaker, text, lang, rate))
            )
        return self._group("speed", pairs)

    def _denoise(self) -> int:
        lang, pairs = self._lang(), []
        for _ in range(GROUP_PAIRS):
            clean = self._neutral(self.rng.choice(self.speakers), self._text(lang), lang)
            pairs.append((replace(clean, augment=sa.draw_augment(self.rng)), clean))
        return self._group("denoise", pairs)

    def _translate(self) -> int:
        speaker, src = self.rng.choice(self.speakers), self.rng.choice(("en", "zh"))
        dst = "zh" if src == "en" else "en"
        chosen = self.rng.sample(self.phrases, min(GROUP_PAIRS, len(self.phrases)))
        pairs = []
        for en, zh in chosen:
            texts = {"en": en, "zh": zh}
            pairs.append((self._neutral(speaker, texts[src], src), self._neutral(speaker, texts[dst], dst)))
        return self._group("translate", pairs)


def build_plan(opts: SynthOptions) -> Plan:
    """Every clip and record of the corpus (no audio rendered): a pure function of ``opts``."""
    everyone = sa.speakers(opts.seed)
    k = max(2, round(len(everyone) * HELD_OUT_SPEAKERS))
    split_speakers = {"test": everyone[:k], "train": everyone[k:]}
    split_speakers["train"] += sa.blend_speakers(everyone[k:], opts.blend_voices, opts.seed)
    n_test = max(1, round(opts.utterances * opts.test_fraction))
    pools = st.sentence_pools(
        opts.languages,
        max(50, opts.utterances),
        max(20, n_test),
        opts.seed,
        opts.word_sequences,
        opts.phrase_words,
    )
    phrases = st.phrase_split(opts.seed, 0.2)
    plan = Plan()
    for split, n in (("train", opts.utterances), ("test", n_test)):
        planner = _SplitPlanner(plan, split, opts, split_speakers[split], pools[split], phrases[split])
        planner.run(n)
        plan.speakers[split] = [s.id for s in split_speakers[split]]
    return plan


# ---------------------------------------------------------------------------- rendering
def render_clip(out: str | Path, clip: Clip) -> float:
    """Write one clip (skipped when its file exists); returns its length in seconds."""
    path = Path(out) / clip.path
    if path.exists():
        return float(sf.info(str(path)).duration)
    wav = sa.render(clip.text, clip.lang, clip.speaker, clip.style)
    if clip.augment is not None:
        wav = clip.augment.apply(wav, np.random.default_rng(int(clip.key, 16)))
    write_audio(path, wav, sa.SAMPLE_RATE)
    return wav.shape[0] / sa.SAMPLE_RATE


def _render_one(args: tuple[str, Clip]) -> float:
    return render_clip(*args)


def _clip_word_starts(clip: Clip) -> list[list]:
    return [
        [pos, round(sec, 3)] for pos, sec in sa.word_starts(clip.text, clip.lang, clip.speaker, clip.style)
    ]


def add_word_starts(plan: Plan, pool=None) -> None:
    """Give every ``tts`` and ``instruct_tts`` record ``word_starts``: ``[[character offset in text,
    seconds], …]`` from espeak-ng's word events for its clip (:func:`synth_audio.word_starts`). LM
    training can then place each word's tokens where its speech starts (``data.tts_alignment``)."""
    by_path = {c.path: c for c in plan.clips.values()}
    records = [r for recs in plan.records.values() for name in ("tts", "instruct_tts") for r in recs[name]]
    clips = list({r["audio"]: by_path[r["audio"]] for r in records}.values())
    results = pool.map(_clip_word_starts, clips, chunksize=64) if pool else map(_clip_word_starts, clips)
    starts = {c.path: w for c, w in zip(clips, results, strict=True)}
    for r in records:
        r["word_starts"] = starts[r["audio"]]


def _write_jsonl(path: Path, records: Sequence[dict]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def synthesize(opts: SynthOptions) -> dict:
    """Render the corpus of ``opts`` into ``opts.out`` and write its manifests; returns ``meta.json``."""
    sa.check_espeak()
    plan = build_plan(opts)
    clips = list(plan.clips.values())
    work = [(str(opts.out), c) for c in clips]
    bar = tqdm(total=len(work), desc="synth", unit="clip", file=sys.stderr, disable=not opts.progress)
    seconds: dict[str, float] = {}
    with bar, ProcessPoolExecutor(opts.jobs) if opts.jobs > 1 else nullcontext() as pool:
        results = pool.map(_render_one, work, chunksize=8) if pool else map(_render_one, work)
        for clip, sec in zip(clips, results, strict=True):
            seconds[clip.path] = sec
            bar.update(1)
        if opts.word_times:
            add_word_starts(plan, pool)
    counts = {}
    for split, recs in plan.records.items():
        lm = []
        for name in MANIFESTS:
            _write_jsonl(opts.out / f"{split}_{name}.jsonl", recs[name])
            counts[f"{split}_{name}"] = len(recs[name])
            if name in LM_MANIFESTS:
                lm += recs[name]
        _write_jsonl(opts.out / f"{split}_lm.jsonl", lm)
        counts[f"{split}_lm"] = len(lm)
    hours = {
        split: round(sum(seconds[p] for p in {r["audio"] for r in recs["tokenizer"]}) / 3600, 4)
        for split, recs in plan.records.items()
    }
    meta = {
        "options": {"utterances": opts.utterances, "seed": opts.seed, "languages": list(opts.languages),
                    "test_fraction": opts.test_fraction, "word_sequences": opts.word_sequences,
                    "phrase_words": opts.phrase_words, "word_times": opts.word_times,
                    **({"blend_voices": opts.blend_voices} if opts.blend_voices else {}),
                    **({"units": list(opts.units)} if opts.units else {})},
        "clips": len(clips),
        "hours": hours,
        "records": counts,
        "speakers": plan.speakers,
    }  # fmt: skip
    atomic_write(opts.out / "meta.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1)))
    return meta
