"""Task commands: ``asr``, ``tts``, ``continue``, ``fewshot``, ``understand``, ``chat`` and the seed-style
``run --task ...``. Thin wrappers over :class:`mimo_audio.MimoAudio`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import MimoAudioError

log = logging.getLogger("mimo_audio")

AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3")
FEWSHOT_TASKS = {"fewshot_vc": "vc", "fewshot_emotion": "emotion", "fewshot_speed": "speed",
                 "fewshot_denoise": "denoise", "fewshot_translate": "translate"}  # fmt: skip
VOICE_MATCH_ARG: dict[str, Any] = {
    "default": None,
    "metavar": "on|off|K|JSON",
    "help": "render the converted speech nearer the examples' output voice (mimo_audio.voice_match): "
    'on, off, K neighbours, or \'{"k": 4, "content": 0.4, "timbre": 1.0}\' '
    "(default: the model's generation_config, for the vc instruction)",
}


# ---------------------------------------------------------------------------- shared options
def add_model_options(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The model-loading options shared by every command that loads MimoAudio."""
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default=os.environ.get("MIMO_AUDIO_MODEL"),
        help="LM folder (env MIMO_AUDIO_MODEL; default: the installed default model)",
    )
    g.add_argument(
        "--tokenizer",
        default=os.environ.get("MIMO_AUDIO_TOKENIZER"),
        help="audio tokenizer folder (env MIMO_AUDIO_TOKENIZER; default: the installed default model's)",
    )
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda if available)")
    g.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    g.add_argument("--quantize", default=None, choices=["int8"], help="int8 weight-only LM quantisation")
    g.add_argument(
        "--variant", default=None, choices=["base", "instruct"], help="override Base/Instruct detection"
    )
    g.add_argument("--max-len", type=int, default=8192, help="context length in patches (sizes the KV cache)")
    return g


def _model_args(p: argparse.ArgumentParser) -> None:
    add_model_options(p)
    s = p.add_argument_group("sampling")
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--greedy", action="store_true", default=None, help="greedy text and speech decoding")
    s.add_argument("--temperature", type=float, default=None, help="text temperature")
    s.add_argument("--top-k", type=int, default=None, help="text top-k (0 = off)")
    s.add_argument("--top-p", type=float, default=None, help="text top-p")
    s.add_argument("--speech-temperature", type=float, default=None)
    s.add_argument("--speech-top-k", type=int, default=None)
    s.add_argument("--speech-top-p", type=float, default=None)
    s.add_argument(
        "--max-new-steps", type=int, default=None, help="generated patches at most (6.25 per second)"
    )
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print machine-readable JSON to stdout")
    o.add_argument("--quiet", action="store_true", help="no progress bars or logs")


def _load(args: argparse.Namespace):
    from ..api import MimoAudio
    from ..defaults import resolve_model_pair

    args.model, args.tokenizer = resolve_model_pair(args.model, args.tokenizer)
    if args.quiet:
        logging.getLogger().setLevel(logging.WARNING)
    log.info("loading %s and %s", args.model, args.tokenizer)
    return MimoAudio.from_pretrained(
        args.model,
        args.tokenizer,
        device=args.device,
        dtype=args.dtype,
        variant=args.variant,
        quantize=args.quantize,
        max_batch=8,
        max_len=args.max_len,
        progress=not args.quiet,
    )


def _gen(args: argparse.Namespace) -> dict[str, Any]:
    g = {
        "seed": args.seed,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "speech_temperature": args.speech_temperature,
        "speech_top_k": args.speech_top_k,
        "speech_top_p": args.speech_top_p,
        "max_new_steps": args.max_new_steps,
    }
    if args.greedy:
        g.update(greedy=True, speech_greedy=True)
    return {k: v for k, v in g.items() if v is not None}


def _emit(args: argparse.Namespace, results: list[tuple[str | None, Any]], out: str | None = None) -> None:
    """Write audio to ``out`` and print text (or JSON) to stdout."""
    records = []
    for name, res in results:
        rec = {"input": name, **res.to_dict()}
        if out is not None:
            if res.audio is None:
                raise MimoAudioError("the model produced no audio")
            rec["audio"] = str(res.save(out))
        records.append(rec)
    if args.json:
        print(json.dumps(records[0] if len(records) == 1 else records, ensure_ascii=False))
        return
    for rec in records:
        if len(records) > 1 and rec["input"]:
            print(f"{rec['input']}\t{rec['text']}")
        elif rec["text"]:
            print(rec["text"])
        if "audio" in rec:
            log.info("wrote %s (%.2f s)", rec["audio"], rec["audio_seconds"])


def _check_out(out: str) -> str:
    if Path(out).suffix.lower() not in AUDIO_EXTS:
        raise MimoAudioError(f"--out {out}: use a .wav, .flac, .ogg or .mp3 file name")
    if Path(out).is_dir():
        raise MimoAudioError(f"--out {out} is a directory")
    return out


def _check_files(paths: list[str]) -> None:
    for p in paths:
        if not Path(p).is_file():
            raise MimoAudioError(f"{p}: no such file")


# ---------------------------------------------------------------------------- commands
def cmd_asr(args: argparse.Namespace) -> int:
    _check_files(args.audio)
    model = _load(args)
    results = model.asr(list(args.audio), template=args.template, **_gen(args))
    _emit(args, list(zip(args.audio, results, strict=True)))
    return 0


def cmd_tts(args: argparse.Namespace) -> int:
    out = _check_out(args.out)
    text = args.text if args.text != "-" else sys.stdin.read()
    if args.voice:
        _check_files([args.voice])
    if args.max_seconds is not None and not args.max_seconds > 0:
        raise MimoAudioError(f"--max-seconds must be > 0, got {args.max_seconds}")
    model = _load(args)
    res = model.tts(
        text,
        instruction=args.instruction,
        voice=args.voice,
        natural_instruction=args.natural,
        template=args.template,
        max_audio_seconds=args.max_seconds,
        **_gen(args),
    )
    _emit(args, [(None, res)], out)
    return 0


def cmd_continue(args: argparse.Namespace) -> int:
    out = _check_out(args.out)
    _check_files([args.audio])
    model = _load(args)
    res = model.continue_speech(args.audio, seconds=args.seconds, **_gen(args))
    _emit(args, [(args.audio, res)], out)
    return 0


def find_examples(folder: str | os.PathLike) -> tuple[list[tuple[Path, Path, str]], str | None]:
    """Example pairs of an examples folder, and its ``instruction.txt`` if present.

    Layout: ``<name>_input.<ext>`` + ``<name>_output.<ext>`` per example (wav/flac/ogg/mp3), with an
    optional transcript of the output in ``<name>_output.txt``; pairs sorted by name.
    """
    d = Path(folder)
    if not d.is_dir():
        raise MimoAudioError(f"--examples-dir {folder}: not a directory")
    inputs, outputs = {}, {}
    for f in sorted(d.iterdir()):
        if f.suffix.lower() not in AUDIO_EXTS:
            continue
        if f.stem.endswith("_input"):
            inputs[f.stem[: -len("_input")]] = f
        elif f.stem.endswith("_output"):
            outputs[f.stem[: -len("_output")]] = f
    unpaired = sorted(set(inputs) ^ set(outputs))
    if unpaired:
        raise MimoAudioError(f"--examples-dir {folder}: unpaired examples: {', '.join(unpaired)}")
    if not inputs:
        raise MimoAudioError(f"--examples-dir {folder}: no <name>_input / <name>_output audio pairs found")
    examples = []
    for name in sorted(inputs):
        txt = d / f"{name}_output.txt"
        examples.append(
            (inputs[name], outputs[name], txt.read_text(encoding="utf-8").strip() if txt.is_file() else "")
        )
    instr = d / "instruction.txt"
    return examples, (instr.read_text(encoding="utf-8").strip() if instr.is_file() else None)


def cmd_fewshot(args: argparse.Namespace) -> int:
    from ..api import FEWSHOT_PRESETS
    from ..tasks import check_best_of
    from ..voice_match import VoiceMatch

    out = _check_out(args.out)
    _check_files([args.target])
    examples, dir_instruction = find_examples(args.examples_dir)
    instruction = args.instruction or dir_instruction or FEWSHOT_PRESETS[args.preset]
    gen = _gen(args)
    best_of = getattr(args, "best_of", None)  # the seed-style `run` entry has no --best-of
    if best_of is not None:
        gen["best_of"] = check_best_of("in_context_s2s", best_of)
    voice_match = getattr(args, "voice_match", None)
    if voice_match is not None:
        VoiceMatch.parse(voice_match)  # a bad value fails before the model loads
        gen["voice_match"] = voice_match
    model = _load(args)
    res = model.in_context(args.target, examples=examples, instruction=instruction, **gen)
    _emit(args, [(args.target, res)], out)
    return 0


def cmd_understand(args: argparse.Namespace) -> int:
    _check_files(args.audio)
    model = _load(args)
    results = model.understand(list(args.audio), args.question, thinking=args.thinking, **_gen(args))
    _emit(args, list(zip(args.audio, results, strict=True)))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    if args.out:
        _check_out(args.out)
    turns = list(args.turn or [])
    if args.voice:
        _check_files([args.voice])
    for kind, value in turns:
        if kind == "audio":
            _check_files([value])
    if not turns and sys.stdin.isatty():
        return _interactive_chat(args)
    if not turns:
        text = sys.stdin.read().strip()
        if not text:
            raise MimoAudioError("chat needs --text or --audio (or text on standard input)")
        turns = [("text", text)]
    model = _load(args)
    messages = [{"role": "user", "content": Path(v) if k == "audio" else v} for k, v in turns]
    speech = True if args.speech_output else (False if args.text_output else None)
    res = model.chat(messages, speech_output=speech, thinking=args.thinking, system_prompt=args.system_prompt,
                     voice=args.voice, **_gen(args))  # fmt: skip
    if res.audio is not None and not args.out:
        args.out = "chat_reply.wav"
    _emit(args, [(None, res)], args.out if res.audio is not None else None)
    return 0


def _interactive_chat(args: argparse.Namespace) -> int:
    """A terminal conversation: type text, ``/audio PATH`` to speak a file, ``/reset``, ``/quit``."""
    model = _load(args)
    history: list[dict[str, Any]] = []
    speech = True if args.speech_output else (False if args.text_output else None)
    print("MiMo-Audio chat. Type a message, '/audio PATH' to send audio, '/reset' to start over, '/quit' to leave.",
          file=sys.stderr)  # fmt: skip
    turn = 0
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print(file=sys.stderr)
            return 0
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return 0
        if line == "/reset":
            history.clear()
            continue
        if line.startswith("/audio "):
            path = line[len("/audio ") :].strip()
            if not Path(path).is_file():
                print(f"no such file: {path}", file=sys.stderr)
                continue
            history.append({"role": "user", "content": Path(path)})
        else:
            history.append({"role": "user", "content": line})
        try:
            res = model.chat(history, speech_output=speech, thinking=args.thinking, system_prompt=args.system_prompt,
                             voice=args.voice, **_gen(args))  # fmt: skip
        except MimoAudioError as e:
            history.pop()
            print(f"error: {e}", file=sys.stderr)
            continue
        turn += 1
        reply: dict[str, Any] = {"text": res.text}
        shown = res.text
        if res.audio is not None:
            path = Path(args.out or "chat_reply.wav")
            path = path.with_name(f"{path.stem}_{turn}{path.suffix}")
            res.save(path)
            codes = model.audio_tokenizer.encode_for_lm(res.audio)
            reply["audio"] = codes
            shown = f"{res.text} [audio: {path}]"
        history.append({"role": "assistant", "content": reply if res.audio is not None else res.text})
        print(f"mimo> {shown}")


def cmd_run(args: argparse.Namespace) -> int:
    """Seed-compatible entry: ``run --task fewshot_vc|instruct_tts|tts|continuation|asr ...``."""
    out = args.output or args.out
    task = args.task
    if task in FEWSHOT_TASKS:
        if not (args.examples_dir and args.target_wav and out):
            raise MimoAudioError(f"--task {task} needs --examples_dir, --target_wav and --output")
        ns = argparse.Namespace(**vars(args))
        ns.out, ns.target, ns.preset, ns.instruction = (
            out,
            args.target_wav,
            FEWSHOT_TASKS[task],
            args.instruction,
        )
        return cmd_fewshot(ns)
    if task in ("tts", "instruct_tts"):
        if not args.text or not out:
            raise MimoAudioError(f"--task {task} needs --text and --out")
        if task == "instruct_tts" and not args.instruction:
            raise MimoAudioError("--task instruct_tts needs --instruction")
        ns = argparse.Namespace(**vars(args))
        ns.out, ns.voice, ns.natural, ns.template, ns.max_seconds = out, args.prompt, False, None, None
        return cmd_tts(ns)
    if task == "continuation":
        if not args.prompt or not out:
            raise MimoAudioError("--task continuation needs --prompt and --out")
        ns = argparse.Namespace(**vars(args))
        ns.out, ns.audio, ns.seconds = out, args.prompt, args.length
        return cmd_continue(ns)
    if task == "asr":
        if not args.prompt:
            raise MimoAudioError("--task asr needs --prompt AUDIO")
        ns = argparse.Namespace(**vars(args))
        ns.audio, ns.template = [args.prompt], None
        return cmd_asr(ns)
    raise MimoAudioError(f"unknown task {task!r}")


# ---------------------------------------------------------------------------- registration
def _turn(kind: str):
    def parse(value: str) -> tuple[str, str]:
        return (kind, value)

    return parse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("asr", help="speech recognition")
    p.add_argument("audio", nargs="+", help="audio file(s)")
    p.add_argument("--template", default=None, help="instruction wording (default: drawn like the reference)")
    _model_args(p)
    p.set_defaults(func=cmd_asr)

    p = sub.add_parser("tts", help="text to speech, optionally with a style instruction and a voice prompt")
    p.add_argument("text", help="text to speak ('-' reads standard input)")
    p.add_argument("--instruction", "--instruct", default=None, help="style instruction (instruct TTS)")
    p.add_argument("--voice", default=None, help="voice prompt clip (used with --instruction or --natural)")
    p.add_argument("--natural", action="store_true", help="the text itself holds the instruction")
    p.add_argument("--template", default=None)
    p.add_argument("--out", default="tts.wav")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="stop the speech after this many seconds (default: 10 s + 1 s per character of text)",
    )
    _model_args(p)
    p.set_defaults(func=cmd_tts)

    p = sub.add_parser("continue", help="continue a speech prompt (Base model)")
    p.add_argument("audio")
    p.add_argument("--seconds", "--length", type=float, default=10.0, help="seconds of new audio at most")
    p.add_argument("--out", default="continuation.wav")
    _model_args(p)
    p.set_defaults(func=cmd_continue)

    p = sub.add_parser("fewshot", help="few-shot speech-to-speech from example pairs (Base model)")
    p.add_argument("target", help="the clip to convert")
    p.add_argument("--examples-dir", required=True, help="folder of <name>_input/<name>_output clip pairs")
    p.add_argument("--preset", default="vc", choices=["vc", "emotion", "speed", "denoise", "translate"])
    p.add_argument("--instruction", default=None, help="instruction text (overrides --preset)")
    p.add_argument("--out", default="fewshot.wav")
    p.add_argument(
        "--best-of",
        type=int,
        default=None,
        metavar="N",
        help="generate N candidates and keep the one that follows the examples best "
        "(default: the model's generation_config, else 1)",
    )
    p.add_argument("--voice-match", **VOICE_MATCH_ARG)
    _model_args(p)
    p.set_defaults(func=cmd_fewshot)

    p = sub.add_parser("understand", help="answer a question about audio")
    p.add_argument("audio", nargs="+")
    p.add_argument("--question", "-q", required=True)
    p.add_argument("--thinking", action="store_true", help="let the model think before answering")
    _model_args(p)
    p.set_defaults(func=cmd_understand)

    p = sub.add_parser("chat", help="spoken or text dialogue; interactive without --text/--audio")
    p.add_argument("--text", dest="turn", action="append", type=_turn("text"), help="a user text turn")
    p.add_argument("--audio", dest="turn", action="append", type=_turn("audio"), help="a user audio turn")
    p.add_argument("--speech-output", action="store_true", help="answer in speech")
    p.add_argument("--text-output", action="store_true", help="answer in text")
    p.add_argument("--system-prompt", default=None)
    p.add_argument("--voice", default=None, help="voice prompt for spoken answers")
    p.add_argument("--thinking", action="store_true")
    p.add_argument("--out", default=None, help="where spoken answers go (default chat_reply.wav)")
    _model_args(p)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("run", help="seed-style entry: --task fewshot_vc|instruct_tts|tts|continuation|asr")
    p.add_argument(
        "--task", required=True, choices=[*FEWSHOT_TASKS, "tts", "instruct_tts", "continuation", "asr"]
    )
    p.add_argument("--examples_dir", "--examples-dir", dest="examples_dir")
    p.add_argument("--target_wav", "--target-wav", dest="target_wav")
    p.add_argument("--text")
    p.add_argument("--instruction", default=None)
    p.add_argument("--prompt", help="prompt clip (continuation, asr; voice prompt for instruct_tts)")
    p.add_argument("--length", type=float, default=10.0, help="continuation seconds")
    p.add_argument("--output", default=None)
    p.add_argument("--out", default=None)
    _model_args(p)
    p.set_defaults(func=cmd_run)
