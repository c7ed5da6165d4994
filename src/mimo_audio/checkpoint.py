"""Reading and writing Hugging Face-style checkpoint folders: config.json and (sharded) safetensors.

One place for strict loading: models are built on the meta device, then filled with
``load_state_dict(assign=True)`` after the keys and shapes were checked, so a mismatch is reported
as one line naming the offending keys.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .audio import UMASK
from .errors import CheckpointError

PathLike = str | os.PathLike


def resolve_dir(path: PathLike) -> Path:
    """Return a local checkpoint folder; a hub id is resolved only when huggingface_hub is installed."""
    p = Path(path).expanduser()
    if p.is_dir():
        return p
    text = str(path)
    if not p.exists() and text.count("/") == 1 and not text.startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download  # optional, online use only
        except ImportError:
            raise CheckpointError(f"checkpoint folder not found: {text}") from None
        try:
            return Path(snapshot_download(text))
        except Exception as e:  # network or hub errors: report in one line
            raise CheckpointError(f"could not fetch {text} from the hub: {e}".splitlines()[0]) from None
    raise CheckpointError(f"checkpoint folder not found: {text}")


def read_config(folder: PathLike) -> dict:
    """Parse ``folder/config.json`` into a dict."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return cfg


def weight_files(folder: PathLike) -> list[Path]:
    """The safetensors files of a checkpoint: ``model.safetensors`` or the shards named in the index."""
    folder = Path(folder)
    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index} is not a valid safetensors index: {e}") from None
        files = sorted({folder / name for name in weight_map.values()})
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{folder}: shard(s) named in the index are missing: {', '.join(missing)}")
        return files
    raise CheckpointError(f"{folder} holds neither model.safetensors nor model.safetensors.index.json")


def load_weights(folder: PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read every tensor of a checkpoint folder (single file or shards) into one dict."""
    state: dict[str, torch.Tensor] = {}
    for f in weight_files(folder):
        try:
            state.update(load_file(str(f), device=str(device)))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(
                f"{f} is truncated or not a safetensors file: {e}".splitlines()[0]
            ) from None
    return state


def save_safetensors(state: dict[str, torch.Tensor], path: PathLike) -> None:
    """``safetensors.torch.save_file`` with the usual file permissions (it creates files 0600)."""
    save_file(state, str(path), metadata={"format": "pt"})
    os.chmod(path, 0o666 & ~UMASK)


def save_weights(
    folder: PathLike, state: dict[str, torch.Tensor], max_shard_bytes: int = 5 * 1024**3
) -> None:
    """Write ``state`` in the official layout: ``model.safetensors``, or, when it is larger than
    ``max_shard_bytes``, numbered shards (``model-00001-of-00003.safetensors`` …) + ``model.safetensors.index.json``."""
    folder = Path(folder)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, v in state.items():
        n = v.numel() * v.element_size()
        if shards[-1] and size + n > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += n
    if len(shards) == 1:
        save_safetensors(shards[0], folder / "model.safetensors")
        return
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_safetensors(shard, folder / name)
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(v.numel() * v.element_size() for v in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def _names(keys: Iterable[str], limit: int = 6) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_into(
    module: torch.nn.Module,
    state: dict[str, torch.Tensor],
    *,
    source: str,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    ignore_unexpected: bool = False,
    optional: Iterable[str] = (),
) -> None:
    """Strictly fill ``module`` (possibly on the meta device) from ``state``.

    Missing keys, mis-shaped tensors and (unless ``ignore_unexpected``) unexpected keys raise a
    one-line :class:`CheckpointError`. Floating tensors are cast to ``dtype`` when given. Keys in
    ``optional`` may be absent; the module keeps its own (non-meta) values for them.
    """
    expected = module.state_dict(keep_vars=True)
    optional = set(optional)
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected]
    if missing:
        raise CheckpointError(f"{source}: missing weights: {_names(missing)}")
    if unexpected and not ignore_unexpected:
        raise CheckpointError(f"{source}: unexpected weights: {_names(unexpected)}")
    bad = [
        f"{k} {tuple(state[k].shape)} vs expected {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if bad:
        raise CheckpointError(f"{source}: weights do not match config.json: {_names(bad, 3)}")
    filled = {}
    for k, v in expected.items():
        if k in state:
            t = state[k]
            target = (dtype or v.dtype) if t.is_floating_point() else t.dtype
            filled[k] = t.to(device=device, dtype=target)
    module.load_state_dict(filled, strict=False, assign=True)
