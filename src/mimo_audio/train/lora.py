"""LoRA: low-rank adapters on frozen linear layers (``W x + b + (α / r) · B A dropout(x)``).

:class:`LoRALinear` is an ``nn.Linear`` subclass, so its base parameters keep the checkpoint names
(``…q_proj.weight``) and only ``lora_A`` / ``lora_B`` are added. :func:`merge_lora_state` folds the
adapters into the weights of a state dict, which is what export writes (the official format has no
adapters).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LORA_KEYS = ("lora_A", "lora_B")


class LoRALinear(nn.Linear):
    """A frozen linear layer plus a trainable rank-``r`` update (``lora_B`` starts at zero)."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool, rank: int, alpha: float, dropout: float
    ):
        super().__init__(in_features, out_features, bias=bias)
        self.rank, self.scaling = rank, alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.linear(x, self.weight, self.bias)
        update = F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B)
        return base + self.scaling * update


def apply_lora(root: nn.Module, targets: Sequence[str], rank: int, alpha: float, dropout: float) -> int:
    """Replace every ``nn.Linear`` under ``root`` whose attribute name is in ``targets``; freeze the base.

    Returns the number of layers adapted. Adapter parameters are created with the base weight's
    dtype and device.
    """
    count = 0
    for module in list(root.modules()):
        for name, child in list(module.named_children()):
            if name in targets and type(child) is nn.Linear:
                w = child.weight
                lora = LoRALinear(
                    child.in_features, child.out_features, child.bias is not None, rank, alpha, dropout
                )
                lora.to(device=w.device, dtype=w.dtype)
                with torch.no_grad():
                    lora.weight.copy_(w)
                    if child.bias is not None:
                        lora.bias.copy_(child.bias)
                lora.weight.requires_grad_(False)
                if lora.bias is not None:
                    lora.bias.requires_grad_(False)
                setattr(module, name, lora)
                count += 1
    return count


def merge_lora_state(state: dict[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """Fold ``lora_A`` / ``lora_B`` into their layer's ``weight`` (computed in float32); drop the adapters."""
    out = {k: v for k, v in state.items() if not k.endswith(LORA_KEYS)}
    for key, a in state.items():
        if not key.endswith(".lora_A"):
            continue
        prefix = key[: -len("lora_A")]
        b = state[prefix + "lora_B"]
        w = out[prefix + "weight"]
        out[prefix + "weight"] = (w.float() + scaling * (b.float() @ a.float())).to(w.dtype)
    return out
