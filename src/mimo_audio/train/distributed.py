"""Process groups, model wrapping (DDP / FSDP2), mixed precision and gradient checkpointing.

The same training code runs as one process (CPU or GPU), as N CPU processes (gloo) or N GPUs
(nccl). Processes are started by ``torchrun`` (which sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/
``MASTER_ADDR``/``MASTER_PORT``) or by :func:`spawn_local` (tests, CPU boxes without torchrun).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .config import ConfigError, DistributedSection

log = logging.getLogger(__name__)

MP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class DistEnv:
    """Where this process sits: ``rank`` of ``world``, its device, and the wrapping strategy."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    strategy: str = "none"  # none | ddp | fsdp
    mixed_precision: torch.dtype | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """In-place sum over processes (a no-op for one process); returns ``t``."""
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def all_gather_rows(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate every process's ``x`` ``[n_r, ...]`` in rank order (sizes may differ)."""
        if not self.distributed:
            return x
        n = torch.tensor([x.shape[0]], device=x.device)
        sizes = [torch.zeros_like(n) for _ in range(self.world)]
        dist.all_gather(sizes, n)
        sizes = [int(s) for s in sizes]
        padded = x.new_zeros(max(sizes), *x.shape[1:])
        padded[: x.shape[0]] = x
        parts = [torch.zeros_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)])

    def gather_objects(self, obj) -> list:
        """Every process's ``obj`` (a list in rank order) on every process."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` on every process."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def autocast(self):
        """Autocast for the forward pass (DDP / single process); FSDP casts parameters itself."""
        if self.mixed_precision is None or self.strategy == "fsdp":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.mixed_precision)


def init_distributed(cfg: DistributedSection) -> DistEnv:
    """Join the process group described by the environment (if ``WORLD_SIZE`` > 1) and pick a device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("distributed.device is cuda but CUDA is not available")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    strategy = cfg.strategy
    if strategy == "auto":
        strategy = "ddp" if world > 1 else "none"
    mp = MP_DTYPES.get(cfg.mixed_precision)
    if mp is torch.bfloat16 and device.type == "cpu" and not cpu_has_bf16():
        log.warning(
            "this CPU has no bf16 instructions (AVX512-BF16 / AMX): bf16 autocast runs far slower than fp32 "
            "here; set distributed.mixed_precision=none"
        )
    return DistEnv(rank, world, local_rank, device, strategy, mp)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); ``True`` when torch cannot tell."""
    probes = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    probes = [f for f in probes if f is not None]
    return not probes or any(f() for f in probes)


def shutdown_distributed(barrier: bool = False) -> None:
    """Tear the process group down; with ``barrier`` first wait until every rank got here, so no rank
    exits while another is still in a collective (use it on the success path only)."""
    if dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()


def wrap_model(
    model: nn.Module, env: DistEnv, shard_units: Sequence[nn.Module], *, find_unused: bool = False
) -> nn.Module:
    """DDP or FSDP2 around ``model`` (already on ``env.device``); identity for ``none``.

    FSDP2 shards every module of ``shard_units`` (transformer blocks) and then the root, so each block's
    parameters are gathered only while it runs. Frozen parameters are fine in both modes.
    """
    if env.strategy == "none":
        return model
    if env.strategy == "ddp":
        if not any(p.requires_grad for p in model.parameters()):
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [env.device.index] if env.device.type == "cuda" else None
        # Buffers (EMA codebooks) are kept identical by the training code itself.
        sync = (
            {"forward_sync_buffers": False}
            if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
            else {"broadcast_buffers": False}
        )
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused, **sync)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    kwargs = {}
    if env.mixed_precision is not None:
        kwargs["mp_policy"] = MixedPrecisionPolicy(
            param_dtype=env.mixed_precision, reduce_dtype=torch.float32
        )
    for unit in shard_units:
        if any(p.requires_grad for p in unit.parameters()):
            fully_shard(unit, **kwargs)
    fully_shard(model, **kwargs)
    return model


def broadcast_full_state(model: nn.Module, env: DistEnv, state: dict | None) -> None:
    """Fill an FSDP-sharded ``model`` from rank 0's full ``state``.

    The other processes built the model on the meta device: their shards are allocated here
    (uninitialised) and then receive rank 0's values.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    if not env.is_main:
        model.to_empty(device=env.device)
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(model, state if env.is_main else {}, options=options)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (FSDP2 shards in place: the module itself)."""
    return model.module if hasattr(model, "no_sync") and hasattr(model, "module") else model


def no_sync(model: nn.Module, active: bool):
    """Skip the gradient reduction of this backward (all but the last micro-batch of a step)."""
    if active and hasattr(model, "no_sync") and hasattr(model, "module"):
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(not active)
    return contextlib.nullcontext()


def enable_checkpointing(modules: Iterable[nn.Module]) -> None:
    """Recompute each module's activations in the backward pass (names and state dicts unchanged)."""
    from torch.utils.checkpoint import checkpoint

    for module in modules:
        forward = module.forward

        @functools.wraps(forward)
        def wrapped(*args, _forward=forward, **kwargs):
            if not torch.is_grad_enabled():
                return _forward(*args, **kwargs)
            return checkpoint(_forward, *args, use_reentrant=False, **kwargs)

        module.forward = wrapped


def all_reduce_grads(params: Iterable[nn.Parameter], env: DistEnv) -> None:
    """Average ``.grad`` over processes (for modules trained without DDP, e.g. discriminators)."""
    if not env.distributed:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= env.world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


# ---------------------------------------------------------------------------- local launcher
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn_entry(rank: int, world: int, port: int, fn: Callable, args: tuple) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    ok = False
    try:
        fn(*args)
        ok = True
    finally:
        shutdown_distributed(barrier=ok)
    # The work is done and its files are closed. Leave without the interpreter's teardown: now and
    # then a worker thread of the C++ runtime was still joinable there and the process aborted
    # ("terminate called without an active exception", exit -6) after a run that had succeeded.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def spawn_local(world: int, fn: Callable, *args, timeout: float = 300.0) -> None:
    """Run ``fn(*args)`` in ``world`` CPU processes joined by gloo on 127.0.0.1 (like ``torchrun``).

    ``fn`` must be importable (module level). Raises if a process fails or the run exceeds ``timeout``.
    """
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_spawn_entry, args=(r, world, port, fn, args)) for r in range(world)]
    for p in procs:
        p.start()
    failed = []
    try:
        for r, p in enumerate(procs):
            p.join(timeout)
            if p.is_alive() or p.exitcode != 0:
                failed.append((r, p.exitcode))
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    if failed:
        raise RuntimeError(f"distributed run failed: (rank, exit code) {failed}")
