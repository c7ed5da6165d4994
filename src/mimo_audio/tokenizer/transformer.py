"""The pre-LN transformer block shared by the encoder, the decoder and the vocoder (SPEC §3.1).

Sequences of a batch are right-padded ``[B, T, d]`` with per-row ``lengths``; every row is computed
exactly as it would be alone (padded keys are masked; padded query rows are finite garbage). Masks
follow flash-attention varlen semantics: ``causal`` keeps keys ``j ≤ i``, a window ``(left, right)``
keeps ``i − left ≤ j ≤ i + right`` (−1 = unlimited). A window with both sides bounded runs as local
block attention (each block of queries against its own band of keys) instead of a full ``T × T`` mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..rope import apply_rope, rope_tables

LAYER_NORM_EPS = 1e-5
RMS_NORM_EPS = 1e-6
# Bounded windows run as local block attention. False forces the full T × T masked attention of the
# reference formulation (same result, slower; benchmarks/tokenizer.py measures both).
LOCAL_ATTENTION = True


class RMSNorm(nn.Module):
    """RMSNorm with the variance in float32 and the normalised value cast back before the weight."""

    def __init__(self, dim: int, eps: float = RMS_NORM_EPS):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def make_norm(ln_type: str, dim: int) -> nn.Module:
    """``LayerNorm`` (eps 1e-5, with bias) or ``RMSNorm`` (eps 1e-6)."""
    return RMSNorm(dim) if ln_type == "RMSNorm" else nn.LayerNorm(dim, eps=LAYER_NORM_EPS)


def activation(name: str, x: torch.Tensor) -> torch.Tensor:
    """The config's ``activation_function`` (``gelu`` is the exact erf form)."""
    if name == "gelu":
        return F.gelu(x)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu(x)
    return F.silu(x)


@dataclass
class AttentionPlan:
    """How a stack attends, prepared once per forward and shared by its layers.

    ``mask``: bool (True = attend), broadcastable to ``[B, H, T, T]`` — or, for local attention,
    ``[B·nb, 1, block, block + left + right]``. ``local``: ``(block, left, right)`` or None.
    """

    length: int
    mask: torch.Tensor | None = None
    is_causal: bool = False
    local: tuple[int, int, int] | None = None


def local_block_size(left: int, right: int) -> int:
    """Queries per block of local attention: large enough that the key band overhead stays small."""
    return max(32, 1 << max(0, left + right - 1).bit_length())


def plan_attention(
    length: int,
    lengths: torch.Tensor | None,
    *,
    causal: bool,
    window: tuple[int, int],
    device: torch.device,
    batch: int = 1,
) -> AttentionPlan:
    """Build the masks for ``batch`` rows of ``length`` steps, valid up to ``lengths`` (None: all)."""
    left = window[0] if window[0] >= 0 else None
    right = 0 if causal else (window[1] if window[1] >= 0 else None)
    if left is None and right is None:
        if lengths is None:
            return AttentionPlan(length)
        key_ok = torch.arange(length, device=device)[None, :] < lengths[:, None]
        return AttentionPlan(length, mask=key_ok[:, None, None, :])
    if left is None and right == 0:
        # Right padding never reaches a valid query through a causal mask.
        return AttentionPlan(length, is_causal=True)
    if left is not None and right is not None and LOCAL_ATTENTION:
        block = local_block_size(left, right)
        if length > 2 * (block + left + right):
            return _local_plan(length, lengths, left, right, block, device, batch)
    pos = torch.arange(length, device=device)
    i, j = pos[:, None], pos[None, :]
    allowed = torch.ones(length, length, dtype=torch.bool, device=device)
    if left is not None:
        allowed &= j >= i - left
    if right is not None:
        allowed &= j <= i + right
    if lengths is None:
        return AttentionPlan(length, mask=allowed)
    lens = lengths[:, None, None]
    allowed = (allowed & (j < lens)) | (i >= lens)  # padded query rows attend anywhere (finite)
    return AttentionPlan(length, mask=allowed[:, None])


def _local_plan(
    length: int,
    lengths: torch.Tensor | None,
    left: int,
    right: int,
    block: int,
    device: torch.device,
    batch: int,
) -> AttentionPlan:
    nb = math.ceil(length / block)
    width = block + left + right
    a = torch.arange(block, device=device)[:, None]  # query offset in its block
    c = torch.arange(width, device=device)[None, :]  # key offset in the block's band
    band = (c >= a) & (c <= a + left + right)  # [Q, W]
    starts = torch.arange(nb, device=device) * block
    key_pos = starts[:, None] - left + torch.arange(width, device=device)[None, :]  # [nb, W]
    query_pos = starts[:, None] + torch.arange(block, device=device)[None, :]  # [nb, Q]
    lens = torch.full((batch,), length, device=device) if lengths is None else lengths
    key_ok = (key_pos[None] >= 0) & (key_pos[None] < lens[:, None, None])  # [B, nb, W]
    query_ok = query_pos[None] < lens[:, None, None]  # [B, nb, Q]
    mask = (band[None, None] & key_ok[:, :, None, :]) | ~query_ok[..., None]  # [B, nb, Q, W]
    return AttentionPlan(length, mask=mask.reshape(-1, 1, block, width), local=(block, left, right))


def local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: AttentionPlan) -> torch.Tensor:
    """Banded attention in blocks. q, k, v: ``[B, H, T, D]`` → ``[B, T, H·D]``."""
    block, left, right = plan.local
    B, H, T, D = q.shape
    nb = math.ceil(T / block)
    pad = nb * block - T
    width = block + left + right
    qb = F.pad(q, (0, 0, 0, pad)).view(B, H, nb, block, D).transpose(1, 2)  # [B, nb, H, Q, D]
    kb = F.pad(k, (0, 0, left, pad + right)).unfold(2, width, block)  # [B, H, nb, D, W]
    vb = F.pad(v, (0, 0, left, pad + right)).unfold(2, width, block)
    kb = kb.permute(0, 2, 1, 4, 3).reshape(B * nb, H, width, D)
    vb = vb.permute(0, 2, 1, 4, 3).reshape(B * nb, H, width, D)
    out = F.scaled_dot_product_attention(qb.reshape(B * nb, H, block, D), kb, vb, attn_mask=plan.mask)
    out = out.view(B, nb, H, block, D).transpose(2, 3).reshape(B, nb * block, H * D)
    return out[:, :T]


class Attention(nn.Module):
    """Multi-head self-attention with RoPE; ``k_proj`` has no bias."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.q_proj = nn.Linear(dim, dim, bias=True)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=True)
        self.out_proj = nn.Linear(dim, dim, bias=True)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, plan: AttentionPlan
    ) -> torch.Tensor:
        """x: ``[B, T, d]``; cos/sin: ``[T, head_dim]`` → ``[B, T, d]``."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)  # [B, H, T, D]
        k = self.k_proj(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        if plan.local is not None:
            out = local_attention(q, k, v, plan)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=plan.mask, is_causal=plan.is_causal)
            out = out.transpose(1, 2).reshape(B, T, -1)
        return self.out_proj(out)


class TransformerBlock(nn.Module):
    """``h = x + Attn(LN1(x)); y = h + FC2(act(FC1(LN2(h))))``."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, act: str, ln_type: str):
        super().__init__()
        self.act = act
        self.self_attn = Attention(dim, heads)
        self.self_attn_layer_norm = make_norm(ln_type, dim)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.final_layer_norm = make_norm(ln_type, dim)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, plan: AttentionPlan
    ) -> torch.Tensor:
        """x: ``[B, T, d]`` → ``[B, T, d]``."""
        h = x + self.self_attn(self.self_attn_layer_norm(x), cos, sin, plan)
        y = h + self.fc2(activation(self.act, self.fc1(self.final_layer_norm(h))))
        if y.dtype in (torch.float16, torch.bfloat16):
            limit = torch.finfo(y.dtype).max - 1000
            y = torch.where(torch.isfinite(y).all(), y, y.clamp(-limit, limit))
        return y


def make_layers(n: int, dim: int, heads: int, ffn_dim: int, act: str, ln_type: str) -> nn.ModuleList:
    return nn.ModuleList(TransformerBlock(dim, heads, ffn_dim, act, ln_type) for _ in range(n))


def run_layers(
    layers: nn.ModuleList,
    x: torch.Tensor,
    lengths: torch.Tensor | None,
    *,
    causal: bool,
    window: tuple[int, int],
    theta: float,
    keep: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run ``layers`` over ``x`` ``[B, T, d]`` with RoPE positions ``0..T−1`` in every row.

    Returns the output and, when ``keep`` is a 1-based layer number, that layer's output.
    """
    if not layers:
        return x, (x if keep else None)
    head_dim = layers[0].self_attn.head_dim
    T = x.shape[1]
    cos, sin = rope_tables(torch.arange(T, device=x.device), head_dim, theta, x.dtype)  # [T, head_dim]
    if lengths is not None and bool((lengths == T).all()):
        lengths = None
    plan = plan_attention(T, lengths, causal=causal, window=window, device=x.device, batch=x.shape[0])
    kept = None
    for number, layer in enumerate(layers, start=1):
        x = layer(x, cos, sin, plan)
        if number == keep:
            kept = x
    return x, kept
