"""Patch decoder (SPEC §7.4): the local transformer that turns one backbone state into a ``[G, C]`` patch.

It runs ``T = G + max(delay)`` steps. Step 0 feeds ``local_in``; step ``t`` emits, for every codebook
``c`` whose window ``delay[c] <= t < delay[c] + G`` contains ``t``, the token of frame ``t - delay[c]``
(sampled in codebook order), and the sum of those tokens' embeddings is the input of step ``t + 1``.
Codebooks outside their window contribute nothing. The returned patch is frame-aligned (un-delayed).

:class:`PatchDecoder` does this incrementally for a batch of rows with its own static KV cache
``[max_batch, heads, T, head_dim]``; :func:`teacher_forced_logits` runs the same computation over all
``T`` steps at once given the target patch (training / scoring).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from .kv_cache import KVCache, MaskedStepView, StepView

if TYPE_CHECKING:
    from .model import MimoAudioLM

# sample(codebook, logits [n, V_c]) -> tokens [n]
SampleFn = Callable[[int, torch.Tensor], torch.Tensor]
# record(codebook, logits [n, V_c]) called in sampling order (step-major, then codebook)
RecordFn = Callable[[int, torch.Tensor], None]


def delay_schedule(delays: tuple[int, ...], group_size: int) -> list[list[int]]:
    """Codebooks sampled at each step ``t < G + max(delays)``, in codebook order."""
    steps = group_size + max(delays)
    return [[c for c, d in enumerate(delays) if d <= t < d + group_size] for t in range(steps)]


def _embed_to_local(lm: MimoAudioLM, c: int, tokens: torch.Tensor) -> torch.Tensor:
    e = lm.speech_embeddings[c](tokens)
    if lm.speech_embeddings_to_local is not None:
        e = lm.speech_embeddings_to_local(e)
    return e


class PatchDecoder:
    """Incremental patch decoding for up to ``max_batch`` rows (one cache, allocated once).

    When compiled, every step attends over all ``T`` cache positions (a key mask hides the later ones;
    the step index is a tensor), so one graph serves every step; with ``static_shapes`` every step also
    runs all ``max_batch`` rows (CUDA graphs).
    """

    def __init__(self, lm: MimoAudioLM, max_batch: int, *, static_shapes: bool = False) -> None:
        cfg = lm.config
        self.lm, self.max_batch, self.static = lm, max_batch, static_shapes
        self.masked = static_shapes  # step-independent shapes (set by compile())
        self.group_size, self.delays = cfg.group_size, cfg.delay_pattern
        self.schedule = delay_schedule(cfg.delay_pattern, cfg.group_size)
        self.steps = len(self.schedule)
        stack = cfg.local
        device = lm.device
        self.cache = KVCache(
            stack.n_layers,
            max_batch,
            stack.n_kv_heads,
            self.steps,
            stack.head_dim,
            dtype=lm.dtype,
            device=device,
        )
        positions = torch.arange(self.steps, device=device)
        self.rope = lm.local_transformer.rope(positions, lm.dtype)  # [1, T, 1, D]; the stack input's dtype
        self._t = [torch.tensor([t], device=device) for t in range(self.steps)]
        self._step = self._run_step

    def compile(self, mode: str | None = None, options: dict | None = None) -> None:
        """Run the local stack's per-step forward through ``torch.compile``."""
        self.masked = True
        self._step = torch.compile(self._run_step, dynamic=not self.static, mode=mode, options=options)

    def _run_step(self, inp: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """Local stack on ``inp [rows, 1, local_dim]`` at step ``t`` → hidden ``[rows, local_dim]``."""
        cos, sin = self.rope
        if self.masked:  # t: LongTensor [1]
            view = MaskedStepView(self.cache, inp.shape[0], t)
            rope = (cos.index_select(1, t), sin.index_select(1, t))
        else:
            view = StepView(self.cache, inp.shape[0], t)
            rope = (cos[:, t : t + 1], sin[:, t : t + 1])
        return self.lm.local_transformer(inp, cache=view, rope=rope)[:, 0]

    @property
    def nbytes(self) -> int:
        return self.cache.nbytes

    def __call__(
        self,
        local_in: torch.Tensor,  # [n, local_dim]
        sample: SampleFn,
        record: RecordFn | None = None,
    ) -> torch.Tensor:
        """Decode one patch per row → codes ``[n, G, C]`` int64 (frame-aligned)."""
        lm, n = self.lm, local_in.shape[0]
        C = len(self.delays)
        tokens = torch.zeros(n, self.group_size, C, dtype=torch.long, device=local_in.device)
        rows = self.max_batch if self.static else n
        inp = local_in.new_zeros(rows, 1, local_in.shape[-1])
        inp[:n, 0] = local_in
        for t, books in enumerate(self.schedule):
            h = self._step(inp, self._t[t] if self.masked else t)[:n]  # [n, local_dim]
            nxt = None
            for c in books:
                logits = lm.local_transformer_lm_heads[c](h)  # [n, V_c]
                if record is not None:
                    record(c, logits)
                tok = sample(c, logits)
                tokens[:, t - self.delays[c], c] = tok
                if t + 1 < self.steps:  # the last step's embeddings are never used
                    e = _embed_to_local(lm, c, tok)
                    nxt = e if nxt is None else nxt + e
            inp = local_in.new_zeros(rows, 1, local_in.shape[-1])
            if nxt is not None:
                inp[:n, 0] = nxt
        return tokens


def teacher_forced_logits(
    lm: MimoAudioLM,
    local_in: torch.Tensor,  # [N, local_dim]
    target: torch.Tensor,  # [N, G, C] int: the patch to predict (frame-aligned)
) -> list[torch.Tensor]:
    """Patch-decoder logits for every (frame, codebook) of ``target`` given the true earlier tokens.

    Returns ``C`` tensors ``[N, G, V_c]``: entry ``[:, j]`` of codebook ``c`` comes from step
    ``j + delay[c]``, exactly what :class:`PatchDecoder` computes when it samples ``target``. Empty
    ids in ``target`` (text patches) feed zero vectors.
    """
    cfg = lm.config
    G, delays = cfg.group_size, cfg.delay_pattern
    schedule = delay_schedule(delays, G)
    T = len(schedule)
    empty = lm.empty_ids(target.device)
    inputs = [local_in] + [None] * (T - 1)
    embeds = []
    for c in range(len(delays)):
        e = _embed_to_local(lm, c, target[..., c].clamp(min=0))
        embeds.append(e.masked_fill((target[..., c] == empty[c])[..., None], 0.0))  # [N, G, local_dim]
    for t in range(T - 1):  # same summation order as the incremental decoder
        for c in schedule[t]:
            e = embeds[c][:, t - delays[c]]
            inputs[t + 1] = e if inputs[t + 1] is None else inputs[t + 1] + e
    x = torch.stack(
        [i if i is not None else torch.zeros_like(local_in) for i in inputs], dim=1
    )  # [N, T, local_dim]
    h = lm.local_transformer(x)  # causal
    return [lm.local_transformer_lm_heads[c](h[:, d : d + G]) for c, d in enumerate(delays)]
