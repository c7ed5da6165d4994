"""``mimo-audio eval SUITE --data MANIFEST --out DIR`` and ``mimo-audio eval manifest KIND SRC --out FILE``.

A thin layer over :mod:`mimo_audio.eval`, imported inside the commands only, so that the rest of the
CLI works without the ``[eval]`` extra and a missing extra is one error line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from ..errors import MimoAudioError
from .task_cmds import VOICE_MATCH_ARG, add_model_options

SUITES = ("asr", "tts", "tokenizer", "vc", "fewshot", "mcq")  # mirrors mimo_audio.eval.SUITES
PRESETS = ("vc", "emotion", "speed", "denoise", "translate")  # mirrors mimo_audio.api.FEWSHOT_PRESETS
HELP = {
    "asr": "speech recognition: WER (en) / CER (zh)",
    "tts": "synthesis: ASR-judge WER/CER, DTW identification, speaker similarity, duration ratio",
    "tokenizer": "audio tokenizer round trip: PESQ-NB/WB, STOI, speaker similarity, bitrate",
    "vc": "few-shot voice conversion: closer-to-target share, content WER/CER",
    "fewshot": "every few-shot preset (vc, emotion, speed, denoise, translate)",
    "mcq": "multiple-choice audio questions: accuracy overall and per category",
}


def _import_eval(suite: str | None = None, judge: str | None = None):
    hint = "install the [eval] extra: pip install 'mimo-audio[eval]'"
    try:
        from .. import eval as ev
    except ImportError as e:
        raise MimoAudioError(f"mimo-audio eval needs {e.name or 'a missing module'}; {hint}") from None
    missing = ev.missing_modules(suite, judge) if suite else []
    if missing:
        raise MimoAudioError(f"the {suite} suite needs {', '.join(missing)}; {hint}")
    return ev


def _suite_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help=HELP[name], description=f"Evaluate: {HELP[name]}.")
    p.add_argument(
        "--data", required=True, metavar="MANIFEST", help="JSONL manifest (or Seed-TTS meta.lst for tts)"
    )
    p.add_argument(
        "--out", required=True, metavar="DIR", help="results folder (cache, results.json, report.md, plots)"
    )
    p.add_argument(
        "--on-error",
        choices=("skip", "stop"),
        default="skip",
        help="bad manifest line or failing item: record and go on (default), or stop",
    )
    p.add_argument("--batch-size", type=int, default=8, help="items generated per batch (default 8)")
    p.add_argument("--workers", type=int, default=2, help="threads for CPU metrics (default 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary on stderr")
    add_model_options(p)
    g = p.add_argument_group("generation")
    g.add_argument("--seed", type=int, default=None, help="base seed (each item adds a hash of its id)")
    g.add_argument("--greedy", action="store_true", help="greedy text and speech decoding")
    g.add_argument("--temperature", type=float, default=None, help="text temperature")
    g.add_argument("--speech-temperature", type=float, default=None, help="speech temperature")
    g.add_argument("--max-new-steps", type=int, default=None, help="cap on generated patches per item")
    if name in ("tts", "vc", "fewshot"):
        j = p.add_argument_group("judge")
        j.add_argument(
            "--judge",
            choices=("model", "pocketsphinx", "none"),
            default="model",
            help="ASR judge of the output's content (default: the model's own ASR)",
        )
        j.add_argument(
            "--judge-model",
            metavar="DIR",
            default=None,
            help="LM folder for the model judge (e.g. Instruct when evaluating Base)",
        )
    if name == "tts":
        p.add_argument("--instruction", default=None, help="style instruction for items without one")
        p.add_argument(
            "--dtw-distractors",
            type=int,
            default=24,
            help="other sentences' renderings each output is compared with (default 24)",
        )
    if name in ("vc", "fewshot"):
        g.add_argument(
            "--best-of",
            type=int,
            default=None,
            metavar="N",
            help="candidates per item, the one that follows the examples best kept (default: the model's)",
        )
        g.add_argument("--voice-match", **VOICE_MATCH_ARG)
    if name == "fewshot":
        p.add_argument("--preset", choices=PRESETS, default="vc", help="preset of items without one")
    if name == "tokenizer":
        p.add_argument("--codebooks", type=int, default=8, help="codebooks kept (default 8, as the LM)")
    if name == "mcq":
        p.add_argument("--thinking", action="store_true", help="let the model reason before answering")
    p.set_defaults(func=cmd_eval, suite=name)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval`` to the top-level sub-parsers."""
    p = subparsers.add_parser(
        "eval",
        help="evaluation suites (needs the [eval] extra)",
        description="Run an evaluation suite over a manifest, or build a manifest from a test set.",
    )
    sub = p.add_subparsers(dest="suite", metavar="SUITE", required=True)
    for name in SUITES:
        _suite_parser(sub, name)
    m = sub.add_parser(
        "manifest",
        help="build a JSONL manifest from LibriSpeech, AISHELL-1, Seed-TTS-Eval or a synthetic corpus",
        description="Write a JSONL manifest with paths relative to the output file's folder.",
    )
    m.add_argument("kind", choices=("librispeech", "aishell", "seedtts", "synth"))
    m.add_argument(
        "source",
        metavar="SRC",
        help="LibriSpeech split folder, AISHELL-1 folder, a meta.lst, or a `data synth` corpus folder",
    )
    m.add_argument("--out", required=True, metavar="FILE", help="manifest to write (.jsonl)")
    m.add_argument("--split", default="test", help="AISHELL-1 split under wav/ (default test)")
    m.add_argument(
        "--suite",
        choices=("tokenizer", "asr", "tts", "vc"),
        default=None,
        help="synth: the suite the manifest is for (held-out split; required for synth)",
    )
    m.add_argument(
        "--count",
        type=int,
        default=None,
        help="synth: clips per language (tokenizer 12, asr 50), sentences (tts 20) or groups (vc 50)",
    )
    m.set_defaults(func=cmd_manifest)


def _gen(args: argparse.Namespace) -> dict[str, Any]:
    g: dict[str, Any] = {
        "seed": args.seed,
        "temperature": args.temperature,
        "speech_temperature": args.speech_temperature,
        "max_new_steps": args.max_new_steps,
        "best_of": getattr(args, "best_of", None),
        "voice_match": getattr(args, "voice_match", None),
    }
    if args.greedy:
        g.update(greedy=True, speech_greedy=True)
    return {k: v for k, v in g.items() if v is not None}


def cmd_eval(args: argparse.Namespace) -> int:
    ev = _import_eval(args.suite, getattr(args, "judge", None))
    if args.quiet:
        logging.getLogger().setLevel(logging.WARNING)
    if not Path(args.data).is_file():
        raise MimoAudioError(f"--data {args.data}: no such file")
    if args.workers < 1:
        raise MimoAudioError(f"--workers must be ≥ 1, got {args.workers}")
    if getattr(args, "voice_match", None) is not None:
        from ..voice_match import VoiceMatch

        VoiceMatch.parse(args.voice_match)  # a bad value fails before any model loads
    model, tokenizer = args.model, args.tokenizer
    if args.suite != "tokenizer" or not tokenizer:  # the tokenizer suite needs no LM
        from ..defaults import resolve_model_pair

        model, tokenizer = resolve_model_pair(model, tokenizer)
    load = {
        "device": args.device,
        "dtype": args.dtype,
        "quantize": args.quantize,
        "variant": args.variant,
        "max_len": args.max_len,
        "max_batch": args.batch_size,
    }
    try:
        suite = ev.make_suite(
            args.suite,
            model=str(model) if model else None,
            tokenizer=str(tokenizer),
            load={k: v for k, v in load.items() if v is not None},
            gen=_gen(args),
            judge=getattr(args, "judge", "model"),
            judge_model=getattr(args, "judge_model", None),
            workers=args.workers,
            codebooks=getattr(args, "codebooks", 8),
            preset=getattr(args, "preset", "vc"),
            instruction=getattr(args, "instruction", None),
            dtw_distractors=getattr(args, "dtw_distractors", 24),
            thinking=getattr(args, "thinking", False),
        )
    except ValueError as e:
        raise MimoAudioError(str(e)) from None
    results = ev.run_suite(
        suite,
        args.data,
        args.out,
        on_error=args.on_error,
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    if not args.quiet:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in results.aggregate.items() if isinstance(v, float))
        print(
            f"{args.suite}: {len(results.items)} item(s), {len(results.errors)} error(s); {shown}",
            file=sys.stderr,
        )
        print(f"wrote {Path(args.out) / 'results.json'} and report.md", file=sys.stderr)
    return 0


def cmd_manifest(args: argparse.Namespace) -> int:
    _import_eval()
    from ..eval.builders import BUILDERS
    from ..eval.manifest import write_manifest

    out = Path(args.out)
    if out.is_dir():
        raise MimoAudioError(f"--out {out}: is a directory")
    rel = out.resolve().parent
    build = BUILDERS[args.kind]
    if args.kind == "synth":
        if args.suite is None:
            raise MimoAudioError("eval manifest synth needs --suite tokenizer|asr|tts|vc")
        entries, left_out = build(args.source, rel, args.suite, args.count)
        why = "not plain (styled, noisy or reverberant)"
    else:
        if args.suite is not None or args.count is not None:
            raise MimoAudioError("--suite and --count apply to `eval manifest synth` only")
        entries, left_out = (
            build(args.source, rel, args.split) if args.kind == "aishell" else build(args.source, rel)
        )
        why = "no audio/transcript or malformed"
    write_manifest(out, entries)
    note = f" ({left_out} left out: {why})" if left_out else ""
    print(f"wrote {len(entries)} item(s) to {out}{note}", file=sys.stderr)
    return 0
