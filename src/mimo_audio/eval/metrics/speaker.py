"""Speaker similarity: cosine of resemblyzer d-vectors (its GE2E encoder ships inside the package).

The encoder is loaded once per process on first use (CPU, about 17 MB, no download) and shared by
threads behind a lock. Clips are resampled to 16 kHz with soxr and go through resemblyzer's own
preprocessing (volume normalisation, long-silence trimming with WebRTC VAD).
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import soxr

ENCODER_RATE = 16000

_lock = threading.Lock()
_encoder = None


def _load_encoder():
    global _encoder
    with _lock:
        if _encoder is None:
            with warnings.catch_warnings():
                # resemblyzer 0.1.4 imports scipy.ndimage.morphology and webrtcvad imports pkg_resources
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", UserWarning)
                from resemblyzer import VoiceEncoder

                _encoder = VoiceEncoder("cpu", verbose=False)
    return _encoder


SILENCE_PEAK = 1e-5  # clips quieter than this everywhere hold no voice to embed


def speaker_embedding(wav: np.ndarray, sr: int) -> np.ndarray:
    """L2-normalised d-vector ``[256]`` float32 of a mono clip ``[samples]`` at ``sr`` Hz.

    A silent clip has no speaker: its embedding is all NaN (so similarities with it are NaN).
    """
    if not np.abs(np.asarray(wav)).max(initial=0.0) > SILENCE_PEAK:
        return np.full(256, np.nan, np.float32)
    encoder = _load_encoder()  # first: it imports resemblyzer with its warnings silenced
    from resemblyzer import preprocess_wav

    x = np.asarray(wav, np.float32).reshape(-1)
    if sr != ENCODER_RATE:
        x = soxr.resample(x, sr, ENCODER_RATE).astype(np.float32)
    processed = preprocess_wav(x)
    if processed.size < ENCODER_RATE // 10:  # all trimmed away as silence: embed the raw clip
        processed = x
    with _lock:  # the LSTM and librosa's mel cache are not documented as thread-safe
        emb = encoder.embed_utterance(processed)
    return np.asarray(emb, np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors (−1..1; NaN when either is NaN)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if np.isnan(a).any() or np.isnan(b).any():
        return float("nan")
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def speaker_similarity(a: np.ndarray, b: np.ndarray, sr: int) -> float:
    """Cosine similarity (−1..1, same voice ≈ 0.75–0.95) of the speakers of clips ``a`` and ``b``.

    ``a`` and ``b``: mono float ``[samples]`` at ``sr`` Hz (lengths may differ). NaN when either
    clip is silent.
    """
    return cosine(speaker_embedding(a, sr), speaker_embedding(b, sr))
