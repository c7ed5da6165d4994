"""Model-free acoustic comparison: MFCCs (numpy), DTW distance and DTW identification.

:func:`dtw_identify` answers "is each output nearest to the rendering of its own sentence?": every
output is compared with every reference rendering by DTW over per-utterance-normalised MFCCs
(cepstral mean and variance normalisation per clip, so level and channel differ freely) and the
nearest reference wins. Identification accuracy is the share of outputs whose nearest reference is
their own sentence's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import soxr

MFCC_RATE = 16000  # Hz; clips are resampled to this rate before analysis


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(
    n_mels: int, n_fft: int, sr: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Triangular HTK-mel filters ``[n_mels, n_fft // 2 + 1]`` (peak 1)."""
    fmax = sr / 2 if fmax is None else fmax
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(fmin)), _hz_to_mel(np.array(fmax)), n_mels + 2))
    freqs = np.linspace(0.0, sr / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None] - lower) / np.maximum(centre - lower, 1e-9)
    falling = (upper - freqs[None]) / np.maximum(upper - centre, 1e-9)
    return np.clip(np.minimum(rising, falling), 0.0, None)


def _dct_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Orthonormal DCT-II ``[n_out, n_in]``."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None]
    m = np.cos(np.pi / n_in * (n + 0.5) * k) * np.sqrt(2.0 / n_in)
    m[0] /= np.sqrt(2.0)
    return m


def mfcc(
    wav: np.ndarray,
    sr: int,
    *,
    n_mfcc: int = 13,
    n_mels: int = 40,
    frame_ms: float = 25.0,
    hop_ms: float = 10.0,
    preemphasis: float = 0.97,
) -> np.ndarray:
    """Mel-frequency cepstral coefficients of a mono clip.

    ``wav``: float ``[samples]`` at ``sr`` Hz (resampled to 16 kHz first). Hamming-windowed frames of
    ``frame_ms`` every ``hop_ms``, 512-point power spectrum, ``n_mels`` HTK-mel filters, log, DCT-II.
    Returns float32 ``[frames, n_mfcc]`` with ``frames = 1 + (samples_16k - frame) // hop`` (at least 1;
    short clips are zero-padded to one frame).
    """
    x = np.asarray(wav, dtype=np.float64).reshape(-1)
    if sr != MFCC_RATE:
        x = soxr.resample(x, sr, MFCC_RATE)
    frame, hop = int(MFCC_RATE * frame_ms / 1000), int(MFCC_RATE * hop_ms / 1000)
    x = np.append(x[:1], x[1:] - preemphasis * x[:-1]) if x.size else x
    if x.size < frame:
        x = np.pad(x, (0, frame - x.size))
    frames = np.lib.stride_tricks.sliding_window_view(x, frame)[::hop] * np.hamming(frame)
    n_fft = max(512, 1 << (frame - 1).bit_length())
    power = np.abs(np.fft.rfft(frames, n_fft)) ** 2 / n_fft
    energies = power @ mel_filterbank(n_mels, n_fft, MFCC_RATE).T
    return (np.log(np.maximum(energies, 1e-10)) @ _dct_matrix(n_mfcc, n_mels).T).astype(np.float32)


def cmvn(features: np.ndarray) -> np.ndarray:
    """Per-utterance mean and variance normalisation of ``[frames, dims]`` features (per dimension)."""
    f = np.asarray(features, dtype=np.float64)
    return ((f - f.mean(axis=0)) / (f.std(axis=0) + 1e-8)).astype(np.float32)


def dtw_distance(a: np.ndarray, b: np.ndarray) -> float:
    """DTW alignment cost of feature sequences ``a [Ta, D]`` and ``b [Tb, D]``.

    Local cost: Euclidean distance between frames; steps (1,0), (0,1), (1,1); the total cost of the
    best path divided by ``Ta + Tb`` (so clips of different lengths compare fairly).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or not len(a) or not len(b):
        raise ValueError(f"expected [Ta, D] and [Tb, D] features, got {a.shape} and {b.shape}")
    cost = np.sqrt(np.maximum(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1), 0.0))  # [Ta, Tb]
    ta, tb = cost.shape
    acc = np.full((ta + 1, tb + 1), np.inf)
    acc[0, 0] = 0.0
    # sweep anti-diagonals i + j = d: every cell on one depends only on the two previous diagonals
    for d in range(2, ta + tb + 1):
        i = np.arange(max(1, d - tb), min(ta, d - 1) + 1)
        j = d - i
        best = np.minimum(np.minimum(acc[i - 1, j], acc[i, j - 1]), acc[i - 1, j - 1])
        acc[i, j] = cost[i - 1, j - 1] + best
    return float(acc[ta, tb] / (ta + tb))


def _features(clip: np.ndarray, sr: int) -> np.ndarray:
    clip = np.asarray(clip)
    return cmvn(clip if clip.ndim == 2 else mfcc(clip, sr))


def dtw_distances(
    outputs: Sequence[np.ndarray], references: Sequence[np.ndarray], sr: int = 24000
) -> np.ndarray:
    """Pairwise DTW distances ``[len(outputs), len(references)]`` over normalised MFCCs.

    Each clip is a waveform ``[samples]`` at ``sr`` Hz, or an already computed ``[frames, dims]``
    feature matrix (used as is, after per-utterance normalisation).
    """
    outs = [_features(o, sr) for o in outputs]
    refs = [_features(r, sr) for r in references]
    return np.array([[dtw_distance(o, r) for r in refs] for o in outs]).reshape(len(outs), len(refs))


def dtw_identify(
    outputs: Sequence[np.ndarray], references: Sequence[np.ndarray], sr: int = 24000
) -> list[int]:
    """For each output, the index of the nearest reference rendering by DTW (see :func:`dtw_distances`).

    Output ``i`` is identified when the returned index is ``i`` (references in the same order).
    """
    if not references:
        raise ValueError("dtw_identify needs at least one reference")
    return [int(k) for k in dtw_distances(outputs, references, sr).argmin(axis=1)]
