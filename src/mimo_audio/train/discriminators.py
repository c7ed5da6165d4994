"""Stage-2 discriminators and GAN losses (technical report; SPEC §11).

* Multi-period discriminator (HiFi-GAN): the waveform folded into ``[T / p, p]`` for each period,
  2-D convolutions along time.
* Multi-scale STFT discriminator (EnCodec): complex STFT (real and imaginary channels) at several
  resolutions, dilated 2-D convolutions.

All convolutions use spectral normalisation. Losses are hinge losses and L1 feature matching
(normalised by the real features' mean magnitude), each averaged over sub-discriminators.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

LRELU_SLOPE = 0.2
Output = tuple[torch.Tensor, list[torch.Tensor]]  # logits, feature maps


class PeriodDiscriminator(nn.Module):
    def __init__(self, period: int, channels: int = 32, max_channels: int = 512) -> None:
        super().__init__()
        self.period = period
        chans = [1] + [min(channels * 4**i, max_channels) for i in range(4)]
        self.convs = nn.ModuleList(
            spectral_norm(nn.Conv2d(a, b, (5, 1), (3, 1), padding=(2, 0)))
            for a, b in zip(chans, chans[1:], strict=False)
        )
        self.convs.append(spectral_norm(nn.Conv2d(chans[-1], chans[-1], (5, 1), 1, padding=(2, 0))))
        self.post = spectral_norm(nn.Conv2d(chans[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x: torch.Tensor) -> Output:
        """x: ``[B, samples]``."""
        B, T = x.shape
        pad = -T % self.period
        if pad:
            x = F.pad(x[:, None], (0, pad), mode="reflect")[:, 0]
        h = x.reshape(B, 1, -1, self.period)
        fmaps = []
        for conv in self.convs:
            h = F.leaky_relu(conv(h), LRELU_SLOPE)
            fmaps.append(h)
        h = self.post(h)
        fmaps.append(h)
        return h.flatten(1), fmaps


class STFTDiscriminator(nn.Module):
    def __init__(self, n_fft: int, channels: int = 32, dilations: Sequence[int] = (1, 2, 4)) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, n_fft // 4
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        convs = [spectral_norm(nn.Conv2d(2, channels, (3, 9), padding=(1, 4)))]
        for d in dilations:
            convs.append(
                spectral_norm(nn.Conv2d(channels, channels, (3, 9), (1, 2), padding=(d, 4), dilation=(d, 1)))
            )
        convs.append(spectral_norm(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1))))
        self.convs = nn.ModuleList(convs)
        self.post = spectral_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, x: torch.Tensor) -> Output:
        spec = torch.stft(
            x.float(),
            self.n_fft,
            self.hop,
            window=self.window,
            normalized=True,
            center=True,
            return_complex=True,
        )  # [B, F, frames]
        h = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # [B, 2, frames, F]
        fmaps = []
        for conv in self.convs:
            h = F.leaky_relu(conv(h), LRELU_SLOPE)
            fmaps.append(h)
        h = self.post(h)
        fmaps.append(h)
        return h.flatten(1), fmaps


class Discriminators(nn.Module):
    """All sub-discriminators; ``forward(wav [B, samples])`` → one :data:`Output` per sub-discriminator."""

    def __init__(
        self,
        periods: Sequence[int] = (2, 3, 5, 7, 11),
        mpd_channels: int = 32,
        mpd_max_channels: int = 512,
        stft_ffts: Sequence[int] = (2048, 1024, 512),
        stft_channels: int = 32,
    ) -> None:
        super().__init__()
        self.mpd = nn.ModuleList(PeriodDiscriminator(p, mpd_channels, mpd_max_channels) for p in periods)
        self.msstft = nn.ModuleList(STFTDiscriminator(n, stft_channels) for n in stft_ffts)

    def forward(self, wav: torch.Tensor) -> list[Output]:
        return [d(wav) for d in (*self.mpd, *self.msstft)]


def hinge_d_loss(real: list[Output], fake: list[Output]) -> torch.Tensor:
    """``mean_k [mean relu(1 − D_k(real)) + mean relu(1 + D_k(fake))]``."""
    terms = [F.relu(1 - r[0]).mean() + F.relu(1 + f[0]).mean() for r, f in zip(real, fake, strict=True)]
    return torch.stack(terms).mean()


def hinge_g_loss(fake: list[Output]) -> torch.Tensor:
    """``mean_k mean relu(1 − D_k(fake))``."""
    return torch.stack([F.relu(1 - f[0]).mean() for f in fake]).mean()


def feature_matching_loss(real: list[Output], fake: list[Output]) -> torch.Tensor:
    """``mean_k mean_l |f_kl − r_kl| / mean |r_kl|`` with the real features detached."""
    terms = []
    for r, f in zip(real, fake, strict=True):
        layers = [
            F.l1_loss(fm, rm.detach()) / rm.detach().abs().mean().clamp(min=1e-8)
            for rm, fm in zip(r[1], f[1], strict=True)
        ]
        terms.append(torch.stack(layers).mean())
    return torch.stack(terms).mean()
