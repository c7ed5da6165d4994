"""Best-of-N selection for few-shot speech-to-speech: which candidate follows the examples best.

In-context examples show a change (input clip → output clip): another voice, speed, emotion or
channel. A candidate output that made the change should sound more like the examples' *outputs*
than like their *inputs*. Each example's input and output say the same words, and so do the
query and a candidate, so both measures below control for content. They work on voiced MFCC frames
(20 coefficients without c0, 16 kHz, 10 ms hop):

* *nearest frames* (as in kNN-based voice conversion): the candidate's mean distance to the nearest
  example-input frame minus its mean distance to the nearest example-output frame;
* *shift*: DTW-align each example's input with its output and average the frame differences (the
  change the examples show, a vector); do the same for the query and the candidate; the score is the
  candidate's shift projected on the examples' shift.

Each measure is standardised over the candidates and the two are added; higher is better.
Nothing here is trained (torch, numpy, and soxr through :func:`mimo_audio.audio.resample`).
:func:`pick_best` returns the
index of the best candidate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .audio import resample
from .tokenizer.mel import mel_filterbank

RATE = 16000
N_FFT = 512
HOP = 160
N_MELS = 128
N_MFCC = 20
TOP_DB = 80.0
VOICED = 0.05  # a frame is voiced when its RMS is above this share of the clip's loudest frame


def _dct_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Orthonormal DCT-II ``[n_in, n_out]`` (``x @ D`` transforms the last axis)."""
    n = torch.arange(n_in, dtype=torch.float64)
    k = torch.arange(n_out, dtype=torch.float64)
    d = torch.cos(math.pi / n_in * (n[:, None] + 0.5) * k[None, :]) * math.sqrt(2.0 / n_in)
    d[:, 0] /= math.sqrt(2.0)
    return d.float()


_FB = mel_filterbank(N_FFT // 2 + 1, 0.0, RATE / 2, N_MELS, RATE)  # [257, 128]
_DCT = _dct_matrix(N_MELS, N_MFCC)  # [128, 20]
_WINDOW = torch.hann_window(N_FFT)


def mfcc_frames(wav: np.ndarray | torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Voiced MFCC frames ``[F, 19]`` float32 (c1..c19) of a mono clip ``[samples]``.

    Frames quieter than :data:`VOICED` of the loudest frame (RMS) are dropped; a silent or empty
    clip gives ``[0, 19]``.
    """
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32).reshape(-1))
    if x.numel():
        x = torch.from_numpy(resample(x.numpy(), sample_rate, RATE))
    if x.numel() < N_FFT // 2 + 1 or not bool(torch.isfinite(x).all()):
        return torch.zeros(0, N_MFCC - 1)
    spec = torch.stft(x, N_FFT, HOP, window=_WINDOW, center=True, pad_mode="constant", return_complex=True)
    power = spec.abs().pow(2).T  # [F, 257]
    db = 10.0 * torch.log10((power @ _FB).clamp_min(1e-10))
    db = torch.maximum(db, db.max() - TOP_DB)
    mfcc = (db @ _DCT)[:, 1:]  # [F, 19]
    rms = power.sum(1).div(N_FFT).sqrt()  # frame energy from the windowed spectrum (Parseval)
    keep = rms > VOICED * rms.max() if bool(rms.max() > 0) else torch.zeros_like(rms, dtype=torch.bool)
    return mfcc[keep]


def _mean_nearest(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over rows of ``a [F, D]`` of the Euclidean distance to the nearest row of ``b [G, D]``."""
    return float(torch.cdist(a, b).min(dim=1).values.mean())


def dtw_path(cost: np.ndarray) -> np.ndarray:
    """Minimum-cost monotonic alignment of a cost matrix ``[A, B]`` (steps (1,1), (1,0), (0,1),
    from (0, 0) to (A−1, B−1)) → index pairs ``[L, 2]``."""
    A, B = cost.shape
    acc = np.full((A + 1, B + 1), np.inf)
    acc[0, 0] = 0.0
    for d in range(2, A + B + 1):  # anti-diagonals i + j = d over the 1-based accumulated matrix
        i = np.arange(max(1, d - B), min(A, d - 1) + 1)
        j = d - i
        best = np.minimum(np.minimum(acc[i - 1, j - 1], acc[i - 1, j]), acc[i, j - 1])
        acc[i, j] = cost[i - 1, j - 1] + best
    path, i, j = [], A, B
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        step = int(np.argmin((acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])))
        i, j = (i - 1, j - 1) if step == 0 else (i - 1, j) if step == 1 else (i, j - 1)
    return np.array(path[::-1], dtype=np.int64)


def mean_shift(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean of ``b − a`` over the DTW-aligned frame pairs of ``a [F, D]`` and ``b [G, D]`` → ``[D]``."""
    path = torch.from_numpy(dtw_path(torch.cdist(a, b).numpy()))
    return (b[path[:, 1]] - a[path[:, 0]]).mean(0)


def _standardise(values: list[float]) -> torch.Tensor:
    v = torch.tensor(values, dtype=torch.float64)
    finite = torch.isfinite(v)
    if int(finite.sum()) < 2:
        return torch.where(finite, 0.0, -math.inf)
    mu, sd = v[finite].mean(), v[finite].std(unbiased=False)
    return torch.where(finite, (v - mu) / sd.clamp_min(1e-9), -math.inf)


def consistency_scores(
    candidates: Sequence[torch.Tensor],
    query: torch.Tensor,
    examples: Sequence[tuple[torch.Tensor, torch.Tensor]],
) -> list[float]:
    """Scores (higher: follows the examples better) of candidate frame sets ``[F_i, D]``.

    ``query`` holds the query's frames ``[Q, D]``; ``examples`` the (input, output) frame pairs.
    Empty candidates score ``-inf``. Frames: :func:`mfcc_frames`.
    """
    pairs = [(i, o) for i, o in examples if len(i) and len(o)]
    inputs = torch.cat([i for i, _ in pairs])
    outputs = torch.cat([o for _, o in pairs])
    shift = torch.stack([mean_shift(i, o) for i, o in pairs]).mean(0)
    direction = shift / shift.norm().clamp_min(1e-9)
    nearest, projected = [], []
    for c in candidates:
        if len(c) < 2:
            nearest.append(-math.inf)
            projected.append(-math.inf)
            continue
        nearest.append(_mean_nearest(c, inputs) - _mean_nearest(c, outputs))
        projected.append(float(mean_shift(query, c) @ direction) if len(query) else 0.0)
    return (_standardise(nearest) + _standardise(projected)).tolist()


Clip = np.ndarray | torch.Tensor


def pick_best(
    candidates: Sequence[Clip], query: Clip, examples: Sequence[tuple[Clip, Clip]], sample_rate: int
) -> tuple[int, list[float]]:
    """Index of the candidate clip that follows the examples best, and every candidate's score.

    ``candidates``: the outputs generated for ``query``; ``examples``: (input, output) clips. All are
    mono ``[samples]`` at ``sample_rate``. With one candidate, or when no example has voiced frames
    in both clips (nothing to compare against), the first candidate is chosen and every score is 0.
    """
    if not candidates:
        raise ValueError("pick_best needs at least one candidate")
    pairs = [(mfcc_frames(i, sample_rate), mfcc_frames(o, sample_rate)) for i, o in examples]
    if len(candidates) == 1 or not any(len(i) and len(o) for i, o in pairs):
        return 0, [0.0] * len(candidates)
    frames = [mfcc_frames(c, sample_rate) for c in candidates]
    scores = consistency_scores(frames, mfcc_frames(query, sample_rate), pairs)
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return best, scores
