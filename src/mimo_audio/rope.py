"""Rotary position embeddings (default "rotate-half" convention), shared by every transformer here.

cos/sin are computed in float32 and cast to the requested dtype, as the reference does.
"""

from __future__ import annotations

import torch


def inv_freq(head_dim: int, theta: float, device: torch.device | str | None = None) -> torch.Tensor:
    """``theta ** (-2i / head_dim)`` for ``i < head_dim / 2``: float32 ``[head_dim // 2]``."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    return 1.0 / (theta**exponent)


def rope_tables(
    positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables for integer ``positions`` ``[...]`` → two ``[..., head_dim]`` tensors of ``dtype``."""
    freqs = positions.float()[..., None] * inv_freq(head_dim, theta, positions.device)
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[a, b] → [-b, a]`` over the last dimension."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``[..., S, H, D]`` (or any layout whose cos/sin broadcast) by the tables."""
    return x * cos + rotate_half(x) * sin
