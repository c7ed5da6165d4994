"""Training behaviour of the residual vector quantiser around the inference codebooks (SPEC §4, §11).

The state lives in the inference module's own buffers — ``embed`` (the codebook), ``embed_avg``,
``cluster_size`` and ``inited`` of every ``EuclideanCodebook`` — so a trained tokenizer saves and
exports in the official format unchanged. Per codebook, in order:

1. **k-means init** (``iters`` Lloyd iterations) on the first batch when ``inited`` is 0 (or before
   training, on the features of several batches: :meth:`QuantizerTrainer.init_codebooks`);
2. **dead-code replacement**: codes whose EMA usage fell below ``threshold_ema_dead_code`` get a
   random vector of the current batch (usage reset to the threshold);
3. nearest-code assignment (the inference search, float32);
4. **EMA update**: ``cluster_size ← λ·cluster_size + (1−λ)·counts``, ``embed_avg ← λ·embed_avg +
   (1−λ)·Σx``, ``embed = embed_avg / laplace(cluster_size)`` with ``laplace(n_k) = (n_k + ε) / (N + K·ε) · N``;
5. **commitment**: ``mean ‖r − q‖²`` (gradient to the encoder only); the residual passes on.

The output is the straight-through estimate ``x + (Σq − x).detach()``. With several processes the
batch statistics are summed and the random draws use the gathered batch, so every process holds the
same codebooks and the result equals one process seeing the whole batch.
"""

from __future__ import annotations

import torch

from ..tokenizer.quantizer import EuclideanCodebook, ResidualVectorQuantizer
from .config import QuantizerSection
from .data import sample_rng
from .distributed import DistEnv


def _sample_rows(n: int, k: int, gen: torch.Generator) -> torch.Tensor:
    if n >= k:
        return torch.randperm(n, generator=gen)[:k]
    return torch.randint(0, n, (k,), generator=gen)


@torch.no_grad()
def kmeans(
    samples: torch.Tensor, k: int, iters: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on ``samples [n, d]`` float32 → means ``[k, d]`` and cluster sizes ``[k]``.

    Initial means are ``k`` random samples (with replacement when ``n < k``); empty clusters keep
    their previous mean.
    """
    means = samples[_sample_rows(samples.shape[0], k, gen).to(samples.device)].clone()
    bins = torch.zeros(k, device=samples.device)
    for _ in range(iters):
        dist = samples.pow(2).sum(1, keepdim=True) - 2 * samples @ means.t() + means.pow(2).sum(1)[None]
        assign = dist.argmin(dim=-1)
        bins = torch.bincount(assign, minlength=k).float()
        new = torch.zeros_like(means).index_add_(0, assign, samples) / bins.clamp(min=1)[:, None]
        means = torch.where((bins == 0)[:, None], means, new)
    return means, bins


class QuantizerTrainer:
    """EMA / k-means / dead-code / straight-through training of a :class:`ResidualVectorQuantizer`."""

    def __init__(
        self,
        rvq: ResidualVectorQuantizer,
        cfg: QuantizerSection,
        threshold: float,
        env: DistEnv,
        seed: int,
    ) -> None:
        self.rvq, self.cfg, self.threshold, self.env, self.seed = rvq, cfg, threshold, env, seed

    def _generator(self, key: tuple[int, ...], layer: int) -> torch.Generator:
        return torch.Generator().manual_seed(sample_rng(self.seed, *key, layer).getrandbits(62))

    @torch.no_grad()
    def _kmeans_init(self, cb: EuclideanCodebook, r: torch.Tensor, gen: torch.Generator) -> None:
        """Codebook ← k-means of the residuals ``r [n, d]`` of every process."""
        means, bins = kmeans(self.env.all_gather_rows(r), cb.embed.shape[0], self.cfg.kmeans_iters, gen)
        cb.embed.copy_(means)
        cb.embed_avg.copy_(means)
        cb.cluster_size.copy_(bins)
        cb.inited.fill_(1.0)

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor) -> int:
        """k-means-initialise every uninitialised codebook on features ``x [n, d]``, level by level
        on the residuals the levels before leave. Returns how many were initialised."""
        r, done = x.float(), 0
        for k, layer in enumerate(self.rvq.vq.layers):
            cb = layer._codebook
            if float(cb.inited) == 0.0:
                self._kmeans_init(cb, r, self._generator((0,), k))  # training keys are (step ≥ 1, micro)
                done += 1
            r = r - cb.decode(cb.encode(r))
        return done

    def uninitialised(self) -> int:
        """Number of codebooks still waiting for k-means."""
        return sum(float(layer._codebook.inited) == 0.0 for layer in self.rvq.vq.layers)

    @torch.no_grad()
    def _init_and_expire(self, cb: EuclideanCodebook, r: torch.Tensor, gen: torch.Generator) -> None:
        K = cb.embed.shape[0]
        if float(cb.inited) == 0.0:
            self._kmeans_init(cb, r, gen)
        if self.threshold <= 0:
            return
        expired = cb.cluster_size < self.threshold
        if bool(expired.any()):
            samples = self.env.all_gather_rows(r)
            pick = samples[_sample_rows(samples.shape[0], K, gen).to(samples.device)].to(cb.embed)
            cb.embed[expired] = pick[expired]
            cb.embed_avg[expired] = pick[expired] * self.threshold
            cb.cluster_size[expired] = self.threshold

    @torch.no_grad()
    def _ema_update(self, cb: EuclideanCodebook, r: torch.Tensor, idx: torch.Tensor) -> None:
        K = cb.embed.shape[0]
        stats = torch.zeros(K, r.shape[1] + 1, device=r.device)
        stats[:, 0] = torch.bincount(idx, minlength=K).float()
        stats[:, 1:].index_add_(0, idx, r)
        self.env.all_reduce_sum(stats)
        decay, eps = self.cfg.decay, self.cfg.eps
        cb.cluster_size.mul_(decay).add_(stats[:, 0].to(cb.cluster_size), alpha=1 - decay)
        cb.embed_avg.mul_(decay).add_(stats[:, 1:].to(cb.embed_avg), alpha=1 - decay)
        n = cb.cluster_size.sum()
        smoothed = (cb.cluster_size + eps) / (n + K * eps) * n
        cb.embed.copy_(cb.embed_avg / smoothed[:, None])

    def __call__(
        self, x: torch.Tensor, *, update: bool, key: tuple[int, ...] = (), n_q: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Quantise ``x [n, d]`` (valid frames only).

        Returns the straight-through features ``[n, d]`` float32, codes ``[n_q, n]``, the commitment
        squared-error sum (with gradient to ``x``) and its element count. ``update`` (training)
        applies steps 1, 2 and 4; ``key`` seeds their random draws (e.g. ``(step, micro_batch)``).
        """
        x = x.float()
        r = x
        total = torch.zeros_like(x)
        commit = x.new_zeros(())
        codes = []
        layers = self.rvq.vq.layers[: n_q or self.rvq.num_quantizers]
        for k, layer in enumerate(layers):
            cb = layer._codebook
            if update:
                self._init_and_expire(cb, r.detach(), self._generator(key, k))
            idx = cb.encode(r.detach())
            q = cb.decode(idx)
            if update:
                self._ema_update(cb, r.detach(), idx)
            commit = commit + (r - q).pow(2).sum()
            r = r - q
            total = total + q
            codes.append(idx)
        out = x + (total - x).detach()
        return out, torch.stack(codes), commit, x.numel() * len(layers)

    def reset_for_kmeans(self) -> None:
        """Mark every codebook uninitialised (a fresh tokenizer: k-means on the first batch)."""
        for layer in self.rvq.vq.layers:
            layer._codebook.inited.zero_()
