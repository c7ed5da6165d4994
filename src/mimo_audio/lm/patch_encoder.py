"""Input embedding of a patch (SPEC §7.2): speech codes → patch encoder → backbone input.

For each patch, the ``C`` codebook embeddings of its ``G`` frames are summed into a **bfloat16** buffer
(rounded after every addition, as the reference does even in float32 runs), passed through the patch
encoder (a Qwen2 stack over the ``G`` frames, bidirectional iff ``input_full_attention``; its RoPE
tables therefore come out in bfloat16), flattened and projected by ``speech_group_downcast``. Text
patches use ``embed_tokens`` instead; ``<|empty|>`` (the text id of a speech patch) embeds to zero.

The encoder only runs on speech patches: a text patch's speech input is masked to zero and its
output is masked again, so its contribution is exactly zero in the reference too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .model import MimoAudioLM


def sum_speech_embeddings(lm: MimoAudioLM, codes: torch.Tensor) -> torch.Tensor:
    """``codes`` ``[N, G, C]`` int → bfloat16 ``[N, G, input_local_dim]``; empty ids embed to zero."""
    empty = lm.empty_ids(codes.device)
    total = None
    for c, table in enumerate(lm.speech_embeddings):
        ids = codes[..., c]
        e = table(ids).masked_fill((ids == empty[c])[..., None], 0.0)
        total = e.to(torch.bfloat16) if total is None else (total.float() + e.float()).to(torch.bfloat16)
    return total


def encode_speech_patches(lm: MimoAudioLM, codes: torch.Tensor) -> torch.Tensor:
    """Speech patches ``[N, G, C]`` → ``speech_group_downcast`` output ``[N, hidden]`` (model dtype)."""
    x = sum_speech_embeddings(lm, codes)  # [N, G, D] bf16
    if lm.dtype == torch.float16:  # bf16 × fp16 weights would promote to fp32; stay in fp16 instead
        x = x.to(torch.float16)
    h = lm.input_local_transformer(x)  # [N, G, D]; RoPE tables in x's dtype
    return lm.speech_group_downcast(h.reshape(h.shape[0], -1).to(lm.dtype))


def embed_patches(lm: MimoAudioLM, text_ids: torch.Tensor, speech: torch.Tensor) -> torch.Tensor:
    """Backbone input ``[B, P, hidden]`` from text ids ``[B, P]`` and speech codes ``[B, P, G, C]``."""
    B, P = text_ids.shape
    is_speech = text_ids == lm.empty_text_id
    keep_text = (~is_speech) & (text_ids >= 0)
    x = lm.model.embed_tokens(text_ids.clamp(min=0)) * keep_text[..., None].to(lm.dtype)
    idx = is_speech.reshape(-1).nonzero().squeeze(-1)
    if idx.numel():
        enc = encode_speech_patches(lm, speech.reshape(B * P, *speech.shape[2:])[idx])
        x = x.reshape(B * P, -1).index_add(0, idx, enc).reshape(B, P, -1)
    return x
