"""Tokenizer decoder (SPEC §5 steps 1–3): 25 Hz features → 100 Hz coarse mel → vocoder waveform.

``GroupNorm(1, C)`` normalises over every channel and time step of a sequence, so the output depends
on the whole chunk. In a padded batch each row's statistics cover only its own steps, which keeps
every row identical to decoding it alone (the reference's batched call does not, SPEC §5 step 6).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import TokenizerConfig
from .transformer import make_layers, make_norm, run_layers
from .vocoder import Vocoder

GROUP_NORM_EPS = 1e-5


def _steps_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """``[B, 1, steps]`` bool, True on a row's valid steps."""
    return torch.arange(steps, device=lengths.device)[None, None, :] < lengths[:, None, None]


def group_norm(x: torch.Tensor, norm: nn.GroupNorm, lengths: torch.Tensor | None) -> torch.Tensor:
    """``GroupNorm(1, C)`` of ``x`` ``[B, C, T]`` with statistics over each row's first ``lengths`` steps."""
    if lengths is None:
        return norm(x)
    mask = _steps_mask(lengths, x.shape[-1])
    count = (lengths * x.shape[1]).float()[:, None, None]
    h = x.float()
    mean = (h * mask).sum((1, 2), keepdim=True) / count
    var = ((h - mean).square() * mask).sum((1, 2), keepdim=True) / count
    h = ((h - mean) * torch.rsqrt(var + norm.eps)).to(x.dtype)
    return h * norm.weight[None, :, None] + norm.bias[None, :, None]


class UpConv(nn.Module):
    """ConvTranspose1d → GroupNorm(1) → drop the last ``max(0, k − stride)`` steps.

    Length rule: ``(n − 1) · stride + k − max(0, k − stride)``.
    """

    def __init__(self, in_dim: int, out_dim: int, kernel: int, stride: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(in_dim, out_dim, kernel, stride=stride)
        self.norm = nn.GroupNorm(1, out_dim, eps=GROUP_NORM_EPS)
        self.drop = max(0, kernel - stride)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        k, s = self.conv.kernel_size[0], self.conv.stride[0]
        return (lengths - 1) * s + k - self.drop

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: ``[B, n, C_in]`` → ``[B, n', C_out]`` and the new lengths (None stays None)."""
        x = x.transpose(1, 2)
        if lengths is not None:
            x = x * _steps_mask(lengths, x.shape[-1])  # padded steps must add nothing to valid ones
        y = self.conv(x)  # [B, C_out, (n − 1) · s + k]
        full = None if lengths is None else self.output_lengths(lengths) + self.drop
        y = group_norm(y, self.norm, full)
        if self.drop:
            y = y[:, :, : -self.drop]
        return y.transpose(1, 2), None if lengths is None else full - self.drop


class Decoder(nn.Module):
    """Dequantised features → waveform. Module names follow the checkpoint (``decoder.*``)."""

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        d = config.d_model
        self.config = config
        if config.avg_pooler != 1:
            self.dconv1 = UpConv(d, d, config.avg_pooler, config.avg_pooler)
        self.layers = make_layers(
            config.decoder_layers,
            d,
            config.decoder_attention_heads,
            config.decoder_ffn_dim,
            config.activation_function,
            config.ln_type,
        )
        self.layer_norm = make_norm(config.ln_type, d)
        self.dconv2 = UpConv(d, config.n_mels, config.decoder_kernel_size, config.decoder_stride_size)
        self.vocoder = Vocoder(config)

    def coarse_mel(
        self, features: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """features: ``[B, N, d]`` → coarse mel ``[B, 4N, n_mels]`` (model dtype) and its lengths."""
        cfg = self.config
        x = features.to(self.layer_norm.weight.dtype)
        if lengths is not None and bool((lengths == x.shape[1]).all()):
            lengths = None
        if cfg.avg_pooler != 1:
            x, lengths = self.dconv1(x, lengths)
        x, _ = run_layers(
            self.layers,
            x,
            lengths,
            causal=cfg.decoder_causal,
            window=cfg.decoder_attn_window_size,
            theta=cfg.rope_theta,
        )
        return self.dconv2(self.layer_norm(x), lengths)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """features: ``[B, N, d]`` (rows valid up to ``lengths``) → float32 waveform ``[B, spf · N]``.

        Samples past ``spf · lengths[b]`` are zero.
        """
        mel, mel_lengths = self.coarse_mel(features, lengths)
        return self.vocoder(mel, mel_lengths)
