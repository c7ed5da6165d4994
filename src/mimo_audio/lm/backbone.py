"""Qwen2 decoder stack (transformers 4.49 semantics) on ``F.scaled_dot_product_attention``.

One class, :class:`Qwen2Stack`, serves the backbone (with ``embed_tokens``), the patch encoder and the
patch decoder (SPEC §7.2–7.4). Parameter names match the checkpoint (``layers.{i}.self_attn.q_proj``…).

The stack works without a cache (whole sequences: training, scoring, the patch encoder) or with a
*cache view* (:mod:`.kv_cache`) that stores the new keys/values and says what to attend to. RoPE tables
are built once per call in the dtype of the stack's input (SPEC §10), or passed in precomputed.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..rope import rope_tables
from .config import StackConfig
from .linears import concat_linears


class CacheView(Protocol):
    """What a stack needs from a KV cache for one call (see :mod:`.kv_cache`)."""

    attn_mask: torch.Tensor | None  # bool, True = attend; broadcastable to [B, H, S, K]
    is_causal: bool

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k``/``v`` ``[B, KV, S, D]`` of ``layer``; return the keys/values to attend to."""
        ...


def rope_rotate(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE, ``x·cos + rotate_half(x)·sin``, in 3 kernels.

    ``rotate_half(x)·sin = [x2, x1]·[-s, s]``: the sign folded into the table gives bit-identical results.
    """
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), sin_signed)


SMALL_QUERY_ROWS = 64  # query rows per KV head up to which CPU attention may run as plain matmuls


def attention(
    q: torch.Tensor,  # [B, H, S, D]
    k: torch.Tensor,  # [B, KV, K, D]
    v: torch.Tensor,
    attn_mask: torch.Tensor | None,  # bool [B or 1, 1, S or 1, K], True = attend
    is_causal: bool,
) -> torch.Tensor:
    """Softmax attention with grouped KV heads (query head ``h`` reads KV head ``h // (H / KV)``).

    Small problems on CPU (the patch encoder's ``G`` frames; in 16-bit dtypes also the decode and
    patch-decoder steps) run as matmul → softmax (float32) → matmul over the query heads grouped per KV
    head: 2–5x faster there than the fused SDPA kernel, which wins for one float32 query row.
    Everything else goes to ``F.scaled_dot_product_attention`` (K/V heads shared via ``enable_gqa``).
    """
    B, H, S, D = q.shape
    KV, K = k.shape[1], k.shape[2]
    rep = H // KV
    small = q.device.type == "cpu" and rep * S <= SMALL_QUERY_ROWS
    if small and (S > 1 or q.dtype != torch.float32):
        if is_causal:
            attn_mask = torch.ones(S, K, dtype=torch.bool, device=q.device).tril(K - S)[None, None]
        if attn_mask is not None and attn_mask.shape[-2] > 1 and rep > 1:
            attn_mask = attn_mask.repeat(1, 1, rep, 1)  # grouped rows are r·S + s
        qg = (q * D**-0.5).reshape(B, KV, rep * S, D)
        scores = qg @ k.transpose(-1, -2)  # [B, KV, rep·S, K]
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        probs = scores.float().softmax(dim=-1).to(v.dtype)
        return (probs @ v).reshape(B, H, S, D)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask, is_causal=is_causal, enable_gqa=rep > 1
    )


def _activation(name: str):
    if name == "silu":
        return F.silu
    if name == "relu":
        return F.relu
    if name == "gelu_pytorch_tanh":
        return lambda x: F.gelu(x, approximate="tanh")
    return F.gelu


class RMSNorm(nn.Module):
    """``w · (x · rsqrt(mean(x²) + eps)).to(x.dtype)`` with the statistics in float32."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:  # same math, one fused kernel
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: StackConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.n_heads, self.n_kv, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=True)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=True)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=True)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)
        self.qkv_proj: nn.Module | None = None  # set by fuse()
        self.split = (
            cfg.n_heads * cfg.head_dim,
            cfg.n_kv_heads * cfg.head_dim,
            cfg.n_kv_heads * cfg.head_dim,
        )

    def fuse(self) -> None:
        """Inference: one ``qkv_proj`` matmul instead of three (drops the checkpoint-named layers)."""
        if self.qkv_proj is None:
            self.qkv_proj = concat_linears([self.q_proj, self.k_proj, self.v_proj])
            del self.q_proj, self.k_proj, self.v_proj

    def forward(
        self,
        x: torch.Tensor,  # [B, S, dim]
        cos: torch.Tensor,  # [B or 1, S, 1, head_dim]
        sin: torch.Tensor,  # sign-folded, see rope_rotate
        cache: CacheView | None,
        attn_mask: torch.Tensor | None,
        is_causal: bool,
    ) -> torch.Tensor:
        B, S, _ = x.shape
        H, KV, D = self.n_heads, self.n_kv, self.head_dim
        if self.qkv_proj is not None:  # RoPE on q and k in one go
            qkv = self.qkv_proj(x).view(B, S, H + 2 * KV, D)
            qk = rope_rotate(qkv[:, :, : H + KV], cos, sin)
            q, k, v = qk[:, :, :H], qk[:, :, H:], qkv[:, :, H + KV :]
        else:
            q = rope_rotate(self.q_proj(x).view(B, S, H, D), cos, sin)
            k = rope_rotate(self.k_proj(x).view(B, S, KV, D), cos, sin)
            v = self.v_proj(x).view(B, S, KV, D)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, heads, S, D]
        if cache is not None:
            k, v = cache.update(self.layer, k, v)  # [B, KV, K, D]
        out = attention(q, k, v, attn_mask, is_causal)  # [B, H, S, D]
        return self.o_proj(out.transpose(1, 2).reshape(B, S, H * D))


class MLP(nn.Module):
    def __init__(self, cfg: StackConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)
        self.act = _activation(cfg.act)
        self.gate_up_proj: nn.Module | None = None  # set by fuse()

    def fuse(self) -> None:
        """Inference: one ``gate_up_proj`` matmul instead of two (drops the checkpoint-named layers)."""
        if self.gate_up_proj is None:
            self.gate_up_proj = concat_linears([self.gate_proj, self.up_proj])
            del self.gate_proj, self.up_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up_proj is not None:
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(self.act(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: StackConfig, layer: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.self_attn = Attention(cfg, layer)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, cache, attn_mask, is_causal) -> torch.Tensor:
        h = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, attn_mask, is_causal)
        return h + self.mlp(self.post_attention_layernorm(h))


class Qwen2Stack(nn.Module):
    """``layers`` + final ``norm`` (+ ``embed_tokens`` when ``vocab_size`` is given)."""

    def __init__(self, cfg: StackConfig, vocab_size: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        if vocab_size is not None:
            self.embed_tokens = nn.Embedding(vocab_size, cfg.dim)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)

    def fuse_projections(self) -> None:
        """Inference only: fuse q/k/v and gate/up projections in every layer (one-way)."""
        for layer in self.layers:
            layer.self_attn.fuse()
            layer.mlp.fuse()

    def rope(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sign-folded sin ``[B or 1, S, 1, head_dim]`` for ``positions`` ``[S]`` or ``[B, S]``.

        Built in float32 and cast to ``dtype`` (SPEC §10: the dtype of the stack's input).
        """
        cos, sin = rope_tables(positions, self.cfg.head_dim, self.cfg.rope_theta, dtype)
        half = self.cfg.head_dim // 2
        sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
        if positions.dim() == 1:
            cos, sin = cos[None], sin[None]
        return cos[:, :, None], sin[:, :, None]

    def forward(
        self,
        x: torch.Tensor,  # [B, S, dim] input embeddings
        positions: torch.Tensor | None = None,  # [S] or [B, S]; default 0..S-1
        *,
        cache: CacheView | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states after the final norm, ``[B, S, dim]``.

        Without a cache, attention is causal iff the config says so (or follows ``attn_mask``); with a
        cache the view decides. The RoPE table dtype is the dtype of ``x`` unless ``rope`` is given.
        """
        if rope is None:
            if positions is None:
                positions = torch.arange(x.shape[1], device=x.device)
            rope = self.rope(positions, x.dtype)
        cos, sin = rope
        if cache is not None:
            attn_mask, is_causal = cache.attn_mask, cache.is_causal
        else:
            is_causal = self.cfg.causal and attn_mask is None and x.shape[1] > 1
        for layer in self.layers:
            x = layer(x, cos, sin, cache, attn_mask, is_causal)
        return self.norm(x)
