"""Voice activity detection with Silero VAD, run from the ONNX model the ``silero-vad`` wheel ships.

The package's Python side imports torchaudio-era helpers we do not need, so only its data file is
read (located without importing the package) and run with onnxruntime, fully offline. The model
scores 32 ms frames (512 samples at 16 kHz, with 64 samples of left context and a recurrent state);
speech regions come from hysteresis on those probabilities (``threshold`` to enter,
``threshold - 0.15`` to leave), then short gaps are closed, short regions dropped and the
regions padded.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import resample
from ..errors import MimoAudioError

VAD_RATE = 16000
FRAME = 512  # samples at 16 kHz = 32 ms
CONTEXT = 64


@dataclass(frozen=True)
class VadConfig:
    """Recipe keys of the ``vad`` stage (probabilities, seconds)."""

    threshold: float = 0.5
    min_speech: float = 0.25
    min_silence: float = 0.3
    pad: float = 0.1


def _model_path() -> Path:
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise MimoAudioError("voice activity detection needs the silero-vad package (the [data] extra)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise MimoAudioError(f"silero-vad model not found at {path}")
    return path


class SileroVad:
    """Frame speech probabilities and speech regions of 24 kHz (any rate) mono audio."""

    def __init__(self, cfg: VadConfig | None = None) -> None:
        import onnxruntime

        self.cfg = cfg or VadConfig()
        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(
            str(_model_path()), sess_options=opts, providers=["CPUExecutionProvider"]
        )

    def probabilities(self, wav: np.ndarray, rate: int) -> np.ndarray:
        """Speech probability per 32 ms frame: float32 ``[ceil(samples_16k / 512)]``."""
        x = resample(np.asarray(wav, np.float32), rate, VAD_RATE)
        n = -(-x.shape[0] // FRAME)
        x = np.concatenate([np.zeros(CONTEXT, np.float32), x, np.zeros(n * FRAME - x.shape[0], np.float32)])
        state = np.zeros((2, 1, 128), np.float32)
        sr = np.array(VAD_RATE, dtype=np.int64)
        out = np.empty(n, np.float32)
        for i in range(n):
            chunk = x[i * FRAME : (i + 1) * FRAME + CONTEXT][None]
            prob, state = self.session.run(None, {"input": chunk, "state": state, "sr": sr})
            out[i] = prob.reshape(-1)[0]
        return out

    def regions(self, wav: np.ndarray, rate: int) -> list[tuple[float, float]]:
        """Speech regions ``[(start, end)]`` in seconds, sorted and non-overlapping."""
        return probs_to_regions(self.probabilities(wav, rate), self.cfg, wav.shape[0] / rate)


def probs_to_regions(probs: np.ndarray, cfg: VadConfig, duration: float) -> list[tuple[float, float]]:
    """Hysteresis over frame probabilities ``[F]`` → padded regions in seconds (clipped to duration)."""
    hop = FRAME / VAD_RATE
    on, off = cfg.threshold, max(cfg.threshold - 0.15, 0.01)
    raw: list[list[float]] = []
    start = None
    for i, p in enumerate(probs):
        if start is None and p >= on:
            start = i * hop
        elif start is not None and p < off:
            raw.append([start, i * hop])
            start = None
    if start is not None:
        raw.append([start, len(probs) * hop])
    merged: list[list[float]] = []
    for r in raw:
        if merged and r[0] - merged[-1][1] < cfg.min_silence:
            merged[-1][1] = r[1]
        else:
            merged.append(r)
    out: list[tuple[float, float]] = []
    for s, e in merged:
        if e - s < cfg.min_speech:
            continue
        s, e = max(0.0, s - cfg.pad), min(duration, e + cfg.pad)
        if out and s < out[-1][1]:  # padding made neighbours touch: split the gap in the middle
            mid = (out[-1][1] - cfg.pad + s + cfg.pad) / 2
            out[-1], s = (out[-1][0], mid), mid
        out.append((s, e))
    return out
