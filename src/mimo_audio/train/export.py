"""Export a training checkpoint to the official on-disk format that inference loads unchanged.

An LM checkpoint becomes ``config.json`` + ``model.safetensors`` (or shards with
``model.safetensors.index.json``) + the text tokenizer files, with LoRA adapters merged into their
weights; a tokenizer checkpoint becomes ``config.json`` + ``model.safetensors`` with the trained
EMA codebook buffers. Training-only modules (A2T decoder, discriminators) are left out. The output
folder is written under a temporary name and renamed into place. LM checkpoints of one architecture
can be exported as the element-wise mean of their weights (``average_with``: checkpoint averaging, a
"model soup" of runs fine-tuned from one start).
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import torch

from ..checkpoint import save_weights
from ..errors import CheckpointError
from .checkpointing import read_meta, read_weights, replace_dir, resolve_checkpoint, unshare_tensors
from .lora import merge_lora_state

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SHARD_BYTES = 5 * 1024**3


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    dtype: str | None = None,
    max_shard_bytes: int = SHARD_BYTES,
    overwrite: bool = False,
    verify: bool = True,
    average_with: Sequence[str | Path] = (),
) -> Path:
    """Write the official folder for ``checkpoint`` (a checkpoint folder or a run folder → its latest).

    ``dtype`` (``float32``/``bfloat16``/``float16``) casts floating weights; default: as trained.
    ``verify`` loads the result with the inference loader (strict names and shapes).
    ``average_with``: further LM checkpoints with the same config; the weights written are the mean
    of all of them (computed in float32; ``model/`` files come from ``checkpoint``).
    """
    ckpt = resolve_checkpoint(checkpoint)
    kind, state = _weights(ckpt)
    if average_with:
        dtypes = {k: v.dtype for k, v in state.items()}
        state = _average(ckpt, kind, state, average_with)  # float32: cast once, below
        if dtype is None:
            state = {k: v.to(dtypes[k]) for k, v in state.items()}
    if dtype is not None:
        if dtype not in DTYPES:
            raise CheckpointError(f"unknown dtype {dtype!r} (use {', '.join(DTYPES)})")
        state = {k: v.to(DTYPES[dtype]) if v.is_floating_point() else v for k, v in state.items()}
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CheckpointError(f"{out} exists and is not empty (pass overwrite=True / --overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for f in (ckpt / "model").iterdir():
            shutil.copyfile(f, tmp / f.name)
        config = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
        if dtype is not None:
            config["torch_dtype"] = dtype
            (tmp / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        state = unshare_tensors(state)
        save_weights(tmp, state, max_shard_bytes)
        if verify:
            _verify(tmp, kind)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _weights(ckpt: Path) -> tuple[str, dict[str, torch.Tensor]]:
    """A checkpoint's kind and its inference weights (LoRA merged)."""
    meta = read_meta(ckpt)
    kind = meta.get("kind")
    if kind not in ("lm", "tokenizer"):
        raise CheckpointError(f"{ckpt}: unknown checkpoint kind {kind!r}")
    state = read_weights(ckpt, "lm" if kind == "lm" else "tokenizer")
    lora = meta.get("lora")
    if kind == "lm" and lora:
        state = merge_lora_state(state, lora["alpha"] / lora["rank"])
    return kind, state


def _average(
    ckpt: Path, kind: str, state: dict[str, torch.Tensor], others: Sequence[str | Path]
) -> dict[str, torch.Tensor]:
    """The element-wise mean of ``state`` and the weights of ``others`` (floating tensors in float32;
    integer tensors must be equal)."""
    if kind != "lm":
        raise CheckpointError(f"{ckpt}: only LM checkpoints can be averaged (codebooks cannot)")
    config = json.loads((ckpt / "model" / "config.json").read_text(encoding="utf-8"))
    sums = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    for other in others:
        path = resolve_checkpoint(other)
        okind, ostate = _weights(path)
        if okind != kind:
            raise CheckpointError(f"{path}: a {okind} checkpoint cannot be averaged with an LM")
        if json.loads((path / "model" / "config.json").read_text(encoding="utf-8")) != config:
            raise CheckpointError(
                f"{path}: its config.json differs from {ckpt}'s; only one architecture averages"
            )
        if ostate.keys() != state.keys():
            missing = sorted(state.keys() ^ ostate.keys())[0]
            raise CheckpointError(f"{path}: its weights differ from {ckpt}'s in their names (e.g. {missing})")
        for k, v in ostate.items():
            if v.shape != state[k].shape:
                raise CheckpointError(f"{path}: {k} has shape {tuple(v.shape)}, not {tuple(state[k].shape)}")
            if v.is_floating_point():
                sums[k] = sums[k] + v.float()
            elif not torch.equal(v, state[k]):
                raise CheckpointError(
                    f"{path}: integer tensor {k} differs from {ckpt}'s and cannot be averaged"
                )
    n = 1 + len(others)
    return {k: sums[k] / n if v.is_floating_point() else v for k, v in state.items()}


def _verify(folder: Path, kind: str) -> None:
    if kind == "lm":
        from ..lm.model import load_lm

        load_lm(folder, "cpu", torch.float32, optimize=False)
    else:
        from ..tokenizer import AudioTokenizer

        AudioTokenizer.from_pretrained(folder)
