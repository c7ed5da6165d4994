"""Training checkpoints: atomic folders that hold everything needed to continue exactly.

``<out_dir>/checkpoints/step-00000100/``:

* ``<part>.safetensors``: full (unsharded) float weights and buffers of each trained module —
  ``lm`` / ``tokenizer`` under the official parameter names (LoRA adapters as extra ``lora_A``/
  ``lora_B`` keys), ``a2t``, ``disc``;
* ``optim.pt``: full optimizer states keyed by parameter name;
* ``rng.pt``: the RNG states of every process (torch CPU/CUDA, Python);
* ``trainer.json``: step, data position, schedules, recipe and bookkeeping;
* ``model/``: the model's ``config.json`` (and the LM's text tokenizer files), for export.

A folder is written under a temporary name and renamed into place (``os.replace``), so a process
killed mid-save leaves either the previous checkpoints or a complete new one, never a torn one.
Every process takes part in gathering FSDP-sharded states; only rank 0 writes.

A *packed* checkpoint (:func:`pack_checkpoint`, ``mimo-audio export --resumable``) is the same folder
made small enough to keep in a git repository between machines: float weights in float16 (float32
where a value does not fit), no ``optim.pt``. ``train --resume PACKED`` continues from it with fresh
AdamW moments and the learning rate warmed up again (``trainer.json`` → ``"packed"``).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..audio import atomic_write
from ..checkpoint import save_safetensors
from ..errors import CheckpointError

CHECKPOINTS = "checkpoints"
PREFIX = "step-"


def checkpoint_dir(out_dir: str | Path, step: int) -> Path:
    return Path(out_dir) / CHECKPOINTS / f"{PREFIX}{step:08d}"


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(out_dir) / CHECKPOINTS
    found = []
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(PREFIX) and (p / "trainer.json").is_file():
                try:
                    found.append((int(p.name[len(PREFIX) :]), p))
                except ValueError:
                    continue
    return sorted(found)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1][1] if found else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or the latest checkpoint of a run folder (or of its ``checkpoints/``)."""
    p = Path(path)
    if (p / "trainer.json").is_file():
        return p
    latest = latest_checkpoint(p.parent if p.name == CHECKPOINTS else p)
    if latest is None:
        raise CheckpointError(f"no training checkpoint at {p}")
    return latest


def clean_partial(out_dir: str | Path) -> None:
    """Remove temporary folders left by a save that was interrupted."""
    root = Path(out_dir) / CHECKPOINTS
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith((".tmp-", ".old-")):
                shutil.rmtree(p, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_dir(tmp: Path, dest: Path) -> None:
    """Move the finished folder ``tmp`` onto ``dest`` (same filesystem): a reader sees the old folder
    or the new one; an existing ``dest`` is swapped out under a hidden ``.old-`` name, then removed."""
    if dest.exists():
        old = dest.parent / f".old-{dest.name}-{uuid.uuid4().hex[:8]}"
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dest)


def unshare_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied weights): copy the repeats."""
    seen, out = set(), {}
    for k, v in state.items():
        v = v.detach().contiguous()
        ptr = (v.untyped_storage().data_ptr(), v.storage_offset())
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(state["python"]) if not isinstance(state["python"], tuple) else state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def write_checkpoint(
    out_dir: str | Path,
    step: int,
    *,
    weights: dict[str, dict[str, torch.Tensor]],
    optim: dict[str, Any],
    rng: list[dict[str, Any]],
    meta: dict[str, Any],
    model_files: dict[str, Path | str | dict],
    keep_last: int,
) -> Path:
    """Write one checkpoint atomically (rank 0 only) and drop the oldest beyond ``keep_last``.

    ``model_files`` maps a file name inside ``model/`` to a source path to copy or a dict to write as JSON.
    """
    final = checkpoint_dir(out_dir, step)
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for part, state in weights.items():
            save_safetensors(unshare_tensors(state), tmp / f"{part}.safetensors")
        torch.save(optim, tmp / "optim.pt")
        torch.save(rng, tmp / "rng.pt")
        (tmp / "model").mkdir()
        for name, src in model_files.items():
            if isinstance(src, dict):
                (tmp / "model" / name).write_text(json.dumps(src, indent=2, ensure_ascii=False) + "\n")
            else:
                shutil.copyfile(src, tmp / "model" / name)
        (tmp / "trainer.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        replace_dir(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for _, old in list_checkpoints(out_dir)[:-keep_last]:
        trash = root / f".old-{old.name}"
        os.replace(old, trash)
        shutil.rmtree(trash, ignore_errors=True)
    atomic_write(Path(out_dir) / "latest_checkpoint", lambda t: Path(t).write_text(final.name + "\n"))
    return final


def read_meta(ckpt: str | Path) -> dict[str, Any]:
    path = Path(ckpt) / "trainer.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read ({e})") from None


def read_weights(ckpt: str | Path, part: str) -> dict[str, torch.Tensor]:
    path = Path(ckpt) / f"{part}.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    return load_file(str(path))


FP16_MAX = float(torch.finfo(torch.float16).max)


def _pack_tensor(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` in ``dtype`` when it is a float32 tensor whose finite values fit, else unchanged."""
    if t.dtype != torch.float32 or dtype == torch.float32:
        return t
    if dtype == torch.float16 and t.numel() and float(t.abs().nan_to_num(0.0, 0.0, 0.0).max()) >= FP16_MAX:
        return t
    return t.to(dtype)


def pack_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    dtype: torch.dtype = torch.float16,
    overwrite: bool = False,
) -> Path:
    """Write a packed copy of ``checkpoint`` (a checkpoint folder or a run folder → its latest) to ``out_dir``.

    Keeps ``trainer.json`` (with ``"packed": {"step", "weights", "optimizer": false}`` added), ``rng.pt``,
    ``model/`` and every ``*.safetensors`` part with float32 tensors cast to ``dtype``; drops the
    optimizer moments. Written under a temporary name and renamed into place.
    """
    src = resolve_checkpoint(checkpoint)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CheckpointError(f"{out} exists and is not empty (pass overwrite=True / --overwrite)")
    meta = read_meta(src)
    meta["packed"] = {
        "step": meta.get("step"),
        "weights": str(dtype).removeprefix("torch."),
        "optimizer": False,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for f in sorted(src.glob("*.safetensors")):
            state = {k: _pack_tensor(v, dtype) for k, v in load_file(str(f)).items()}
            save_safetensors(unshare_tensors(state), tmp / f.name)
        if (src / "rng.pt").is_file():
            shutil.copyfile(src / "rng.pt", tmp / "rng.pt")
        shutil.copytree(src / "model", tmp / "model")
        (tmp / "trainer.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def has_optim(ckpt: str | Path) -> bool:
    """Whether a checkpoint holds optimizer moments (a packed one does not)."""
    return (Path(ckpt) / "optim.pt").is_file()


def read_optim(ckpt: str | Path) -> dict[str, Any]:
    return torch.load(Path(ckpt) / "optim.pt", map_location="cpu", weights_only=True)


def read_rng(ckpt: str | Path) -> list[dict[str, Any]]:
    if not (Path(ckpt) / "rng.pt").is_file():
        return []
    return torch.load(Path(ckpt) / "rng.pt", map_location="cpu", weights_only=True)
