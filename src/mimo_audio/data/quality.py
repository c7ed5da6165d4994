"""Quality scores: SNR and clipping from the signal, recogniser agreement, transcript quality.

* ``snr_db`` — ``10·log10((speech power − noise power) / noise power)``: speech power is the mean
  power of the segment's 20 ms frames inside VAD speech regions, noise power the mean power of the
  input's frames outside them (the quietest 10 % of the segment's frames when the input has no pause);
  clamped to [-20, 60] dB (60 for digitally silent pauses).
* ``clipping`` — fraction of the segment's samples at or above ``0.999`` of full scale *before*
  loudness normalisation (``wav / gain``).
* ``agreement`` — ``1 − min(1, edit distance / reference length)`` between two transcripts, over
  words for space-separated scripts and characters for Chinese/Japanese (lower-cased, punctuation
  removed); None when either transcript is missing or the language is not the second recogniser's.
* ``transcript_quality`` — mean of the available ``asr_confidence`` and ``agreement`` (None if
  neither is available).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

import numpy as np

from .speakers import frame_energy

FRAME = 0.02
CJK = ("zh", "ja")


def speech_mask(n_frames: int, regions: Sequence[tuple[float, float]], frame: float = FRAME) -> np.ndarray:
    """Boolean ``[n_frames]``: frames whose centre lies inside a speech region."""
    centres = (np.arange(n_frames) + 0.5) * frame
    mask = np.zeros(n_frames, bool)
    for s, e in regions:
        mask |= (centres >= s) & (centres < e)
    return mask


def snr_db(energy: np.ndarray, mask: np.ndarray, start: float, end: float, frame: float = FRAME) -> float:
    """SNR of the segment ``[start, end)`` given the input's frame powers ``[F]`` and speech mask ``[F]``."""
    a, b = int(start / frame), max(int(start / frame) + 1, int(end / frame))
    seg, seg_mask = energy[a:b], mask[a:b]
    speech = seg[seg_mask] if seg_mask.any() else seg
    noise_frames = energy[~mask]
    if noise_frames.size:
        noise = float(noise_frames.mean())
    else:
        noise = float(np.sort(seg)[: max(1, seg.size // 10)].mean())
    signal = float(speech.mean()) if speech.size else 0.0
    if noise <= 1e-12:
        return 60.0 if signal > 1e-12 else -20.0
    return float(np.clip(10 * np.log10(max(signal - noise, 1e-12) / noise), -20.0, 60.0))


def clipping(raw: np.ndarray, level: float = 0.999) -> float:
    """Fraction of samples of the un-normalised segment ``raw [samples]`` at ≥ ``level`` full scale."""
    return float(np.mean(np.abs(raw) >= level)) if raw.size else 0.0


def signal_frames(
    wav: np.ndarray, rate: int, regions: Sequence[tuple[float, float]]
) -> tuple[np.ndarray, np.ndarray]:
    """The input's frame powers ``[F]`` and speech mask ``[F]`` (computed once per input)."""
    energy = frame_energy(wav, rate, FRAME)
    return energy, speech_mask(energy.shape[0], regions)


def tokens(text: str, language: str) -> list[str]:
    """Normalised words (characters for Chinese/Japanese) for edit distances."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(ch if not unicodedata.category(ch).startswith("P") else " " for ch in text)
    if language in CJK:
        return [ch for ch in text if not ch.isspace()]
    return re.findall(r"\w+", text)


def edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        cur = [i] + [0] * len(b)
        for j, y in enumerate(b, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
        prev = cur
    return prev[-1]


def agreement(reference: str, hypothesis: str, language: str) -> float | None:
    """``1 − min(1, normalised edit distance)``; None when the reference is empty."""
    ref, hyp = tokens(reference, language), tokens(hypothesis, language)
    if not ref:
        return None
    return 1.0 - min(1.0, edit_distance(ref, hyp) / len(ref))


def transcript_quality(asr_confidence: float | None, agree: float | None) -> float | None:
    parts = [v for v in (asr_confidence, agree) if v is not None]
    return float(np.mean(parts)) if parts else None
