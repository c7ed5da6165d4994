"""Signal quality of a degraded copy against its clean reference: PESQ (ITU-T P.862) and STOI.

Both compare time-aligned clips: the longer of the two is cut to the shorter (a codec's output may
run a few samples long). Inputs are mono float ``[samples]`` at ``sr`` Hz and are resampled with soxr
to the rate each measure is defined at: PESQ narrow-band 8 kHz, wide-band 16 kHz, STOI 10 kHz (pystoi
resamples internally; we hand it 16 kHz).
"""

from __future__ import annotations

import numpy as np
import soxr

PESQ_NB_RATE = 8000
PESQ_WB_RATE = 16000
STOI_RATE = 16000


def _aligned(
    reference: np.ndarray, degraded: np.ndarray, sr: int, rate: int
) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference, np.float64).reshape(-1)
    deg = np.asarray(degraded, np.float64).reshape(-1)
    if sr != rate:
        ref, deg = soxr.resample(ref, sr, rate), soxr.resample(deg, sr, rate)
    n = min(ref.size, deg.size)
    if n == 0:
        raise ValueError("empty signal")
    return ref[:n], deg[:n]


def _pesq(reference: np.ndarray, degraded: np.ndarray, sr: int, mode: str) -> float:
    from pesq import PesqError, pesq

    rate = PESQ_NB_RATE if mode == "nb" else PESQ_WB_RATE
    ref, deg = _aligned(reference, degraded, sr, rate)
    score = pesq(rate, ref, deg, mode, on_error=PesqError.RETURN_VALUES)
    return float("nan") if score < -0.5 else float(score)  # error codes are negative integers


def pesq_nb(reference: np.ndarray, degraded: np.ndarray, sr: int) -> float:
    """Narrow-band PESQ MOS-LQO (about 1.0–4.5; higher is better) at 8 kHz. NaN when PESQ finds no speech."""
    return _pesq(reference, degraded, sr, "nb")


def pesq_wb(reference: np.ndarray, degraded: np.ndarray, sr: int) -> float:
    """Wide-band PESQ MOS-LQO (about 1.0–4.6) at 16 kHz. NaN when PESQ finds no speech."""
    return _pesq(reference, degraded, sr, "wb")


def stoi(reference: np.ndarray, degraded: np.ndarray, sr: int, *, extended: bool = False) -> float:
    """Short-time objective intelligibility (0–1; 1 for identical signals); ``extended`` gives ESTOI."""
    from pystoi import stoi as _stoi

    ref, deg = _aligned(reference, degraded, sr, STOI_RATE)
    return float(_stoi(ref, deg, STOI_RATE, extended=extended))
