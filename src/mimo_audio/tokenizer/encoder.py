"""Tokenizer encoder (SPEC §3): conv stem, transformer with a layer skip, average-pool down-sampling.

The reference encodes the segments of one pass as a zero-padded batch, and two of its steps let the
padding leak into a shorter segment (SPEC §3 steps 2 and 5, §12.5). Every row here carries a
``context`` length — the longest mel segment of the reference pass it belongs to — and reproduces
exactly what that pass would compute for it; ``context == length`` is the segment encoded alone.
So any batch composition gives each row the result of its own reference pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import TokenizerConfig
from .quantizer import ResidualVectorQuantizer
from .transformer import activation, make_layers, make_norm, run_layers


def conv_stem_lengths(mel_lengths: torch.Tensor, kernel_size: int, stride: int) -> torch.Tensor:
    """Valid conv-stem outputs per row: ``((T + 3 − k) + 2 − k) // stride + 1`` (= ``(T − 1)//2 + 1``)."""
    return ((mel_lengths + 3 - kernel_size) + 2 - kernel_size) // stride + 1


def encoder_output_lengths(mel_lengths: torch.Tensor, config: TokenizerConfig) -> torch.Tensor:
    """25 Hz frames per segment: ``ceil(L / avg_pooler)`` with ``L`` the conv-stem length."""
    stem = conv_stem_lengths(mel_lengths, config.kernel_size, config.stride_size)
    return (stem + config.avg_pooler - 1) // config.avg_pooler


class Encoder(nn.Module):
    """log-mel segments → continuous 25 Hz features (and, via ``quantizer``, RVQ codes)."""

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        d, k = config.d_model, config.kernel_size
        self.config = config
        self.conv1 = nn.Conv1d(config.n_mels, d, kernel_size=k, padding=1)
        self.conv2 = nn.Conv1d(d, d, kernel_size=k, stride=config.stride_size, padding=1)
        self.layers = make_layers(
            config.encoder_layers,
            d,
            config.encoder_attention_heads,
            config.encoder_ffn_dim,
            config.activation_function,
            config.ln_type,
        )
        self.layer_norm = make_norm(config.ln_type, d)
        if config.avg_pooler != 1:
            pool = config.avg_pooler
            self.down_sample_layer = nn.Sequential(nn.Conv1d(d, d, pool, stride=pool, bias=False))
            self.down_sample_norm = make_norm(config.ln_type, d)
        self.quantizer = ResidualVectorQuantizer(d, config.codebook_sizes)

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return activation(self.config.activation_function, x)

    def forward(
        self, mel: torch.Tensor, lengths: torch.Tensor, context: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a right-padded batch of mel segments.

        Args:
            mel: ``[B, n_mels, T]`` float, zero past each row's length.
            lengths: ``[B]`` int64 mel frames per row.
            context: ``[B]`` int64 ≥ ``lengths``: the longest segment of the row's reference pass
                (default: ``lengths``, i.e. each segment as if encoded alone).

        Returns:
            features ``[B, N, d]`` (model dtype) and their lengths ``[B]`` (``N`` = max of them).
        """
        cfg = self.config
        k, stride = cfg.kernel_size, cfg.stride_size
        context = lengths if context is None else torch.maximum(context, lengths)
        # The batch must hold the zero padding the reference pass would have past each row.
        need = int(torch.minimum(context, lengths + k).max())
        if mel.shape[-1] < need:
            mel = F.pad(mel, (0, need - mel.shape[-1]))
        else:
            valid = torch.arange(mel.shape[-1], device=mel.device)[None, None, :] < lengths[:, None, None]
            mel = mel * valid
        x = self._act(self.conv1(mel.to(self.conv1.weight.dtype)))  # [B, d, T1]
        # conv1 outputs past the row's pass length are conv2's zero padding in the reference.
        c1 = context + 3 - k
        x = x * (torch.arange(x.shape[-1], device=x.device)[None, None, :] < c1[:, None, None])
        x = self._act(self.conv2(x))  # [B, d, T2]
        stem = conv_stem_lengths(lengths, k, stride)
        x = x[:, :, : int(stem.max())].transpose(1, 2)  # [B, L, d]
        x, kept = run_layers(
            self.layers,
            x,
            stem,
            causal=cfg.encoder_causal,
            window=cfg.encoder_attn_window_size,
            theta=cfg.rope_theta,
            keep=cfg.encoder_skip_layer_id,
        )
        if kept is not None:
            x = x + kept
        x = self.layer_norm(x)
        if cfg.avg_pooler == 1:
            return x, stem
        return self._down_sample(x, stem, conv_stem_lengths(context, k, stride))

    def _down_sample(
        self, x: torch.Tensor, stem: torch.Tensor, pass_stem: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: ``[B, L, d]`` → ``[B, N, d]``. Steps past a row's length hold its last vector up to its
        pass length, zeros beyond (the reference's unpacking gather)."""
        pool = self.config.avg_pooler
        out_lengths = (stem + pool - 1) // pool
        steps = int(out_lengths.max()) * pool
        x = F.pad(x, (0, 0, 0, steps - x.shape[1]))
        pos = torch.arange(steps, device=x.device)[None, :, None]
        last = x.gather(1, (stem - 1)[:, None, None].expand(-1, 1, x.shape[-1]))  # [B, 1, d]
        x = torch.where(pos < stem[:, None, None], x, last * (pos < pass_stem[:, None, None]))
        x = self._act(self.down_sample_layer(x.transpose(1, 2))).transpose(1, 2)  # [B, N, d]
        return self.down_sample_norm(x), out_lengths
