"""Log-mel front end (SPEC §2.3): magnitude STFT, HTK mel filterbank without normalisation, natural log.

Equivalent to torchaudio's ``MelSpectrogram(power=1, center=True, pad_mode="reflect", norm=None,
mel_scale="htk")`` followed by ``log(clamp(x, 1e-7))``, written on plain torch. Always float32.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import AudioInputError
from .config import TokenizerConfig

LOG_FLOOR = 1e-7


def hz_to_mel(freq: float) -> float:
    """HTK mel scale: ``2595 · log10(1 + f / 700)``."""
    return 2595.0 * math.log10(1.0 + freq / 700.0)


def mel_to_hz(mels: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`hz_to_mel` on a tensor."""
    return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)


def mel_filterbank(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> torch.Tensor:
    """Triangular HTK filters peaking at 1 (no area normalisation): float32 ``[n_freqs, n_mels]``.

    Frequency grid ``linspace(0, sr // 2, n_freqs)``; ``n_mels + 2`` edges equally spaced in mel;
    each filter is ``clamp(min(rising, falling), 0)``.
    """
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    m_pts = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2)
    f_pts = mel_to_hz(m_pts)
    f_diff = f_pts[1:] - f_pts[:-1]  # [n_mels + 1]
    slopes = f_pts[None, :] - all_freqs[:, None]  # [n_freqs, n_mels + 2]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0)


def num_mel_frames(num_samples: int, hop_length: int) -> int:
    """Frames of a centred STFT: ``1 + num_samples // hop_length``."""
    return 1 + num_samples // hop_length


class MelFrontEnd(nn.Module):
    """Waveform → log-mel. Its tables are not part of the checkpoint (they are rebuilt from the config)."""

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        self.config = config
        self.n_fft = config.nfft
        self.win_length = config.window_size
        self.hop_length = config.hop_length
        # Plain attributes, not buffers: casting the model (``.to(bfloat16)``) must not round them.
        self._tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 Hann window ``[window_size]`` and filterbank ``[n_freqs, n_mels]`` on ``device``."""
        if device not in self._tables:
            cfg = self.config
            window = torch.hann_window(cfg.window_size, periodic=True)
            fbank = mel_filterbank(cfg.n_freqs, cfg.fmin, cfg.mel_fmax, cfg.n_mels, cfg.sampling_rate)
            self._tables[device] = (window.to(device), fbank.to(device))
        return self._tables[device]

    @property
    def min_samples(self) -> int:
        """Shortest input the reflect padding accepts."""
        return self.n_fft // 2 + 1

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """wav: ``[samples]`` or ``[B, samples]`` float → log-mel ``[frames, n_mels]`` / ``[B, frames, n_mels]``.

        ``frames = 1 + samples // hop_length``; computed in float32 whatever the input dtype.
        """
        if wav.shape[-1] < self.min_samples:
            raise AudioInputError(
                f"audio is too short: {wav.shape[-1]} samples, the tokenizer needs at least {self.min_samples}"
            )
        window, filterbank = self.tables(wav.device)
        spec = torch.stft(
            wav.float(),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=window,
            center=True,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        ).abs()  # [..., n_freqs, frames]
        mel = torch.matmul(spec.transpose(-1, -2), filterbank)  # [..., frames, n_mels]
        return torch.clamp(mel, min=LOG_FLOOR).log()
