"""Filters and sampling: score thresholds, the unsafe-text blocklist, quality-weighted repetition.

The blocklist matches whole words (case-insensitive) for terms made of letters and digits, and
substrings for terms in CJK scripts (no word boundaries there). Its entries come from the small
list shipped here (:data:`BUILTIN`, explicit sexual terms and slurs, English and Chinese) and/or a
user file of one term per line (``#`` starts a comment).

Sampling: a kept segment whose scores all reach the recipe's ``high_quality`` thresholds is written
``repeat`` times (default 3), others once, so high-quality data is seen more often in training.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MimoAudioError

BUILTIN = (
    "fuck", "fucking", "motherfucker", "cunt", "nigger", "faggot", "retard", "rape", "rapist",
    "porn", "pornography", "blowjob", "whore", "slut", "kill yourself",
    "操你妈", "肏", "傻逼", "强奸", "色情", "婊子", "杂种", "去死",
)  # fmt: skip


def _is_cjk(term: str) -> bool:
    return any("\u3000" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af" for ch in term)


def read_terms(path: str | Path) -> list[str]:
    """Terms of a user blocklist file (one per line, ``#`` comments, blank lines skipped)."""
    p = Path(path)
    if not p.is_file():
        raise MimoAudioError(f"blocklist file not found: {p}")
    terms = [line.split("#", 1)[0].strip() for line in p.read_text(encoding="utf-8").splitlines()]
    return [t for t in terms if t]


class Blocklist:
    """``match(text)`` → the first blocked term found, or None."""

    def __init__(self, terms: Iterable[str]) -> None:
        terms = sorted({t.strip().lower() for t in terms if t.strip()})
        self.substrings = [t for t in terms if _is_cjk(t)]
        words = [re.escape(t) for t in terms if not _is_cjk(t)]
        self.pattern = re.compile(r"\b(" + "|".join(words) + r")\b", re.IGNORECASE) if words else None

    @classmethod
    def from_config(cls, builtin: bool, file: str | None) -> Blocklist:
        return cls([*(BUILTIN if builtin else ()), *(read_terms(file) if file else ())])

    def match(self, text: str) -> str | None:
        if self.pattern is not None and (m := self.pattern.search(text)):
            return m.group(1).lower()
        lowered = text.lower()
        return next((t for t in self.substrings if t in lowered), None)


@dataclass(frozen=True)
class Threshold:
    """``score >= min`` and/or ``score <= max``; a missing score passes unless ``required``."""

    min: float | None = None
    max: float | None = None
    required: bool = False

    def passes(self, value: float | None) -> bool:
        if value is None:
            return not self.required
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


def parse_thresholds(section: Mapping[str, object], where: str) -> dict[str, Threshold]:
    """``{"min_snr_db": 5, "max_clipping": 0.01}`` → ``{"snr_db": Threshold(min=5), "clipping": ...}``."""
    out: dict[str, dict] = {}
    for key, value in section.items():
        bound, _, score = key.partition("_")
        if bound not in ("min", "max") or not score:
            raise MimoAudioError(f"{where}: threshold keys are min_<score> or max_<score>, got {key!r}")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise MimoAudioError(f"{where}.{key}: expected a number, got {value!r}")
        out.setdefault(score, {})[bound] = float(value)
    return {k: Threshold(**v) for k, v in out.items()}


def failed_threshold(scores: Mapping[str, float | None], thresholds: Mapping[str, Threshold]) -> str | None:
    """Name of the first score outside its threshold (in recipe order), or None."""
    return next((name for name, t in thresholds.items() if not t.passes(scores.get(name))), None)


@dataclass(frozen=True)
class SamplingConfig:
    repeat: int = 3
    high_quality: dict[str, Threshold] = field(default_factory=dict)

    def repeats(self, scores: Mapping[str, float | None]) -> int:
        """How many times a kept segment is written: ``repeat`` if every high-quality threshold holds
        (a missing score fails), else 1."""
        if not self.high_quality:
            return 1
        good = all(
            t.passes(scores.get(k)) and scores.get(k) is not None for k, t in self.high_quality.items()
        )
        return self.repeat if good else 1
