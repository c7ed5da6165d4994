"""The training loop shared by the tokenizer and LM trainers.

A subclass builds its modules, optimizers and data plan in :meth:`Trainer.build` and implements one
optimizer step in :meth:`Trainer.train_step`; this class owns everything around it: process group,
seeding, resume, learning-rate schedule, gradient clipping, metrics, evaluation hooks and checkpoints.
"""

from __future__ import annotations

import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from ..errors import MimoAudioError
from . import checkpointing as ckpt
from .config import config_to_dict
from .distributed import DistEnv, init_distributed, unwrap
from .metrics import MetricsLogger, progress_line
from .optim import Schedule

log = logging.getLogger("mimo_audio.train")

EvalHook = Callable[["Trainer", int], dict[str, float]]
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


@dataclass
class OptimUnit:
    """An optimizer, the module (root) its parameters belong to, and its schedule."""

    optimizer: torch.optim.Optimizer
    root: nn.Module
    schedule: Schedule
    clip: float | None


class Trainer(ABC):
    """Base trainer. Subclasses set ``self.roots``, ``self.units`` and implement the hooks below.

    ``roots``: name → module whose full state is checkpointed; the ``"train"`` root is split by its
    top-level children into one safetensors file each (``lm``, ``tokenizer``, ``a2t``…).
    """

    kind = "base"
    throughput_unit = "items"

    def __init__(self, config, *, resume: bool | str = False) -> None:
        self.cfg = config
        run = config.run
        if run.threads:
            torch.set_num_threads(run.threads)
        self.env: DistEnv = init_distributed(config.distributed)
        if run.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.out = Path(run.out_dir)
        self.step = 0
        self.roots: dict[str, nn.Module] = {}
        self.units: dict[str, OptimUnit] = {}
        self.eval_hooks: list[EvalHook] = []
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="mimo-data")
        self._pending: tuple[int, Future] | None = None
        self.last_metrics: dict[str, float] = {}
        start = self._resume_point(resume)
        torch.manual_seed(config.model.seed)  # identical initial weights on every process
        self.build(fresh=start is None)
        if start is not None:
            self._load(start)
        torch.manual_seed(run.seed * 1000003 + self.env.rank + 7919 * self.step)
        states = ckpt.read_rng(start) if start is not None else []
        if self.env.rank < len(states):  # a process the checkpoint did not have keeps its fresh seed
            ckpt.set_rng_state(states[self.env.rank])
        self.metrics = MetricsLogger(
            self.out, enabled=self.env.is_main, tensorboard=run.tensorboard, resume_step=self.step
        )

    # ------------------------------------------------------------------ hooks for subclasses
    @abstractmethod
    def build(self, fresh: bool) -> None:
        """Create modules, optimizers (``self.units``), checkpoint roots and the data plan.

        ``fresh`` is False when a checkpoint will be loaded right after (skip one-time initialisation).
        """

    @abstractmethod
    def load_step(self, step: int) -> Any:
        """This process's CPU batches of global step ``step`` — a pure function of the step, run in a
        background thread one step ahead of training."""

    @abstractmethod
    def train_step(self, step: int, data: Any) -> tuple[dict[str, float], float]:
        """Forward, backward and optimizer updates of global step ``step`` (0-based) on ``data``
        (what :meth:`load_step` returned).

        Returns global metrics and the number of throughput units (tokens, audio seconds) of this process.
        """

    def evaluate(self) -> dict[str, float]:
        """Metrics on the evaluation data (empty when there is none)."""
        return {}

    def data_position(self, step: int) -> dict[str, int]:
        """Where the data stream stands before step ``step`` (stored for inspection; resume uses the step)."""
        return {}

    def model_files(self) -> dict[str, Path | str | dict]:
        """Files for the checkpoint's ``model/`` folder (at least ``config.json``)."""
        return {}

    def meta(self) -> dict[str, Any]:
        """Extra fields for ``trainer.json`` (export reads them)."""
        return {}

    # ------------------------------------------------------------------ public
    def add_eval_hook(self, hook: EvalHook) -> None:
        """``hook(trainer, step)`` runs after each evaluation; its metrics go to ``eval.csv``."""
        self.eval_hooks.append(hook)

    def request_stop(self) -> None:
        """Ask :meth:`train` to save a checkpoint and return after the step in progress (signal-safe)."""
        self._stop_requested = True

    def _should_stop(self, deadline: float | None) -> bool:
        """Whether any process was asked to stop or ran past ``deadline`` (``time.monotonic()``)."""
        mine = getattr(self, "_stop_requested", False) or (
            deadline is not None and time.monotonic() > deadline
        )
        if self.env.world > 1:  # every process must take the same decision at the same step
            return bool(self.env.all_reduce_sum(torch.tensor([float(mine)], dtype=torch.float64))[0] > 0)
        return mine

    def train(self, stop_at: int | None = None, time_limit: float | None = None) -> dict[str, float]:
        """Run from the current step to ``run.max_steps`` (or stop, without saving, at ``stop_at``).

        After ``time_limit`` seconds, or once :meth:`request_stop` was called, the run saves a
        checkpoint after the step in progress and returns early (``self.stopped_early`` is then True);
        ``--resume`` continues it exactly.
        """
        run = self.cfg.run
        end = run.max_steps if stop_at is None else min(stop_at, run.max_steps)
        deadline = None if time_limit is None else time.monotonic() + time_limit
        self.stopped_early = False
        if self.env.is_main and self.step < end:
            log.info(f"{self.kind} training: steps {self.step + 1}..{end} on {self.env.world} process(es)")
        while self.step < end:
            if self._should_stop(deadline):
                if self.env.is_main:
                    log.info(f"stopping early at step {self.step}: saving a checkpoint to resume from")
                if self.step % run.save_every:  # a multiple was saved when it was reached
                    self.save()
                self.stopped_early = True
                return self.last_metrics
            t0 = time.perf_counter()
            data = self._data(self.step, end)
            metrics, units = self.train_step(self.step, data)
            total_units = self.env.all_reduce_sum(torch.tensor([units], dtype=torch.float64))
            elapsed = time.perf_counter() - t0
            self.step += 1
            metrics["step_time"] = elapsed
            metrics["throughput"] = float(total_units[0]) / max(elapsed, 1e-9)
            self.last_metrics = metrics
            if self.step % run.log_every == 0 or self.step == run.max_steps:
                self.metrics.log_train(self.step, metrics)
                if self.env.is_main:
                    log.info(progress_line(self.step, run.max_steps, metrics, self.throughput_unit))
            if run.eval_every and self.step % run.eval_every == 0 and self.step < run.max_steps:
                self.run_eval()
            if self.step % run.save_every == 0 or self.step == run.max_steps:
                self.save()
        if self.step == run.max_steps and stop_at is None:
            self.run_eval()
            self.metrics.close()
        return self.last_metrics

    def _data(self, step: int, end: int) -> Any:
        """Step ``step``'s data (prefetched when possible); starts loading the next step's."""
        pending, self._pending = self._pending, None
        data = pending[1].result() if pending is not None and pending[0] == step else self.load_step(step)
        if step + 1 < end:
            self._pending = (step + 1, self._loader.submit(self.load_step, step + 1))
        return data

    def run_eval(self) -> dict[str, float]:
        metrics = self.evaluate()
        for hook in self.eval_hooks:
            metrics.update(hook(self, self.step))
        if metrics:
            self.metrics.log_eval(self.step, metrics)
            if self.env.is_main:
                log.info(f"eval @ {self.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return metrics

    # ------------------------------------------------------------------ optimizer plumbing
    def optimizer_step(self, name: str, step: int) -> float:
        """Clip, step and zero one optimizer; returns the gradient norm (before clipping)."""
        unit = self.units[name]
        params = [p for g in unit.optimizer.param_groups for p in g["params"] if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, unit.clip if unit.clip else float("inf"))
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        unit.schedule.apply(unit.optimizer, step)
        unit.optimizer.step()
        unit.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    # ------------------------------------------------------------------ checkpoints
    def _resume_point(self, resume: bool | str) -> Path | None:
        existing = ckpt.latest_checkpoint(self.out)
        if resume is False:
            if existing is not None:
                raise MimoAudioError(
                    f"{self.out} already holds checkpoints: pass --resume to continue, or use another run.out_dir"
                )
            return None
        if self.env.is_main:
            ckpt.clean_partial(self.out)
        self.env.barrier()
        if resume is True:
            return existing
        return ckpt.resolve_checkpoint(resume)

    def save(self) -> Path | None:
        """Write a checkpoint of the current step (collective: every process must call it)."""
        weights: dict[str, dict[str, torch.Tensor]] = {}
        for name, root in self.roots.items():
            state = get_model_state_dict(root, options=FULL)
            if name == "train":
                for key, value in state.items():
                    part, _, rest = key.partition(".")
                    weights.setdefault(part, {})[rest] = value
            else:
                weights[name] = state
        optim = {
            name: get_optimizer_state_dict(u.root, u.optimizer, options=FULL)
            for name, u in self.units.items()
        }
        rng = self.env.gather_objects(ckpt.rng_state())
        path = None
        if self.env.is_main:
            meta = {
                "kind": self.kind,
                "step": self.step,
                "data_position": self.data_position(self.step),
                "world_size": self.env.world,
                "strategy": self.env.strategy,
                "recipe": config_to_dict(self.cfg),
                "schedules": {name: u.schedule.state_dict() for name, u in self.units.items()},
                "metrics": self.last_metrics,
                **self.meta(),
            }
            path = ckpt.write_checkpoint(
                self.out,
                self.step,
                weights=weights,
                optim=optim,
                rng=rng,
                meta=meta,
                model_files=self.model_files(),
                keep_last=self.cfg.run.keep_last,
            )
            log.info(f"saved {path}")
        self.env.barrier()
        return path

    def _load(self, path: Path) -> None:
        meta = ckpt.read_meta(path)
        if meta.get("kind") != self.kind:
            raise MimoAudioError(f"{path} is a {meta.get('kind')!r} checkpoint, not {self.kind!r}")
        # FSDP over several processes: rank 0 reads the files and broadcasts (one CPU copy in total).
        bcast = self.env.strategy == "fsdp" and self.env.distributed
        read = self.env.is_main or not bcast
        opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=bcast)
        for name, root in self.roots.items():
            state = {}
            if read and name == "train":
                for part, _ in unwrap(root).named_children():
                    if (path / f"{part}.safetensors").is_file():
                        state.update({f"{part}.{k}": v for k, v in ckpt.read_weights(path, part).items()})
            elif read:
                state = ckpt.read_weights(path, name)
            set_model_state_dict(root, state, options=opts)
        packed = bool(meta.get("packed")) and not ckpt.has_optim(path)
        optim = ckpt.read_optim(path) if read and not packed else {}
        self.step = int(meta["step"])
        for name, u in self.units.items():
            if not packed:
                set_optimizer_state_dict(u.root, u.optimizer, optim.get(name, {}), options=opts)
            u.schedule.load_state_dict(meta["schedules"][name])
            if packed:  # fresh AdamW moments: warm the rate up again instead of full-size first steps
                u.schedule.rewarm(self.step)
        if self.env.is_main:
            how = " (packed: fresh optimizer moments, learning rate warmed up again)" if packed else ""
            log.info(f"resumed from {path} at step {self.step}{how}")
