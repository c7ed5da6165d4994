"""``mimo-audio data synth`` (synthetic espeak-ng corpus), ``mimo-audio data synth-vocab`` (the
default model's small BPE text tokenizer) and ``mimo-audio data regroup`` (new few-shot records from
a corpus's in-context pairs); registered into the ``data`` group by train_cmds."""

from __future__ import annotations

import argparse
import json
import math
import os

from ..errors import MimoAudioError


def register(data_sub: argparse._SubParsersAction) -> None:
    """Add ``data synth``, ``data synth-vocab`` and ``data regroup`` to the ``data`` sub-parsers."""
    p = data_sub.add_parser(
        "synth",
        help="synthesise a speech corpus with espeak-ng (+ noise, reverberation) and its manifests",
        description="Render English and Mandarin sentences with many espeak-ng voices and styles into "
        "24 kHz clips plus JSONL manifests (asr, tts, instruct_tts, vc, speed, denoise, translate, "
        "continuation, tokenizer; train_* and held-out test_*). Deterministic given --seed; re-running "
        "skips clips already written.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="corpus folder")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--utterances", type=int, default=None, help="train clips (default 1000)")
    size.add_argument("--hours", type=float, default=None, help="train audio, about (sets --utterances)")
    p.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    p.add_argument("--languages", default="en,zh", help="comma list of en, zh (default en,zh)")
    p.add_argument("--test-fraction", type=float, default=0.1, help="held-out clips per train clip (0.1)")
    p.add_argument(
        "--word-sequences",
        type=float,
        default=0.0,
        help="share of train sentences that are template-free word sequences (0; held-out keeps templates)",
    )
    p.add_argument(
        "--phrase-words",
        type=float,
        default=0.0,
        metavar="P",
        help="share of the word sequences that are short sequences of the translation phrases' words, so "
        "their vocabulary is heard in training while the held-out phrases stay held out (0; needs --word-sequences)",
    )
    p.add_argument(
        "--word-times",
        action="store_true",
        help="give tts and instruct_tts records espeak-ng's word start times (word_starts), for "
        "word-aligned TTS streams in LM training (data.tts_alignment)",
    )
    p.add_argument(
        "--blend-voices",
        type=int,
        default=0,
        metavar="N",
        help="add N train speakers, each a blend of two same-gender espeak-ng variants with jittered "
        "formants and pitch (0; the held-out split is unchanged)",
    )
    p.add_argument(
        "--units",
        default=None,
        metavar="KINDS",
        help="only these unit kinds, comma list of plain, styled, noisy, vc, speed, denoise, translate "
        "(default all)",
    )
    p.add_argument("--jobs", type=int, default=1, help="parallel rendering processes (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_synth)

    v = data_sub.add_parser(
        "synth-vocab",
        help="train the default model's small BPE text tokenizer (with the MiMo-Audio special tokens)",
        description="Train a byte-level BPE tokenizer.json on the synthetic sentence generator's text "
        "(and a corpus's manifests, if given) plus every prompt template, holding every special "
        "token of SPEC 9.1; writes tokenizer.json, tokenizer_config.json and special_tokens_map.json.",
    )
    v.add_argument("--out", required=True, metavar="DIR", help="output folder")
    v.add_argument("--corpus", default=None, metavar="DIR", help="also read the text of this synth corpus")
    v.add_argument("--vocab-size", type=int, default=2048, help="vocabulary incl. specials (default 2048)")
    v.add_argument("--seed", type=int, default=0, help="sentence generator seed (default 0)")
    v.set_defaults(func=cmd_vocab)

    g = data_sub.add_parser(
        "regroup",
        help="new few-shot training records from a synth corpus's in-context pairs (no new audio)",
        description="Pool the pairs of a synth corpus's in-context manifests (vc, speed, denoise, "
        "translate) by what they demonstrate (target voice, rate, languages) and draw new groups of "
        "examples + query from them, never a record the corpus already holds. Writes "
        "CORPUS/SPLIT_NAME.jsonl; encode it with `mimo-audio data encode` (its clips' codes are in "
        "the corpus's code store).",
    )
    g.add_argument("corpus", metavar="CORPUS", help="a `data synth` corpus folder")
    g.add_argument("--split", default="train", choices=("train", "test"), help="split (default train)")
    g.add_argument("--kinds", default="vc", help="comma list of vc, speed, denoise, translate (default vc)")
    g.add_argument("--records", type=int, default=1000, help="new records per kind (default 1000)")
    g.add_argument("--examples", type=int, default=2, help="example pairs per record (default 2)")
    g.add_argument("--seed", type=int, default=0, help="draw seed (default 0)")
    g.add_argument("--name", default="regrouped", help="manifest name: SPLIT_NAME.jsonl (default regrouped)")
    g.set_defaults(func=cmd_regroup)


def cmd_synth(args: argparse.Namespace) -> int:
    from ..data.synth import SECONDS_PER_CLIP, SynthOptions, synthesize

    if args.hours is not None:
        if args.hours <= 0:
            raise MimoAudioError(f"--hours must be > 0, got {args.hours}")
        utterances = math.ceil(args.hours * 3600 / SECONDS_PER_CLIP)
    else:
        utterances = args.utterances if args.utterances is not None else 1000
    units = tuple(x.strip() for x in (args.units or "").split(",") if x.strip())
    if args.units is not None and not units:
        raise MimoAudioError("--units: give at least one unit kind (leave the option out for all)")
    opts = SynthOptions(
        out=args.out,
        utterances=utterances,
        seed=args.seed,
        languages=tuple(x.strip() for x in args.languages.split(",") if x.strip()),
        test_fraction=args.test_fraction,
        word_sequences=args.word_sequences,
        phrase_words=args.phrase_words,
        word_times=args.word_times,
        blend_voices=args.blend_voices,
        units=units,
        jobs=args.jobs,
        progress=not args.quiet,
    )
    meta = synthesize(opts)
    print(json.dumps({"out": os.fspath(args.out), "clips": meta["clips"], "hours": meta["hours"]}))
    return 0


def cmd_vocab(args: argparse.Namespace) -> int:
    from ..data.synth_vocab import build_text_tokenizer, corpus_texts

    texts = corpus_texts(args.seed, args.corpus)
    out = build_text_tokenizer(texts, args.out, vocab_size=args.vocab_size)
    print(json.dumps({"out": os.fspath(out), "texts": len(texts)}))
    return 0


def cmd_regroup(args: argparse.Namespace) -> int:
    from ..data.regroup import regroup_corpus

    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    dest, n = regroup_corpus(
        args.corpus,
        split=args.split,
        kinds=kinds,
        count=args.records,
        examples=args.examples,
        seed=args.seed,
        name=args.name,
    )
    print(json.dumps({"out": os.fspath(dest), "records": n}))
    return 0
