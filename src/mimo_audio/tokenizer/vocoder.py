"""Vocos-style vocoder with a windowed-attention transformer backbone and an ISTFT head (SPEC §5 step 4).

Coarse mel ``[B, T, n_mels]`` (100 Hz) → waveform ``[B, hop · T]``. Rows of a padded batch are
computed as if alone: RoPE positions restart per row, padded frames are masked out of the attention
and out of the overlap-add (the reference's batched call would leak them, SPEC §5 step 6).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import TokenizerConfig
from .transformer import make_layers, make_norm, run_layers


class ISTFT(nn.Module):
    """Inverse STFT with "same" padding: trims ``(n_fft − hop) // 2`` samples at each end.

    The Hann window is a checkpoint buffer (``head.istft.window``).
    """

    def __init__(self, n_fft: int, hop_length: int):
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.pad = (n_fft - hop_length) // 2
        self.window: torch.Tensor
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True))

    def forward(self, spec: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """spec: complex ``[B, n_fft // 2 + 1, T]`` → float32 ``[B, hop · T]``.

        With ``lengths`` (frames per row) the frames past a row's end add nothing, and its window
        envelope counts only its own frames; samples past ``hop · length`` are zero.
        """
        B, _, T = spec.shape
        out_size = (T - 1) * self.hop_length + self.n_fft
        fold = dict(output_size=(1, out_size), kernel_size=(1, self.n_fft), stride=(1, self.hop_length))
        frames = torch.fft.irfft(spec, n=self.n_fft, dim=1, norm="backward")  # [B, n_fft, T]
        frames = frames * self.window[None, :, None]
        envelope = self.window.square()[None, :, None].expand(1, -1, T)
        if lengths is not None:
            frame_ok = torch.arange(T, device=spec.device)[None, None, :] < lengths[:, None, None]
            frames = frames * frame_ok
            envelope = envelope * frame_ok
        end = out_size - self.pad
        y = F.fold(frames, **fold)[:, 0, 0, self.pad : end]
        envelope = F.fold(envelope, **fold)[:, 0, 0, self.pad : end]
        if lengths is None:
            return y / envelope
        ok = envelope > 1e-11
        return torch.where(ok, y / torch.where(ok, envelope, 1.0), 0.0)


class ISTFTHead(nn.Module):
    """Linear → (log-magnitude, phase) → complex spectrum → :class:`ISTFT`."""

    def __init__(self, dim: int, n_fft: int, hop_length: int):
        super().__init__()
        self.out = nn.Linear(dim, n_fft + 2)
        self.istft = ISTFT(n_fft, hop_length)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x: ``[B, T, dim]`` → float32 waveform ``[B, hop · T]`` (rounded to the model dtype)."""
        h = self.out(x).transpose(1, 2)  # [B, n_fft + 2, T]
        log_mag, phase = h.chunk(2, dim=1)
        # exp/clip/cos/sin in the model dtype, then the product in float32 complex (SPEC §10).
        mag = torch.exp(log_mag).clip(max=100.0).float()
        spec = torch.complex(mag * torch.cos(phase).float(), mag * torch.sin(phase).float())
        return self.istft(spec, lengths).to(h.dtype).float()


class Vocoder(nn.Module):
    """``embeddings`` → windowed transformer → ``layer_norm`` → :class:`ISTFTHead`."""

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        self.config = config
        dim = config.vocoder_dim
        self.embeddings = nn.Linear(config.n_mels, dim, bias=False)
        self.layers = make_layers(
            config.vocoder_num_layers,
            dim,
            config.vocoder_attention_heads,
            config.vocoder_intermediate_dim,
            config.activation_function,
            config.ln_type,
        )
        self.layer_norm = make_norm(config.ln_type, dim)
        self.head = ISTFTHead(dim, config.nfft, config.hop_length)

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """mel: ``[B, T, n_mels]`` → float32 waveform ``[B, hop_length · T]``."""
        x = self.embeddings(mel)
        x, _ = run_layers(
            self.layers,
            x,
            lengths,
            causal=False,
            window=self.config.vocoder_attn_window_size,
            theta=self.config.rope_theta,
        )
        return self.head(self.layer_norm(x), lengths)
