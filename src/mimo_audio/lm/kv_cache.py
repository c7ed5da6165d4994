"""Static key/value caches, allocated once (gpt-fast style), and the per-call *views* a stack writes through.

:class:`KVCache` holds ``k``/``v`` ``[n_layers, max_batch, kv_heads, max_len, head_dim]`` for one stack.
Each batch slot is an independent sequence with its own length. A view implements the
:class:`~.backbone.CacheView` protocol for one forward call:

* :class:`PrefillView` — one slot, ``S`` new positions starting at ``start`` (causal).
* :class:`DecodeView` — slots ``0..n-1``, one new position each at per-slot ``positions``; a key mask
  hides what lies past each slot's length. With ``kv_len = max_len`` and ``n = max_batch`` every shape
  is static (CUDA graphs / ``torch.compile(mode="reduce-overhead")``).
* :class:`StepView` — the patch decoder: slots ``0..n-1`` all at the same step ``t``;
  :class:`MaskedStepView` is its step-independent form (all steps, ``t`` a tensor) for compiled code.
"""

from __future__ import annotations

import torch


class KVCache:
    """Preallocated cache of one Qwen2 stack: ``k``/``v`` ``[L, max_batch, KV, max_len, D]``."""

    def __init__(
        self,
        n_layers: int,
        max_batch: int,
        n_kv_heads: int,
        max_len: int,
        head_dim: int,
        *,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        shape = (n_layers, max_batch, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_batch, self.max_len = max_batch, max_len

    @property
    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy the first ``length`` positions of slot ``src`` into slot ``dst`` (slot compaction)."""
        self.k[:, dst, :, :length] = self.k[:, src, :, :length]
        self.v[:, dst, :, :length] = self.v[:, src, :, :length]


class PrefillView:
    """Write positions ``start..start+S-1`` of one slot; attend causally over ``0..start+S-1``."""

    def __init__(self, cache: KVCache, slot: int, start: int, length: int) -> None:
        self.cache, self.slot, self.start, self.end = cache, slot, start, start + length
        self.is_causal = start == 0
        self.attn_mask = None
        if start > 0:  # queries at start+i see keys j <= start+i
            q = torch.arange(start, self.end, device=cache.k.device)
            self.attn_mask = torch.arange(self.end, device=cache.k.device)[None, :] <= q[:, None]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.slot
        self.cache.k[layer, s, :, self.start : self.end] = k[0]
        self.cache.v[layer, s, :, self.start : self.end] = v[0]
        if self.start == 0:
            return k, v
        return self.cache.k[layer, s : s + 1, :, : self.end], self.cache.v[layer, s : s + 1, :, : self.end]


class DecodeView:
    """One new position per slot ``0..n-1`` at ``positions`` ``[n]``; attend over keys ``0..kv_len-1``."""

    def __init__(self, cache: KVCache, positions: torch.Tensor, kv_len: int) -> None:
        n = positions.shape[0]
        self.cache, self.n, self.kv_len, self.positions = cache, n, kv_len, positions
        self.rows = torch.arange(n, device=positions.device)
        keys = torch.arange(kv_len, device=positions.device)
        self.attn_mask = (keys[None, :] <= positions[:, None])[:, None, None, :]  # [n, 1, 1, kv_len]
        self.is_causal = False

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ck, cv = self.cache.k[layer], self.cache.v[layer]  # [B, KV, max_len, D]
        ck[self.rows, :, self.positions] = k[:, :, 0]  # k: [n, KV, 1, D]
        cv[self.rows, :, self.positions] = v[:, :, 0]
        return ck[: self.n, :, : self.kv_len], cv[: self.n, :, : self.kv_len]


class StepView:
    """Patch-decoder step ``t`` for slots ``0..n-1`` (all rows share the position)."""

    attn_mask = None
    is_causal = False

    def __init__(self, cache: KVCache, n: int, t: int) -> None:
        self.cache, self.n, self.t = cache, n, t

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, t = self.n, self.t
        self.cache.k[layer, :n, :, t : t + 1] = k
        self.cache.v[layer, :n, :, t : t + 1] = v
        return self.cache.k[layer, :n, :, : t + 1], self.cache.v[layer, :n, :, : t + 1]


class MaskedStepView:
    """Patch-decoder step ``t`` (LongTensor ``[1]``) for slots ``0..n-1`` over all ``T`` positions.

    Shapes do not depend on ``t`` (a key mask hides the later positions), so one compiled graph serves
    every step; with ``n = max_batch`` every shape is static.
    """

    is_causal = False

    def __init__(self, cache: KVCache, n: int, t: torch.Tensor) -> None:
        self.cache, self.n, self.t = cache, n, t
        keys = torch.arange(cache.max_len, device=t.device)
        self.attn_mask = (keys <= t)[None, None, None, :]  # [1, 1, 1, T]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ck, cv = self.cache.k[layer, : self.n], self.cache.v[layer, : self.n]
        ck.index_copy_(2, self.t, k)
        cv.index_copy_(2, self.t, v)
        return ck, cv
