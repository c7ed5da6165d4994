"""Multi-scale mel reconstruction loss (technical report; SPEC §11).

Scale ``i`` uses ``2^i`` mel bins, window ``15·2^(i−1)`` and hop ``15·2^(i−2)`` samples (i = 5, 6, 7:
32/64/128 bins, 240/480/960 window, 120/240/480 hop at 24 kHz), a normalised magnitude STFT, the HTK
filterbank of the front end and the natural log (floor 1e-5). The loss is the L1 distance of the
log-mels over each clip's valid frames, averaged over scales.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..tokenizer.mel import mel_filterbank

LOG_FLOOR = 1e-5


def scale_sizes(i: int) -> tuple[int, int, int]:
    """``(n_mels, window, hop)`` of scale ``i``."""
    return 2**i, 15 * 2 ** (i - 1), 15 * 2 ** (i - 2)


class MultiScaleMelLoss(nn.Module):
    """``forward(y_hat, y, lengths)`` → per-scale L1 sums ``[S]`` and element counts ``[S]``."""

    def __init__(self, sample_rate: int, scales: Sequence[int] = (5, 6, 7)) -> None:
        super().__init__()
        self.scales = tuple(scales)
        for i in self.scales:
            n_mels, win, _ = scale_sizes(i)
            self.register_buffer(f"window_{i}", torch.hann_window(win), persistent=False)
            fb = mel_filterbank(win // 2 + 1, 0.0, sample_rate / 2, n_mels, sample_rate)
            self.register_buffer(f"fbank_{i}", fb, persistent=False)

    def log_mel(self, y: torch.Tensor, i: int) -> torch.Tensor:
        """``y [B, samples]`` → log-mel ``[B, frames, 2^i]`` (float32, centred frames)."""
        _, win, hop = scale_sizes(i)
        spec = torch.stft(
            y.float(),
            n_fft=win,
            hop_length=hop,
            window=getattr(self, f"window_{i}"),
            center=True,
            pad_mode="reflect",
            normalized=True,
            return_complex=True,
        ).abs()
        return (spec.transpose(1, 2) @ getattr(self, f"fbank_{i}")).clamp(min=LOG_FLOOR).log()

    def counts(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid elements per scale ``[S]`` for clips of ``lengths`` samples."""
        out = []
        for i in self.scales:
            n_mels, _, hop = scale_sizes(i)
            out.append(((lengths // hop + 1) * n_mels).sum())
        return torch.stack(out).float()

    def forward(
        self, y_hat: torch.Tensor, y: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``y_hat``, ``y``: ``[B, samples]`` (same length); ``lengths [B]`` valid samples per clip."""
        sums = []
        with torch.autocast(y.device.type, enabled=False):
            for i in self.scales:
                _, _, hop = scale_sizes(i)
                a, b = self.log_mel(y_hat, i), self.log_mel(y, i)  # [B, F, M]
                valid = torch.arange(a.shape[1], device=a.device)[None, :] < (lengths // hop + 1)[:, None]
                sums.append(((a - b).abs() * valid[..., None]).sum())
        return torch.stack(sums), self.counts(lengths).to(y.device)
