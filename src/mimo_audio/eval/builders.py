"""Manifest builders for standard test sets from their distributed folder layouts.

* LibriSpeech (``test-clean`` etc.): ``<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` holding
  ``<utt-id> TRANSCRIPT`` lines, next to ``<utt-id>.flac``.
* AISHELL-1: ``transcript/aishell_transcript_v0.8.txt`` (``<utt-id> 词 词 ...``, word-segmented) and
  ``wav/<split>/S<speaker>/<utt-id>.wav`` (the per-speaker archives extracted in place).
* Seed-TTS-Eval: a ``meta.lst`` (see :func:`mimo_audio.eval.manifest.parse_seedtts_line`).

Each builder returns manifest entries whose audio paths are relative to ``relative_to`` (the folder
the manifest will be written to), sorted by id, and the number of files it left out.
"""

from __future__ import annotations

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


BUILDERS = {"librispeech": librispeech, "aishell": aishell, "seedtts": seedtts}
