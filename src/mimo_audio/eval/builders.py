"""Manifest builders for standard test sets from their distributed folder layouts.

* LibriSpeech (``test-clean`` etc.): ``<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` holding
  ``<utt-id> TRANSCRIPT`` lines, next to ``<utt-id>.flac``.
* AISHELL-1: ``transcript/aishell_transcript_v0.8.txt`` (``<utt-id> 词 词 ...``, word-segmented) and
  ``wav/<split>/S<speaker>/<utt-id>.wav`` (the per-speaker archives extracted in place).
* Seed-TTS-Eval: a ``meta.lst`` (see :func:`mimo_audio.eval.manifest.parse_seedtts_line`).
* A synthetic corpus of ``mimo-audio data synth``: its held-out ``test_*.jsonl`` split (held-out
  voices and sentences), one suite at a time (:func:`synth`).

Each builder returns manifest entries whose audio paths are relative to ``relative_to`` (the folder
the manifest will be written to), sorted by id, and the number of files it left out.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import MimoAudioError
from .manifest import AUDIO_FIELDS, parse_seedtts_line

AISHELL_TRANSCRIPT = Path("transcript") / "aishell_transcript_v0.8.txt"


def _rel(path: Path, relative_to: Path) -> str:
    return os.path.relpath(path.resolve(), relative_to.resolve())


def _folder(root: str | os.PathLike, what: str) -> Path:
    d = Path(root)
    if not d.is_dir():
        raise MimoAudioError(f"{what} folder {root}: not a directory")
    return d


def librispeech(root: str | os.PathLike, relative_to: str | os.PathLike) -> tuple[list[dict[str, Any]], int]:
    """Entries ``{id, audio, text, language: "en", speaker}`` of a LibriSpeech split folder.

    Utterances listed in a ``*.trans.txt`` without their ``.flac`` are left out and counted.
    """
    d = _folder(root, "LibriSpeech")
    entries, missing = [], 0
    for trans in sorted(d.rglob("*.trans.txt")):
        for line in trans.read_text(encoding="utf-8").splitlines():
            utt, _, text = line.strip().partition(" ")
            if not utt:
                continue
            audio = trans.parent / f"{utt}.flac"
            if not audio.is_file():
                missing += 1
                continue
            entries.append(
                {
                    "id": utt,
                    "audio": _rel(audio, Path(relative_to)),
                    "text": text.strip(),
                    "language": "en",
                    "speaker": utt.split("-")[0],
                }
            )
    if not entries:
        raise MimoAudioError(f"{root}: no LibriSpeech utterances (*.trans.txt next to .flac files) found")
    return sorted(entries, key=lambda e: e["id"]), missing


def aishell(
    root: str | os.PathLike, relative_to: str | os.PathLike, split: str = "test"
) -> tuple[list[dict[str, Any]], int]:
    """Entries ``{id, audio, text, language: "zh", speaker}`` of an AISHELL-1 split.

    The transcript's word segmentation is removed (``而 对 楼市`` → ``而对楼市``). Wav files of the split
    without a transcript line are left out and counted.
    """
    d = _folder(root, "AISHELL-1")
    transcript = d / AISHELL_TRANSCRIPT
    if not transcript.is_file():
        raise MimoAudioError(f"{root}: no {AISHELL_TRANSCRIPT} (expected the AISHELL-1 data_aishell folder)")
    texts = {}
    for line in transcript.read_text(encoding="utf-8").splitlines():
        utt, _, text = line.strip().partition(" ")
        if utt:
            texts[utt] = "".join(text.split())
    wav_dir = d / "wav" / split
    if not wav_dir.is_dir():
        raise MimoAudioError(f"{root}: no wav/{split} folder (extract the per-speaker archives there)")
    entries, missing = [], 0
    for wav in sorted(wav_dir.glob("S*/*.wav")):
        if wav.stem not in texts:
            missing += 1
            continue
        entries.append(
            {
                "id": wav.stem,
                "audio": _rel(wav, Path(relative_to)),
                "text": texts[wav.stem],
                "language": "zh",
                "speaker": wav.parent.name,
            }
        )
    if not entries:
        raise MimoAudioError(f"{root}: no transcribed wav files under wav/{split}/S*/")
    return entries, missing


def seedtts(meta: str | os.PathLike, relative_to: str | os.PathLike) -> tuple[list[dict[str, Any]], int]:
    """Entries of a Seed-TTS-Eval ``meta.lst`` (paths re-based from its folder); malformed lines counted."""
    p = Path(meta)
    if not p.is_file():
        raise MimoAudioError(f"{meta}: no such file")
    entries, bad = [], 0
    for line in p.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        try:
            entry = parse_seedtts_line(line)
        except ValueError:
            bad += 1
            continue
        for name in AUDIO_FIELDS:
            if name in entry:
                entry[name] = _rel(p.parent / entry[name], Path(relative_to))
        entries.append(entry)
    if not entries:
        raise MimoAudioError(f"{meta}: no utt|prompt_text|prompt_wav|target_text lines")
    return entries, bad


SYNTH_SUITES = {"tokenizer": 12, "asr": 50, "tts": 20, "vc": 50}  # suite → default count
_NEUTRAL = {"rate": "normal", "pitch": "normal", "volume": "normal", "whisper": "no"}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise MimoAudioError(f"{path}: not found (is this a `mimo-audio data synth` corpus?)")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                raise MimoAudioError(f"{path}:{n}: invalid JSON") from None
    return out


def _plain(rec: dict[str, Any]) -> bool:
    """A clip with the neutral style and no noise or reverberation."""
    meta = rec.get("meta") or {}
    style = meta.get("style") or {}
    return meta.get("augment") is None and all(style.get(k) == v for k, v in _NEUTRAL.items())


def _lang_of(text: str) -> str:
    return "zh" if any("\u4e00" <= ch <= "\u9fff" for ch in text) else "en"


def synth(
    root: str | os.PathLike, relative_to: str | os.PathLike, suite: str, count: int | None = None
) -> tuple[list[dict[str, Any]], int]:
    """Entries for one suite from a synthetic corpus's held-out split, in corpus order:

    * ``tokenizer`` / ``asr``: the first ``count`` plain clips (neutral style, no noise or reverb) per
      language of ``test_asr.jsonl`` — ``{id, audio, text, language, speaker}``;
    * ``tts``: ``count`` distinct sentences, half per language, each with its plain espeak-ng
      rendering as ``reference_audio`` (what DTW identification compares against);
    * ``vc``: the first ``count`` voice-conversion groups of ``test_vc.jsonl`` — the query ``audio``
      (source voice), its ``text``, the two ``examples`` and the reference conversion as
      ``target_audio`` (the target voice saying the same sentence).

    Counts default to :data:`SYNTH_SUITES`. The second value is the number of records left out as
    not plain (zero for ``vc``).
    """
    if suite not in SYNTH_SUITES:
        raise MimoAudioError(f"unknown synth suite {suite!r} (use {', '.join(SYNTH_SUITES)})")
    count = SYNTH_SUITES[suite] if count is None else count
    if count < 1:
        raise MimoAudioError(f"--count must be at least 1, got {count}")
    base, rel = _folder(root, "corpus"), Path(relative_to)
    entries: list[dict[str, Any]] = []
    if suite == "vc":
        for i, rec in enumerate(_read_jsonl(base / "test_vc.jsonl")[:count]):
            text = rec.get("output_transcription", "")
            examples = [
                {k: _rel(base / ex[k], rel) if k.endswith("audio") else ex[k] for k in ex}
                for ex in rec.get("examples", [])
            ]
            entries.append(
                {
                    "id": f"vc-{i:04d}",
                    "audio": _rel(base / rec["audio"], rel),
                    "text": text,
                    "language": _lang_of(text),
                    "examples": examples,
                    "target_audio": _rel(base / rec["output_audio"], rel),
                }
            )
        return entries, 0
    source = _read_jsonl(base / ("test_tts.jsonl" if suite == "tts" else "test_asr.jsonl"))
    per_lang = {"en": 0, "zh": 0}
    quota = {"en": count - count // 2, "zh": count // 2} if suite == "tts" else dict.fromkeys(per_lang, count)
    seen: set[str] = set()
    skipped = 0
    for rec in source:
        lang = (rec.get("meta") or {}).get("lang") or _lang_of(rec.get("text", ""))
        if not _plain(rec):
            skipped += 1
            continue
        if lang not in quota or per_lang[lang] >= quota[lang] or rec["text"] in seen:
            continue
        per_lang[lang] += 1
        seen.add(rec["text"])
        audio = _rel(base / rec["audio"], rel)
        entry = {"id": f"{suite}-{lang}-{per_lang[lang]:04d}", "text": rec["text"], "language": lang}
        if suite == "tts":
            entry["reference_audio"] = audio
        else:
            entry.update(audio=audio, speaker=(rec.get("meta") or {}).get("speaker"))
        entries.append(entry)
    if not entries:
        raise MimoAudioError(f"{base}: no plain held-out clips for the {suite} suite")
    return entries, skipped


BUILDERS = {"librispeech": librispeech, "aishell": aishell, "seedtts": seedtts, "synth": synth}
