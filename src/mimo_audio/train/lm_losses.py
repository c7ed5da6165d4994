"""LM losses: the text loss and the per-codebook patch-decoder losses on delayed targets.

Every term is returned as a *sum* over its valid targets together with the target *count*, so the
trainer can normalise by the count of the whole global batch (all micro-batches of all processes):
the loss of a step is then independent of how the batch is split over processes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .lm_data import IGNORE

CE_CHUNK = 4096  # rows of text logits materialised at once


def _ce_sum(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = F.linear(h, weight).float()
    return F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="sum")


def chunked_cross_entropy(
    h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = CE_CHUNK
) -> torch.Tensor:
    """``Σ CE(h @ weightᵀ, targets)`` over rows ``h [n, D]``, materialising ``chunk`` rows of logits at a
    time (each chunk is recomputed in the backward pass), so a 150k vocabulary fits long contexts."""
    total = h.new_zeros((), dtype=torch.float32)
    for s in range(0, h.shape[0], chunk):
        part = (h[s : s + chunk], weight, targets[s : s + chunk])
        if torch.is_grad_enabled() and h.shape[0] > chunk:
            total = total + checkpoint(_ce_sum, *part, use_reentrant=False)
        else:
            total = total + _ce_sum(*part)
    return total


def codebook_loss_sums(
    local_logits: Sequence[torch.Tensor], delayed: torch.Tensor, delays: Sequence[int]
) -> torch.Tensor:
    """Per-codebook CE sums ``[C]``.

    ``local_logits[c]`` ``[N, G, V_c]`` scores frame ``j`` of codebook ``c`` (patch-decoder step
    ``j + delays[c]``); ``delayed`` ``[N, G + max(delays), C]`` holds the token expected at each step.
    """
    sums = []
    for c, (logits, d) in enumerate(zip(local_logits, delays, strict=True)):
        G = logits.shape[1]
        target = delayed[:, d : d + G, c]  # [N, G]
        sums.append(
            F.cross_entropy(
                logits.float().flatten(0, 1), target.flatten(), ignore_index=IGNORE, reduction="sum"
            )
        )
    return torch.stack(sums)


def step_order_logits(local_logits: Sequence[torch.Tensor], delays: Sequence[int]) -> list[torch.Tensor]:
    """Per patch, the logits in the generation loop's sampling order (step-major, then codebook).

    Returns one ``[steps · …]`` list entry per (step, codebook) pair: ``local_logits[c][:, t − d_c]``
    for ``t`` in ``0..G+max(d)−1`` and every ``c`` whose window holds ``t``.
    """
    G = local_logits[0].shape[1]
    out = []
    for t in range(G + max(delays)):
        for c, d in enumerate(delays):
            if d <= t < d + G:
                out.append(local_logits[c][:, t - d])
    return out


def target_counts(text_targets: torch.Tensor, speech_targets: torch.Tensor) -> torch.Tensor:
    """Valid targets per term ``[1 + C]`` (text, then each codebook) of a collated batch."""
    text = (text_targets != IGNORE).sum()
    speech = (speech_targets != IGNORE).sum(dim=tuple(range(speech_targets.ndim - 1)))
    return torch.cat([text[None], speech]).float()


def weighted_total(
    sums: torch.Tensor, global_counts: torch.Tensor, weights: torch.Tensor, scale: float = 1.0
) -> torch.Tensor:
    """``scale · Σ_i w_i · sums_i / count_i / Σ_i w_i`` (terms without targets contribute 0)."""
    means = sums / global_counts.clamp(min=1)
    return scale * (weights * means).sum() / weights.sum()
