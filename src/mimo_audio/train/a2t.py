"""The audio-to-text alignment decoder of tokenizer stage 1 (technical report; SPEC §11).

A small decoder-only LM, trained from scratch next to the tokenizer, reads the *quantised* 25 Hz
features (projected to its width) as a prefix and predicts the clip's transcript token by token,
then eos. Its gradient reaches the encoder through the straight-through estimator, which pushes the
codes to carry the linguistic content. It is a Qwen2 stack (the LM's own block) and is dropped at export.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..lm.backbone import Qwen2Stack
from ..lm.config import StackConfig
from .config import A2TSection

IGNORE = -100


class A2TDecoder(nn.Module):
    """``forward(features [B, N, d], lengths [B], tokens)`` → CE sum and token count."""

    def __init__(self, feature_dim: int, vocab_size: int, eos_id: int, cfg: A2TSection) -> None:
        super().__init__()
        stack = StackConfig(
            dim=cfg.dim,
            n_layers=cfg.layers,
            n_heads=cfg.heads,
            n_kv_heads=cfg.heads,
            head_dim=cfg.dim // cfg.heads,
            ffn_dim=cfg.ffn_dim,
        )
        self.eos_id, self.max_tokens = eos_id, cfg.max_text_tokens
        self.proj = nn.Linear(feature_dim, cfg.dim)
        self.model = Qwen2Stack(stack, vocab_size=vocab_size)
        self.head = nn.Linear(cfg.dim, vocab_size, bias=False)

    def targets(self, tokens: Sequence[Sequence[int] | None]) -> list[list[int] | None]:
        """Transcript ids (truncated) + eos, or None for clips without a transcript."""
        return [None if t is None else list(t)[: self.max_tokens] + [self.eos_id] for t in tokens]

    def count(self, tokens: Sequence[Sequence[int] | None]) -> int:
        return sum(len(t) for t in self.targets(tokens) if t is not None)

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor, tokens: Sequence[Sequence[int] | None]
    ) -> tuple[torch.Tensor, int]:
        """Rows ``[proj(f_0..f_{N−1}), emb(t_0..t_{L−1})]``; position ``N−1+j`` predicts ``t_j`` (then eos)."""
        targets = self.targets(tokens)
        rows = [b for b, t in enumerate(targets) if t is not None]
        if not rows:  # keep every parameter in the graph (DDP / FSDP need the same modules every step)
            eos = torch.full((1, 1), self.eos_id, device=features.device)
            dummy = torch.cat([self.proj(features[:1, :1]), self.model.embed_tokens(eos)], dim=1)
            return self.head(self.model(dummy)).sum() * 0.0, 0
        seqs, labels = [], []
        for b in rows:
            n, t = int(lengths[b]), torch.tensor(targets[b], device=features.device)
            prefix = self.proj(features[b, :n])
            text = self.model.embed_tokens(t[:-1])
            seqs.append(torch.cat([prefix, text]))
            lab = torch.full((n + t.shape[0] - 1,), IGNORE, device=features.device)
            lab[n - 1 :] = t
            labels.append(lab)
        width = max(s.shape[0] for s in seqs)
        x = torch.stack([F.pad(s, (0, 0, 0, width - s.shape[0])) for s in seqs])  # right padding, causal
        y = torch.stack([F.pad(lab, (0, width - lab.shape[0]), value=IGNORE) for lab in labels])
        logits = self.head(self.model(x)).float()
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="sum")
        return loss, int((y != IGNORE).sum())
