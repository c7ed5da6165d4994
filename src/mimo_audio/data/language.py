"""Language identification from the transcript with langid.py (naive Bayes over byte n-grams, offline).

``identify(text)`` → ``(ISO 639-1 code, probability 0..1)``, probabilities normalised over the
candidate languages (all 97 of langid's by default; ``candidates`` restricts them). langid's
normalised posterior is sharp on a sentence of clean text (≥ 0.999 for the English and Mandarin
sentences of the tests) and low on fragments and gibberish ("hello": 0.17), which is what the 0.95
default floor relies on. Text without letters gives ``("", 0.0)``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from ..errors import MimoAudioError


@dataclass(frozen=True)
class LanguageConfig:
    """Recipe keys of the ``language`` stage: kept languages (ISO 639-1; empty keeps every one), the
    probability floor, and the candidate set (empty: all of langid's)."""

    keep: tuple[str, ...] = ("zh", "en")
    min_confidence: float = 0.95
    candidates: tuple[str, ...] = ()


@lru_cache(maxsize=1)
def _full_model():
    """langid's identifier over all its languages (unpacking the model takes seconds: once per process)."""
    from langid.langid import LanguageIdentifier as LangId
    from langid.langid import model

    return LangId.from_modelstring(model, norm_probs=True)


class LanguageIdentifier:
    def __init__(self, candidates: Sequence[str] = ()) -> None:
        self.langid = copy.copy(_full_model())  # set_languages rebinds the arrays: the cached one stays whole
        if candidates:
            unknown = sorted(set(candidates) - set(self.langid.nb_classes))
            if unknown:
                raise MimoAudioError(f"unknown language code(s) in language.candidates: {', '.join(unknown)}")
            if len(set(candidates)) < 2:
                raise MimoAudioError("language.candidates needs at least two languages")
            self.langid.set_languages(list(candidates))

    def identify(self, text: str) -> tuple[str, float]:
        if not any(ch.isalpha() for ch in text):
            return "", 0.0
        lang, prob = self.langid.classify(text)
        return str(lang), float(prob)
