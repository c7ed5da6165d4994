"""Linear-layer variants for inference: int8 weight-only quantisation and oneDNN-packed CPU weights.

* :class:`Int8Linear` — ``w ≈ q · s`` with ``q = round(w / s)`` int8 in ``[-127, 127]`` and
  ``s = max|w_row| / 127`` per output channel. The matmul uses ``torch._weight_int8pack_mm`` (fused
  dequantisation) where the build has it for the device (CPU always); float32 activations are rounded
  to bfloat16 for that kernel (its float32 CPU path is scalar and slow). Elsewhere the weight is
  dequantised on the fly, one layer at a time (a transient copy of that layer's weight).
  Quantisation happens on the state dict before it is moved to the device, so the full-precision
  model never has to fit there (the 7B needs ≈ 8.7 GB instead of ≈ 16 GB; see docs/PERFORMANCE.md).
* :class:`PackedLinear` — CPU only: the weight reordered once into oneDNN's blocked layout
  (``torch.ops.mkldnn``), about twice as fast as ``F.linear`` for the small batches of decoding on
  the machines we measured. Inference only (no autograd), float32/bfloat16.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


@functools.cache
def _has_int8pack(device_type: str) -> bool:
    """Whether this build has a ``_weight_int8pack_mm`` kernel for the device type."""
    key = {"cpu": "CPU", "cuda": "CUDA", "mps": "MPS"}.get(device_type)
    return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key(
        "aten::_weight_int8pack_mm", key
    )


class Int8Linear(nn.Module):
    """Drop-in for ``nn.Linear`` holding ``weight`` int8 ``[out, in]`` and ``scale`` ``[out]``."""

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scale", torch.empty(out_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if _has_int8pack(x.device.type):
            xin = x2 if x2.dtype in (torch.bfloat16, torch.float16) else x2.to(torch.bfloat16)
            out = torch._weight_int8pack_mm(xin.contiguous(), self.weight, self.scale.to(xin.dtype)).to(
                x.dtype
            )
        else:
            out = F.linear(x2, self.weight.to(x.dtype)) * self.scale.to(x.dtype)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*shape[:-1], self.out_features)


class PackedLinear(nn.Module):
    """CPU inference copy of an ``nn.Linear`` with its weight packed for oneDNN (see module doc)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach())  # opaque, not saved
        self.packed_bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.packed_bias, "none", [], None)


def can_pack(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether :class:`PackedLinear` applies: CPU, oneDNN built in, float32 or bfloat16 weights."""
    return (
        device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and dtype in (torch.float32, torch.bfloat16)
    )


PACK_MIN_ELEMENTS = 1 << 16  # oneDNN's per-call overhead outweighs its gain on smaller matrices


def pack_linears(module: nn.Module) -> None:
    """Replace every float ``nn.Linear`` below ``module`` with at least ``PACK_MIN_ELEMENTS`` weights
    by a :class:`PackedLinear` (in place)."""
    for name, child in list(module.named_children()):
        if (
            type(child) is nn.Linear
            and child.weight.numel() >= PACK_MIN_ELEMENTS
            and can_pack(child.weight.dtype, child.weight.device)
        ):
            setattr(module, name, PackedLinear(child))
        else:
            pack_linears(child)


def unpack_linears(module: nn.Module) -> None:
    """Undo :func:`pack_linears` (``torch.compile`` packs weights itself when freezing)."""
    for name, child in list(module.named_children()):
        if isinstance(child, PackedLinear):
            weight = child.packed.to_dense()
            linear = nn.Linear(
                child.in_features, child.out_features, bias=child.packed_bias is not None, device="meta"
            )
            linear.weight = nn.Parameter(weight, requires_grad=False)
            if child.packed_bias is not None:
                linear.bias = nn.Parameter(child.packed_bias, requires_grad=False)
            setattr(module, name, linear)
        else:
            unpack_linears(child)


def concat_linears(layers: Sequence[nn.Module]) -> nn.Module:
    """One layer computing ``cat([l(x) for l in layers], -1)`` (``nn.Linear`` or :class:`Int8Linear`)."""
    first = layers[0]
    has_bias = first.bias is not None
    out_features = sum(layer.out_features for layer in layers)
    weight = torch.cat([layer.weight for layer in layers])
    device = weight.device
    if isinstance(first, Int8Linear):
        fused = Int8Linear(first.in_features, out_features, has_bias).to(device)
        fused.weight = weight
        fused.scale = torch.cat([layer.scale for layer in layers])
    else:
        fused = nn.Linear(first.in_features, out_features, bias=has_bias, device=device, dtype=weight.dtype)
        fused.weight = nn.Parameter(weight, requires_grad=False)
    if has_bias:
        fused.bias = nn.Parameter(torch.cat([layer.bias for layer in layers]), requires_grad=False)
    return fused


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``w [out, in]`` float → (int8 ``[out, in]``, float32 scale ``[out]``)."""
    w = w.float()
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def use_int8_linears(module: nn.Module) -> None:
    """Replace every ``nn.Linear`` below ``module`` by an :class:`Int8Linear` of the same shape (in place)."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child.in_features, child.out_features, child.bias is not None))
        else:
            use_int8_linears(child)


def quantize_linears(module: nn.Module) -> None:
    """Quantise every float ``nn.Linear`` below an already-loaded ``module`` to :class:`Int8Linear` (in place)."""
    for name, child in list(module.named_children()):
        if type(child) is nn.Linear:
            q = Int8Linear(child.in_features, child.out_features, child.bias is not None).to(
                child.weight.device
            )
            q.weight, scale = quantize_weight(child.weight.detach())
            q.scale = scale.to(child.weight.dtype)
            if child.bias is not None:
                q.bias = nn.Parameter(child.bias.detach(), requires_grad=False)
            setattr(module, name, q)
        else:
            quantize_linears(child)


def quantize_state_dict(module: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Quantise the ``<name>.weight`` entries of ``module``'s :class:`Int8Linear` layers (adds ``<name>.scale``)."""
    out = dict(state)
    for name, child in module.named_modules():
        key = f"{name}.weight"
        if isinstance(child, Int8Linear) and key in state and state[key].is_floating_point():
            out[key], out[f"{name}.scale"] = quantize_weight(state[key])
    return out
