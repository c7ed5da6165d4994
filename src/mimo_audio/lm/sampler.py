"""Token sampling for the text head and the patch-decoder heads (SPEC §8.2).

Order: (1) divide by ``temperature``; (2) top-k: mask everything strictly below the k-th largest;
(3) top-p: sort ascending, softmax, cumulative sum, mask entries with cumsum ≤ 1 − p but keep the
largest; (4) set removed ids (stop tokens before ``min_new_steps``, a codebook's empty id) to −inf;
(5) sample one id from the softmax with the request's own ``torch.Generator`` (``torch.multinomial``,
or the exponential race with pre-drawn noise for the patch decoder), or take the first argmax.
Steps (1)–(3) run in the logits' dtype, as the reference does. Removing ids *after* top-k/top-p means a
removed id can occupy a top-k slot (SPEC §12.10); if that leaves nothing, the best allowed id is taken
instead of failing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import MimoAudioError


@dataclass(frozen=True)
class SamplerConfig:
    """How one head picks its token. ``do_sample=False`` is greedy (first argmax)."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off (only masks zero-probability entries, which never get drawn)

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise MimoAudioError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise MimoAudioError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise MimoAudioError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def filters(self) -> bool:
        """Whether steps (1)–(3) can change the outcome."""
        if not self.do_sample:  # argmax ignores temperature, top-k and top-p keep the maximum
            return False
        return self.temperature != 1.0 or self.top_k > 0 or self.top_p < 1.0


GREEDY = SamplerConfig()
DEFAULT_TEXT_SAMPLER = SamplerConfig(do_sample=True, temperature=0.6, top_k=50, top_p=0.95)
DEFAULT_SPEECH_SAMPLER = SamplerConfig(do_sample=True, temperature=0.9, top_k=50, top_p=0.95)


def filter_logits(logits: torch.Tensor, cfg: SamplerConfig) -> torch.Tensor:
    """Steps (1)–(3) on ``logits`` ``[n, V]``; returns a new tensor with filtered entries at −inf."""
    if cfg.temperature != 1.0:
        logits = logits / cfg.temperature
    if cfg.top_k > 0 and cfg.top_k < logits.shape[-1]:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1)  # ascending
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cum <= 1 - cfg.top_p
        drop[..., -1] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


_INDEX_CACHE: dict[tuple[tuple[int, ...], torch.device], torch.Tensor] = {}


def _index(ids: Sequence[int], device: torch.device) -> torch.Tensor:
    """A cached int64 tensor of ``ids`` on ``device`` (removed-id lists repeat every step)."""
    key = (tuple(ids), device)
    if key not in _INDEX_CACHE:
        _INDEX_CACHE[key] = torch.tensor(key[0], dtype=torch.long, device=device)
    return _INDEX_CACHE[key]


def sample(
    logits: torch.Tensor,  # [n, V]
    cfg: SamplerConfig,
    generators: Sequence[torch.Generator | None] | None = None,
    removed: Sequence[int] = (),
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """One token per row, ``[n]`` int64, all rows sharing ``cfg`` and ``removed``.

    Row ``i`` draws with ``generators[i]`` (``torch.multinomial``), or, when ``noise`` ``[n, ≥V]`` is
    given (i.i.d. Exp(1) draws the caller made with each row's generator), takes
    ``argmax(p / noise)`` — the exponential race, an exact sample of the same distribution that
    needs no per-row kernel calls.
    """
    raw = logits
    if cfg.filters:
        logits = filter_logits(logits, cfg)
    if removed:
        logits = logits.index_fill(-1, _index(removed, logits.device), float("-inf"))
    if cfg.filters or len(removed) >= logits.shape[-1]:
        dead = torch.isneginf(logits).all(dim=-1)
        if bool(dead.any()):  # everything filtered out: fall back to the best allowed id
            fallback = raw.index_fill(-1, _index(removed, raw.device), float("-inf")) if removed else raw
            logits = torch.where(dead[:, None], fallback, logits)
    if not cfg.do_sample:
        return logits.argmax(dim=-1)
    probs = logits.softmax(dim=-1).float()
    if noise is not None:
        return (probs / noise[:, : probs.shape[-1]]).argmax(dim=-1)
    gens = generators if generators is not None else [None] * probs.shape[0]
    out = [torch.multinomial(probs[i], 1, generator=gens[i]) for i in range(probs.shape[0])]
    return torch.cat(out)


def sample_rows(
    logits: torch.Tensor,  # [n, V]
    cfgs: Sequence[SamplerConfig],
    generators: Sequence[torch.Generator | None],
    removed: Sequence[tuple[int, ...]],
) -> torch.Tensor:
    """Rows with their own config / removed ids: groups equal settings and samples each group at once."""
    n = logits.shape[0]
    groups: dict[tuple[SamplerConfig, tuple[int, ...]], list[int]] = {}
    for i in range(n):
        groups.setdefault((cfgs[i], removed[i]), []).append(i)
    if len(groups) == 1:
        (cfg, rem), _ = next(iter(groups.items()))
        return sample(logits, cfg, generators, rem)
    out = torch.empty(n, dtype=torch.long, device=logits.device)
    for (cfg, rem), rows in groups.items():
        idx = torch.tensor(rows, device=logits.device)
        out[idx] = sample(logits[idx], cfg, [generators[i] for i in rows], rem)
    return out
