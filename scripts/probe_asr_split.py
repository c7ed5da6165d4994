"""Where the default LM's ASR errors come from: sentences or voices (docs/DEFAULT_MODEL.md §7).

ASR CER per language on four sets of plain clips (neutral style, no noise or reverberation):

    training sentences, training voices      the corpus's own train clips
    held-out sentences, training voices      re-rendered with espeak-ng
    training sentences, held-out voices      re-rendered with espeak-ng
    held-out sentences, held-out voices      the corpus's own test clips (what the eval measures)

    python scripts/probe_asr_split.py MODEL TOKENIZER CORPUS [--count 12] [--json OUT.json]

A large gap between the first and the second row means the LM recalls training sentences as wholes
rather than hearing their words; between the first and the third, that it has not generalised across
voices.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import sys
from pathlib import Path

import soundfile as sf

from mimo_audio import MimoAudio
from mimo_audio.data import synth_audio as sa
from mimo_audio.eval.builders import _plain
from mimo_audio.eval.metrics.text import cer

ROWS = (("train", "train"), ("test", "train"), ("train", "test"), ("test", "test"))


@functools.cache  # each manifest is read once, not once per cell
def plain_records(corpus: Path, split: str) -> list[dict]:
    lines = (corpus / f"{split}_asr.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, filter(None, lines)) if _plain(r)]


def speaker_of(speaker_id: str) -> sa.Speaker:
    """``accent+variant@pPITCH`` (:attr:`Speaker.id`) → :class:`Speaker`."""
    accent, rest = speaker_id.split("+", 1)
    variant, pitch = rest.rsplit("@p", 1)
    return sa.Speaker(variant, int(pitch), accent)


def clips(corpus: Path, sentences: str, voices: str, lang: str, count: int, rng: random.Random):
    """``count`` (wav, text) pairs in ``lang``: the sentences of one split spoken by the other's voices."""
    recs = [r for r in plain_records(corpus, sentences) if r["meta"]["lang"] == lang][:count]
    if sentences == voices:
        return [(sf.read(corpus / r["audio"], dtype="float32")[0], r["text"]) for r in recs]
    pool = sorted({r["meta"]["speaker"] for r in plain_records(corpus, voices)})
    return [(sa.render(r["text"], lang, speaker_of(rng.choice(pool)), sa.Style()), r["text"]) for r in recs]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("tokenizer")
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--count", type=int, default=12, help="clips per language and row")
    ap.add_argument("--json", type=Path, help="also write the table as JSON here")
    args = ap.parse_args(argv)
    m = MimoAudio.from_pretrained(args.model, args.tokenizer, device="cpu", progress=False)
    rng = random.Random(0)
    table = []
    print("| sentences / voices | CER en | CER zh |\n|---|---:|---:|")
    for sentences, voices in ROWS:
        row = {"sentences": sentences, "voices": voices}
        for lang in ("en", "zh"):
            pairs = clips(args.corpus, sentences, voices, lang, args.count, rng)
            hyps = [r.text for r in m.asr([wav for wav, _ in pairs])]
            row[lang] = cer([t for _, t in pairs], hyps, lang)
        table.append(row)
        name = {"train": "training", "test": "held-out"}
        print(f"| {name[sentences]} / {name[voices]} | {row['en']:.1%} | {row['zh']:.1%} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
