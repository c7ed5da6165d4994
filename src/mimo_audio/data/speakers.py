"""Speaker segmentation: speaker embeddings over the VAD regions, clustered into single-speaker turns,
merged and cut into segments of at most ``max_seconds``.

Embeddings come from Resemblyzer's GE2E voice encoder (3-layer LSTM, 256-d, L2-normed), with the
weights the ``resemblyzer`` wheel ships. The network and its 40-band mel front end (16 kHz, 25 ms
window, 10 ms hop, Slaney mel, power) are rebuilt here because the package's import pulls librosa
and webrtcvad (whose import needs the removed ``pkg_resources``); the weight file is located without
importing the package.

GE2E embeddings of short windows are dominated by the words spoken (on espeak-ng voices, two
voices saying one sentence are closer than one voice saying two), hence the 3 s windows and a
whole-region embedding for regions up to ``window + hop`` seconds.

Algorithm, per input: each VAD region is covered by windows of ``window`` seconds every ``hop``
seconds (one window for a shorter region); the window embeddings of the whole input are clustered
by average-linkage agglomeration on cosine distance, cut at ``cluster_distance``; a region changes
speaker between two windows of different clusters, at the lowest-energy 20 ms frame of their
overlap. Turns of one speaker separated by less than ``merge_gap`` seconds are merged while the
result stays ≤ ``max_seconds``; longer turns are split at the lowest-energy 20 ms frame in the
second half of each ``max_seconds`` span.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..audio import resample
from ..errors import MimoAudioError

ENC_RATE = 16000
N_FFT, HOP, N_MELS = 400, 160, 40


@dataclass(frozen=True)
class SegmentConfig:
    """Recipe keys of the ``segment`` stage (seconds; ``cluster_distance`` is 1 − cosine)."""

    window: float = 3.0
    hop: float = 1.5
    cluster_distance: float = 0.22
    merge_gap: float = 0.8
    max_seconds: float = 30.0
    min_seconds: float = 0.5


@dataclass(frozen=True)
class Segment:
    """One single-speaker span of an input (seconds) and its per-input speaker label."""

    start: float
    end: float
    speaker: int

    @property
    def duration(self) -> float:
        return self.end - self.start


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, np.float64)
    lin = f * 3.0 / 200.0
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) * 27.0 / np.log(6.4), lin)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return np.where(m >= 15.0, 1000.0 * np.exp((m - 15.0) * np.log(6.4) / 27.0), m * 200.0 / 3.0)


def mel_filters(rate: int = ENC_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """Slaney-normalised triangular mel filters ``[n_mels, n_fft // 2 + 1]`` (as librosa's default)."""
    freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(rate / 2), n_mels + 2))
    ramps = edges[:, None] - freqs[None, :]
    lower = -ramps[:-2] / np.diff(edges)[:-1, None]
    upper = ramps[2:] / np.diff(edges)[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


class VoiceEncoder(nn.Module):
    """GE2E speaker encoder: mel ``[B, frames, 40]`` → embedding ``[B, 256]`` (ReLU, L2-normed)."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(N_MELS, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        self.register_buffer("filters", torch.from_numpy(mel_filters()), persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

    @classmethod
    def pretrained(cls) -> VoiceEncoder:
        spec = importlib.util.find_spec("resemblyzer")
        if spec is None or not spec.submodule_search_locations:
            raise MimoAudioError("speaker segmentation needs the resemblyzer package (the [data] extra)")
        path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
        state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
        model = cls()
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("similarity_")})
        return model.eval()

    def mel(self, wav: torch.Tensor) -> torch.Tensor:
        """16 kHz ``[B, samples]`` → power mel ``[B, 1 + samples // 160, 40]``."""
        spec = (
            torch.stft(
                wav, N_FFT, HOP, window=self.window, center=True, pad_mode="constant", return_complex=True
            )
            .abs()
            .pow(2)
        )  # [B, 201, frames]
        return (self.filters @ spec).transpose(1, 2)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        raw = torch.relu(self.linear(hidden[-1]))
        return raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-8)

    @torch.inference_mode()
    def embed(self, clips: list[np.ndarray]) -> np.ndarray:
        """16 kHz clips → embeddings ``[len(clips), 256]`` (equal-length clips run as one batch)."""
        out = np.zeros((len(clips), 256), np.float32)
        by_len: dict[int, list[int]] = {}
        for i, c in enumerate(clips):
            by_len.setdefault(len(c), []).append(i)
        for idx in by_len.values():
            wav = torch.from_numpy(np.stack([clips[i] for i in idx]).astype(np.float32))
            out[idx] = self(self.mel(wav)).numpy()
        return out


def frame_energy(wav: np.ndarray, rate: int, frame: float = 0.02) -> np.ndarray:
    """Mean power per ``frame``-second frame: ``[ceil(samples / frame_samples)]``."""
    n = max(1, int(frame * rate))
    pad = -wav.shape[0] % n
    x = np.concatenate([wav, np.zeros(pad, wav.dtype)]).reshape(-1, n)
    return (x.astype(np.float64) ** 2).mean(axis=1)


def lowest_energy(energy: np.ndarray, start: float, end: float, frame: float = 0.02) -> float:
    """Centre (seconds) of the lowest-energy frame in ``[start, end)``."""
    a = int(start / frame)
    b = max(a + 1, min(int(end / frame), energy.shape[0]))
    if a >= energy.shape[0]:
        return start
    return (a + int(np.argmin(energy[a:b])) + 0.5) * frame


def cluster(embeddings: np.ndarray, distance: float) -> np.ndarray:
    """Average-linkage clusters on cosine distance cut at ``distance``: labels ``[N]`` from 0,
    numbered in order of first appearance."""
    if embeddings.shape[0] < 2:
        return np.zeros(embeddings.shape[0], np.int64)
    from scipy.cluster.hierarchy import fcluster, linkage

    embeddings = embeddings.copy()
    embeddings[np.linalg.norm(embeddings, axis=1) == 0] = 1.0  # an all-zero ReLU output has no direction
    raw = fcluster(linkage(embeddings, method="average", metric="cosine"), distance, criterion="distance")
    first: dict[int, int] = {}
    return np.array([first.setdefault(int(r), len(first)) for r in raw], np.int64)


class SpeakerSegmenter:
    """VAD regions of one 24 kHz input → single-speaker :class:`Segment` s of ≤ ``max_seconds``."""

    def __init__(self, cfg: SegmentConfig | None = None, encoder: VoiceEncoder | None = None) -> None:
        self.cfg = cfg or SegmentConfig()
        self.encoder = encoder or VoiceEncoder.pretrained()

    def _windows(self, regions: list[tuple[float, float]]) -> list[tuple[int, float, float]]:
        """``(region index, start, end)`` of the embedding windows, seconds."""
        w, h = self.cfg.window, self.cfg.hop
        out = []
        for r, (s, e) in enumerate(regions):
            if e - s <= w + h:
                out.append((r, s, e))
                continue
            n = int(np.ceil((e - s - w) / h)) + 1
            starts = np.linspace(s, e - w, n)
            out += [(r, float(t), float(t) + w) for t in starts]
        return out

    def segments(self, wav: np.ndarray, rate: int, regions: list[tuple[float, float]]) -> list[Segment]:
        """Single-speaker segments, sorted by time (see the module docstring)."""
        if not regions:
            return []
        wins = self._windows(regions)
        wav16 = resample(np.asarray(wav, np.float32), rate, ENC_RATE)
        clips = [
            wav16[int(s * ENC_RATE) : max(int(e * ENC_RATE), int(s * ENC_RATE) + HOP)] for _, s, e in wins
        ]
        labels = cluster(self.encoder.embed(clips), self.cfg.cluster_distance)
        energy = frame_energy(wav, rate)
        turns: list[Segment] = []
        for j, (r, s, e) in enumerate(wins):
            if j and wins[j - 1][0] == r:  # continuing the region
                prev = turns[-1]
                if labels[j] == prev.speaker:
                    turns[-1] = Segment(prev.start, e, prev.speaker)
                else:
                    cut = lowest_energy(energy, s, wins[j - 1][2])
                    turns[-1] = Segment(prev.start, cut, prev.speaker)
                    turns.append(Segment(cut, e, int(labels[j])))
            else:
                turns.append(Segment(s, e, int(labels[j])))
        return self._split_long(self._merge(turns), energy)

    def _merge(self, turns: list[Segment]) -> list[Segment]:
        out: list[Segment] = []
        for t in turns:
            last = out[-1] if out else None
            if (
                last is not None
                and last.speaker == t.speaker
                and t.start - last.end < self.cfg.merge_gap
                and t.end - last.start <= self.cfg.max_seconds
            ):
                out[-1] = Segment(last.start, t.end, t.speaker)
            else:
                out.append(t)
        return out

    def _split_long(self, segs: list[Segment], energy: np.ndarray) -> list[Segment]:
        limit = self.cfg.max_seconds
        out: list[Segment] = []
        for seg in segs:
            start = seg.start
            while seg.end - start > limit:
                cut = lowest_energy(energy, start + limit / 2, start + limit)
                cut = min(cut, start + limit)
                out.append(Segment(start, cut, seg.speaker))
                start = cut
            out.append(Segment(start, seg.end, seg.speaker))
        return [s for s in out if s.duration >= self.cfg.min_seconds]
