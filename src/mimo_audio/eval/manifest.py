"""Evaluation manifests: JSONL (one item per line) or Seed-TTS-Eval ``meta.lst``; validated per suite.

A JSONL line is an object such as ``{"id": "1089-134686-0000", "audio": "clips/a.flac",
"text": "he hoped ...", "language": "en"}``. Audio paths are relative to the manifest's folder.
Lines are numbered from 1; blank lines and lines starting with ``#`` are ignored. Every problem is a
:class:`ManifestError` carrying its line number, so a runner can skip the line or stop at it. An
item's id (its cache key) is its ``id`` field, else the audio file's stem and a hash of the line.

A file ending in ``.lst`` is read as Seed-TTS-Eval's ``utt|prompt_text|prompt_wav|target_text``
(an optional fifth field is a ground-truth rendering of the target text); the language is ``zh``
when the target text holds CJK characters, else ``en``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MimoAudioError
from .metrics.text import LANGUAGES

AUDIO_FIELDS = ("audio", "reference_audio", "prompt_audio", "target_audio")
EXAMPLE_AUDIO_FIELDS = ("input_audio", "output_audio")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class ManifestError:
    """A bad manifest line (or a line whose item failed to evaluate)."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "message": self.message}


@dataclass(frozen=True)
class FieldSpec:
    """What a suite needs from each line: required fields, and whether ``language`` is required."""

    required: tuple[str, ...]
    language: bool = True


@dataclass(frozen=True)
class Item:
    """One valid manifest entry; audio fields hold absolute paths (``examples`` entries too)."""

    id: str
    line: int
    fields: dict[str, Any] = field(hash=False)

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    @property
    def language(self) -> str | None:
        return self.fields.get("language")


def _raw_lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            line = line.strip()
            if line and not line.startswith("#"):
                yield n, line


def parse_seedtts_line(line: str) -> dict[str, Any]:
    """A Seed-TTS-Eval ``meta.lst`` line → manifest fields (raises ``ValueError`` when malformed)."""
    parts = line.split("|")
    if len(parts) not in (4, 5) or not parts[0].strip():
        raise ValueError(f"expected utt|prompt_text|prompt_wav|target_text, got {len(parts)} field(s)")
    utt, prompt_text, prompt_wav, target = (p.strip() for p in parts[:4])
    entry: dict[str, Any] = {
        "id": utt,
        "text": target,
        "prompt_text": prompt_text,
        "prompt_audio": prompt_wav,
        "language": "zh" if _CJK.search(target) else "en",
    }
    if len(parts) == 5 and parts[4].strip():
        entry["reference_audio"] = parts[4].strip()
    return entry


def _entries(path: Path) -> Iterator[tuple[int, dict[str, Any] | ManifestError]]:
    seedtts = path.suffix == ".lst"
    for n, line in _raw_lines(path):
        try:
            entry = parse_seedtts_line(line) if seedtts else json.loads(line)
        except ValueError as e:  # json.JSONDecodeError is a ValueError
            what = "bad Seed-TTS line" if seedtts else "bad JSON"
            yield n, ManifestError(n, f"{what}: {str(e).splitlines()[0]}")
            continue
        if not isinstance(entry, dict):
            yield n, ManifestError(n, f"expected a JSON object, got {type(entry).__name__}")
            continue
        yield n, entry


def _resolve(base: Path, value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"field {name!r} must be a path string")
    p = Path(value) if os.path.isabs(value) else base / value
    if not p.is_file():
        raise ValueError(f"{name} {value}: no such file")
    return str(p.resolve())


def _examples(base: Path, value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise ValueError("field 'examples' must be a non-empty list of {input_audio, output_audio} objects")
    out = []
    for k, ex in enumerate(value):
        if not isinstance(ex, dict) or not all(f in ex for f in EXAMPLE_AUDIO_FIELDS):
            raise ValueError(f"examples[{k}] needs 'input_audio' and 'output_audio'")
        out.append(
            {
                "input_audio": _resolve(base, ex["input_audio"], f"examples[{k}].input_audio"),
                "output_audio": _resolve(base, ex["output_audio"], f"examples[{k}].output_audio"),
                "output_transcription": str(ex.get("output_transcription") or ""),
            }
        )
    return out


def _item_id(entry: dict[str, Any]) -> str:
    """``id`` (or Seed-TTS ``utt``); else the audio file's stem plus a hash of the whole line, so an
    edited line is a new item and two lines differing only in, say, the question stay distinct."""
    for key in ("id", "utt"):
        if isinstance(entry.get(key), (str, int)) and str(entry[key]).strip():
            return str(entry[key]).strip()
    digest = hashlib.sha1(json.dumps(entry, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()[
        :10
    ]
    stem = Path(str(entry.get("audio") or "")).stem
    return f"{stem}-{digest}" if stem else digest


def validate(entry: dict[str, Any], line: int, base: Path, spec: FieldSpec) -> Item:
    """Check one entry against ``spec`` and resolve its audio paths. Raises ``ValueError``."""
    missing = [f for f in spec.required if entry.get(f) in (None, "")]
    if spec.language and "language" not in spec.required and entry.get("language") in (None, ""):
        missing.append("language")
    if missing:
        raise ValueError(f"missing field {', '.join(repr(m) for m in missing)}")
    language = entry.get("language")
    if language is not None and language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r} (use {' or '.join(LANGUAGES)})")
    if "text" in entry and not isinstance(entry["text"], str):
        raise ValueError("field 'text' must be a string")
    fields = dict(entry)
    for name in AUDIO_FIELDS:
        if name in fields and fields[name] is not None:
            fields[name] = _resolve(base, fields[name], name)
    if "examples" in fields:
        fields["examples"] = _examples(base, fields["examples"])
    return Item(_item_id(entry), line, fields)


def read_manifest(path: str | os.PathLike, spec: FieldSpec) -> tuple[list[Item], list[ManifestError]]:
    """Valid items and the errors of the other lines, both in line order.

    Raises :class:`MimoAudioError` only when the file itself cannot be read.
    """
    p = Path(path)
    if not p.is_file():
        raise MimoAudioError(f"{path}: no such manifest file")
    base = p.resolve().parent
    items: list[Item] = []
    errors: list[ManifestError] = []
    first_line: dict[str, int] = {}
    try:
        for n, entry in _entries(p):
            if isinstance(entry, ManifestError):
                errors.append(entry)
                continue
            try:
                item = validate(entry, n, base, spec)
            except ValueError as e:
                errors.append(ManifestError(n, str(e)))
                continue
            if item.id in first_line:
                errors.append(
                    ManifestError(n, f"duplicate id {item.id!r} (first on line {first_line[item.id]})")
                )
                continue
            first_line[item.id] = n
            items.append(item)
    except UnicodeDecodeError as e:
        raise MimoAudioError(f"{path}: not UTF-8 text ({e.reason})") from None
    if not items and not errors:
        raise MimoAudioError(f"{path}: the manifest holds no items")
    return items, errors


def write_manifest(path: str | os.PathLike, entries: list[dict[str, Any]]) -> Path:
    """Write entries as JSONL atomically (UTF-8, one object per line)."""
    from ..audio import atomic_write

    text = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), suffix=".jsonl")
