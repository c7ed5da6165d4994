"""Text metrics: normalisation for English and Mandarin, WER and CER (edit distances from jiwer).

Normalisation (:func:`normalize_text`), in order:

1. Unicode NFKC, which folds full-width ASCII forms (``Ｈｅｌｌｏ，１２``) to their plain forms;
2. case folding;
3. apostrophes inside words are dropped (``don't`` → ``dont``, so a missing apostrophe is no error);
4. every other punctuation or symbol character (Unicode categories ``P*`` and ``S*``, which include
   the CJK marks ``。，、！？：；「」『』《》（）…—``) becomes a space;
5. whitespace runs collapse to one space; numbers are left as written (``21`` ≠ ``twenty one``).

English is scored in words (WER); Mandarin in characters with all whitespace removed (CER).
Rates are ``(substitutions + deletions + insertions) / reference length``; lists are scored as one
corpus (summed edits over summed lengths), as LibriSpeech and AISHELL results are reported.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import jiwer

LANGUAGES = ("en", "zh")

_APOSTROPHES = re.compile(r"(?<=\w)['’`´](?=\w)")
_SPACES = re.compile(r"\s+")


def _check_language(language: str) -> None:
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}; use one of {', '.join(LANGUAGES)}")


def normalize_text(text: str, language: str) -> str:
    """Normalise ``text`` for scoring (see the module docstring); Mandarin comes back without spaces."""
    _check_language(language)
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _APOSTROPHES.sub("", text)
    text = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text)
    text = _SPACES.sub(" ", text).strip()
    return text.replace(" ", "") if language == "zh" else text


@dataclass(frozen=True)
class EditCounts:
    """Edit operations aligning a hypothesis to a reference, in units (words or characters)."""

    substitutions: int
    deletions: int
    insertions: int
    length: int  # reference length in units

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """``errors / length``; an empty reference scores ``errors`` (0.0 when the hypothesis is empty too)."""
        return self.errors / max(self.length, 1)

    def __add__(self, other: EditCounts) -> EditCounts:
        return EditCounts(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.length + other.length,
        )


def _units(text: str, unit: str) -> list[str]:
    return text.split() if unit == "word" else list(text)


def edit_counts(
    reference: str, hypothesis: str, language: str, *, unit: str | None = None, normalize: bool = True
) -> EditCounts:
    """Edits between one reference and one hypothesis.

    ``unit`` is ``"word"`` or ``"char"`` (default: words for English, characters for Mandarin).
    Character units of English keep single spaces between words; Mandarin drops them.
    """
    _check_language(language)
    unit = unit or ("word" if language == "en" else "char")
    if unit not in ("word", "char"):
        raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
    if normalize:
        reference, hypothesis = normalize_text(reference, language), normalize_text(hypothesis, language)
    ref, hyp = _units(reference, unit), _units(hypothesis, unit)
    if not ref or not hyp:
        return EditCounts(0, len(ref), len(hyp), len(ref))
    # jiwer aligns whitespace-separated tokens; characters are spelled out as tokens (spaces as "▁")
    out = jiwer.process_words(
        " ".join(u if u != " " else "▁" for u in ref), " ".join(u if u != " " else "▁" for u in hyp)
    )
    return EditCounts(out.substitutions, out.deletions, out.insertions, len(ref))


def _corpus(
    reference: str | Sequence[str], hypothesis: str | Sequence[str], language: str, unit: str, normalize: bool
) -> EditCounts:
    refs = [reference] if isinstance(reference, str) else list(reference)
    hyps = [hypothesis] if isinstance(hypothesis, str) else list(hypothesis)
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    total = EditCounts(0, 0, 0, 0)
    for r, h in zip(refs, hyps, strict=True):
        total = total + edit_counts(r, h, language, unit=unit, normalize=normalize)
    return total


def wer(
    reference: str | Sequence[str],
    hypothesis: str | Sequence[str],
    language: str = "en",
    *,
    normalize: bool = True,
) -> float:
    """Word error rate (fraction, 0.0376 = 3.76 %) of one pair or of a corpus (lists of equal length)."""
    return _corpus(reference, hypothesis, language, "word", normalize).rate


def cer(
    reference: str | Sequence[str],
    hypothesis: str | Sequence[str],
    language: str = "zh",
    *,
    normalize: bool = True,
) -> float:
    """Character error rate (fraction) of one pair or of a corpus; Mandarin ignores whitespace."""
    return _corpus(reference, hypothesis, language, "char", normalize).rate
