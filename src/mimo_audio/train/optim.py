"""Optimizers and learning-rate schedules.

Parameters are split into named groups (e.g. patch encoder / backbone / patch decoder) with their own
learning rates; a group whose rate is null or 0 is frozen (``requires_grad`` off). Weight decay
applies to matrices only (not to biases, norms or 1-D tensors). The schedule is a pure function of
the step (linear warm-up, then cosine / constant / linear decay to ``min_lr_ratio``), so resuming
only needs the step. A run resumed without optimizer moments (a packed checkpoint,
:func:`.checkpointing.pack_checkpoint`) warms the rate up again from that step (:meth:`Schedule.rewarm`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .config import ConfigError, OptimSection

GroupFn = Callable[[str], str]  # parameter name -> group name


def group_lrs(cfg: OptimSection, groups: tuple[str, ...]) -> dict[str, float | None]:
    """Learning rate per group: one float for all, or a mapping naming every group."""
    if isinstance(cfg.lr, dict):
        unknown = set(cfg.lr) - set(groups)
        if unknown:
            raise ConfigError(f"optim.lr: unknown group(s) {sorted(unknown)} (groups: {', '.join(groups)})")
        missing = set(groups) - set(cfg.lr)
        if missing:
            raise ConfigError(f"optim.lr: no rate for group(s) {sorted(missing)} (use null to freeze)")
        return {g: (cfg.lr[g] or None) for g in groups}
    return dict.fromkeys(groups, float(cfg.lr))


def freeze_groups(model: nn.Module, cfg: OptimSection, group_of: GroupFn, groups: tuple[str, ...]) -> None:
    """Turn ``requires_grad`` off for groups without a rate or not listed (before wrapping with DDP/FSDP)."""
    lrs = group_lrs(cfg, groups)
    for name, p in model.named_parameters():
        if lrs.get(group_of(name)) is None:
            p.requires_grad_(False)


def build_optimizer(
    model: nn.Module, cfg: OptimSection, group_of: GroupFn, groups: tuple[str, ...]
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of ``model`` (unwrapped; after FSDP sharding, if any)."""
    return _adamw(model, cfg, group_of, group_lrs(cfg, groups))


def _adamw(model: nn.Module, cfg: OptimSection, group_of: GroupFn, lrs: dict) -> torch.optim.AdamW:
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        group = group_of(name)
        if lrs.get(group) is None:
            continue
        decay = p.ndim >= 2 and "norm" not in name
        buckets.setdefault((group, decay), []).append(p)
    param_groups = [
        {
            "params": params,
            "lr": lrs[group],
            "base_lr": lrs[group],
            "weight_decay": cfg.weight_decay if decay else 0.0,
            "name": f"{group}{'' if decay else '.no_decay'}",
        }
        for (group, decay), params in sorted(buckets.items())
    ]
    if not param_groups:
        raise ConfigError("nothing to train: every parameter group is frozen")
    return torch.optim.AdamW(param_groups, betas=cfg.betas, eps=cfg.eps, foreach=False)


class Schedule:
    """Multiplier of the base rates at each step (0-based step of the update being made)."""

    def __init__(self, cfg: OptimSection, max_steps: int) -> None:
        self.kind = cfg.schedule
        self.max_steps = max_steps
        self.warmup = (
            cfg.warmup_steps if cfg.warmup_steps is not None else math.ceil(cfg.warmup_ratio * max_steps)
        )
        self.min_ratio = cfg.min_lr_ratio
        self.step = 0
        self.rewarm_start: int | None = None
        self.rewarm_steps = 0

    def rewarm(self, start: int, steps: int | None = None) -> None:
        """Ramp the rate up again linearly over ``steps`` (default: the warm-up length) from ``start``:
        fresh AdamW moments would otherwise take full-size steps on trained weights."""
        self.rewarm_start = start
        self.rewarm_steps = max(1, self.warmup if steps is None else steps)

    def factor(self, step: int) -> float:
        f = self._base_factor(step)
        if self.rewarm_start is not None and step >= self.rewarm_start:
            f *= min(1.0, (step - self.rewarm_start + 1) / self.rewarm_steps)
        return f

    def _base_factor(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        span = max(1, self.max_steps - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        if self.kind == "linear":
            shape = 1.0 - progress
        else:
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_ratio + (1.0 - self.min_ratio) * shape

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every group's rate for ``step``; returns the factor."""
        self.step = step
        f = self.factor(step)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * f
        return f

    def state_dict(self) -> dict:
        state = {"step": self.step, "kind": self.kind, "warmup": self.warmup, "max_steps": self.max_steps}
        if self.rewarm_start is not None:
            state.update(rewarm_start=self.rewarm_start, rewarm_steps=self.rewarm_steps)
        return state

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        if state.get("rewarm_start") is not None:
            self.rewarm(int(state["rewarm_start"]), int(state["rewarm_steps"]))
