"""Residual vector quantiser (SPEC §4): greedy nearest-codeword search, always in float32.

The module layout mirrors the checkpoint (``quantizer.vq.layers.N._codebook.embed``). The training
state (``embed_avg``, ``cluster_size``, ``inited``) is kept as buffers so that loading stays strict;
inference reads only ``embed``. Codebooks keep the model dtype (a bfloat16 model holds bf16-rounded
codebooks, as the reference's global cast does) and are promoted to float32 for every computation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

ROWS_PER_CHUNK = 8192


class EuclideanCodebook(nn.Module):
    """One codebook: ``embed`` ``[K, d]`` plus the EMA training buffers."""

    def __init__(self, dim: int, size: int):
        super().__init__()
        self.embed: torch.Tensor
        self.register_buffer("embed", torch.zeros(size, dim))
        self.register_buffer("embed_avg", torch.zeros(size, dim))
        self.register_buffer("cluster_size", torch.zeros(size))
        self.register_buffer("inited", torch.ones(1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x: float32 ``[N, d]`` → nearest codeword ``[N]`` int64 (first index on ties)."""
        embed = self.embed.float().t()  # [d, K]
        embed_sq = embed.pow(2).sum(0, keepdim=True)  # [1, K]
        out = []
        for part in x.split(ROWS_PER_CHUNK):
            dist = -(part.pow(2).sum(1, keepdim=True) - 2 * part @ embed + embed_sq)
            out.append(dist.max(dim=-1).indices)
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=x.device)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes: ``[N]`` int64 → float32 ``[N, d]``."""
        return self.embed.float()[codes]


class VectorQuantization(nn.Module):
    def __init__(self, dim: int, size: int):
        super().__init__()
        self._codebook = EuclideanCodebook(dim, size)


class ResidualVectorQuantization(nn.Module):
    def __init__(self, dim: int, sizes: Sequence[int]):
        super().__init__()
        self.layers = nn.ModuleList(VectorQuantization(dim, size) for size in sizes)


class ResidualVectorQuantizer(nn.Module):
    """``num_quantizers`` codebooks of dimension ``d`` (no projections)."""

    def __init__(self, dim: int, sizes: Sequence[int]):
        super().__init__()
        self.sizes = tuple(sizes)
        self.vq = ResidualVectorQuantization(dim, sizes)

    @property
    def num_quantizers(self) -> int:
        return len(self.sizes)

    def encode(self, x: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """x: ``[N, d]`` (any float dtype) → codes ``[n_q, N]`` int64; residual search in float32."""
        residual = x.float()
        codes = []
        for layer in self.vq.layers[: n_q or self.num_quantizers]:
            idx = layer._codebook.encode(residual)
            residual = residual - layer._codebook.decode(idx)
            codes.append(idx)
        return torch.stack(codes)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes: ``[k, N]`` int64 for layers ``0..k−1`` → float32 features ``[N, d]`` (sum of codewords)."""
        out = None
        for layer, idx in zip(self.vq.layers, codes, strict=False):
            q = layer._codebook.decode(idx)
            out = q if out is None else out + q
        return out
