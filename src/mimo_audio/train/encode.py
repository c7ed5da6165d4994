"""Encoding a manifest's audio once into LM code shards (``mimo-audio data encode``).

**Code shards** (``mimo-audio data encode``): webdataset-style tar files ``shard-000000.tar`` holding
``<key>.json`` (the record, its audio fields replaced by ``{"codes": "<member>"}``) and
``<key>.aN.npy`` (int16 LM codes ``[N, C]``, padded to whole patches), plus ``index.json``. Shards are
written atomically, so an interrupted encode resumes where it stopped.

**Code store** (``data encode --codes FILE.npz``): the LM codes of every audio file encoded so far,
keyed by the file's path as the manifest names it and by a fingerprint of the tokenizer's weights,
so shards can be rebuilt (another split, a new machine) without running the encoder again. Further
stores (``--codes-from``) are only read, so a new corpus can keep its new codes in a file of its own
while reusing those of earlier corpora.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..audio import atomic_write
from ..tokenizer.model import pad_to_group
from .data import AUDIO_SUFFIXES, CodeResolver, DataError, read_jsonl, walk_audio

log = logging.getLogger("mimo_audio.train")


def tokenizer_fingerprint(audio_tokenizer, channels: int, group_size: int) -> str:
    """A short hash of an audio tokenizer's weights and the LM code layout: codes are reusable
    exactly when it matches."""
    h = hashlib.sha256(f"{channels}:{group_size}".encode())
    for name, t in sorted(audio_tokenizer.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


class CodeStore:
    """LM codes ``[N, C]`` int16 per audio file, in one compressed ``.npz`` (``names``, ``lengths``,
    ``codes`` concatenated, ``fingerprint``). A store made by another tokenizer is ignored (and
    replaced on the next save); saves are atomic."""

    def __init__(self, path: str | Path, fingerprint: str) -> None:
        self.path, self.fingerprint = Path(path), fingerprint
        self.codes: dict[str, np.ndarray] = {}
        self.dirty = False
        if not self.path.is_file():
            return
        if not zipfile.is_zipfile(self.path):
            raise DataError(f"{self.path}: not a code store (not an .npz archive)")
        try:
            with np.load(self.path, allow_pickle=False) as z:
                if str(z["fingerprint"]) != fingerprint:
                    log.warning(f"{self.path}: made with another tokenizer; its codes are not used")
                    return
                names, lengths, codes = z["names"], z["lengths"], z["codes"]
        except (OSError, KeyError, ValueError) as e:
            raise DataError(f"{self.path}: not a code store ({e})") from None
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.codes = {str(n): codes[offsets[i] : offsets[i + 1]] for i, n in enumerate(names)}

    def __len__(self) -> int:
        return len(self.codes)

    def get(self, name: str) -> np.ndarray | None:
        return self.codes.get(name)

    def put(self, name: str, codes: np.ndarray) -> None:
        self.codes[name] = codes
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        names = sorted(self.codes)
        arrays = [self.codes[n] for n in names]
        channels = arrays[0].shape[1] if arrays else 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fields = {
            "fingerprint": np.array(self.fingerprint),
            "names": np.array(names),
            "lengths": np.array([len(a) for a in arrays], dtype=np.int64),
            "codes": np.concatenate(arrays) if arrays else np.zeros((0, channels), np.int16),
        }

        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:  # a file object: numpy would add ".npz" to a name
                np.savez_compressed(fh, **fields)

        atomic_write(self.path, write)
        self.dirty = False


def encode_manifest(
    manifest: str | Path,
    audio_tokenizer,
    out_dir: str | Path,
    *,
    channels: int = 8,
    group_size: int = 4,
    shard_size: int = 1000,
    batch_size: int = 8,
    progress: bool = True,
    codes: str | Path | None = None,
    codes_from: Sequence[str | Path] = (),
) -> dict:
    """Tokenize every audio field of a manifest once into code shards (see the module docstring).

    Shards that already exist are kept (an interrupted run resumes). ``codes``: a :class:`CodeStore`
    file whose codes are used instead of encoding again and which receives every newly encoded file
    (saved after each shard); ``codes_from``: further code store files that are only read (a file
    that does not exist is an error). Returns the index written to ``out_dir/index.json``.
    """
    manifest = Path(manifest)
    records = read_jsonl(manifest)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    resolver = CodeResolver(channels, group_size)
    store = None
    known_stores: list[CodeStore] = []
    if codes is not None or codes_from:
        fingerprint = tokenizer_fingerprint(audio_tokenizer, channels, group_size)
        for path in codes_from:
            if not Path(path).is_file():
                raise DataError(f"{path}: no such code store")
            known_stores.append(CodeStore(path, fingerprint))
        if codes is not None:
            store = CodeStore(codes, fingerprint)
            known_stores.append(store)
        if progress:
            for st in known_stores:
                if len(st):
                    log.info(f"{st.path}: {len(st)} files already encoded")
    n_shards = max(1, -(-len(records) // shard_size))
    start = time.time()
    shards = []
    for s in range(n_shards):
        path = out / f"shard-{s:06d}.tar"
        shards.append(path.name)
        if path.exists():
            continue
        chunk = records[s * shard_size : (s + 1) * shard_size]
        files = list(dict.fromkeys(f for rec in chunk for f in _audio_files(rec, manifest.parent)))
        encoded: dict[Path, np.ndarray] = {}
        todo = []
        for f in files:
            name = _store_name(f, manifest.parent)
            known = next((c for st in known_stores if (c := st.get(name)) is not None), None)
            if known is not None:
                encoded[f] = known
            else:
                todo.append(f)
        for b in range(0, len(todo), batch_size):
            group = todo[b : b + batch_size]
            for f, c in zip(group, audio_tokenizer.encode_batch([str(f) for f in group]), strict=True):
                encoded[f] = pad_to_group(c[:channels].t(), group_size).numpy().astype(np.int16)
                if store is not None:
                    store.put(_store_name(f, manifest.parent), encoded[f])
        members: list[tuple[str, bytes]] = []
        for j, rec in enumerate(chunk):
            members += sample_members(f"s{s * shard_size + j:09d}", rec, manifest.parent, encoded, resolver)
        atomic_write(path, lambda tmp, members=members: write_tar(tmp, members))
        if store is not None:
            store.save()
        if progress:
            log.info(f"encoded shard {s + 1}/{n_shards} ({len(chunk)} records, {time.time() - start:.1f} s)")
    index = {
        "shards": shards,
        "num_samples": len(records),
        "channels": channels,
        "group_size": group_size,
        "source": str(manifest),
    }
    atomic_write(out / "index.json", lambda tmp: Path(tmp).write_text(json.dumps(index, indent=1)))
    return index


def _store_name(path: Path, base: Path) -> str:
    """A file's key in a :class:`CodeStore`: its path relative to the manifest folder when inside it."""
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def _is_audio_file(value: Any) -> bool:
    return isinstance(value, str) and Path(value).suffix.lower() in AUDIO_SUFFIXES


def _audio_files(record: dict, base: Path) -> list[Path]:
    """The audio files a record's audio fields name (in order)."""
    found: list[Path] = []
    walk_audio(record, lambda v: found.append(base / v) if _is_audio_file(v) else None)
    return found


def sample_members(
    key: str, record: dict, base: Path, encoded: dict[Path, np.ndarray], resolver: CodeResolver
) -> list[tuple[str, bytes]]:
    """Tar members of one sample: ``<key>.json`` and one ``<key>.aN.npy`` per audio field."""
    arrays: list[np.ndarray] = []

    def replace(value: Any) -> dict:
        if _is_audio_file(value):
            arrays.append(encoded[base / value])
        else:  # codes given in the manifest: stored in the shard too, so shards are self-contained
            arrays.append(resolver(value, base).numpy().astype(np.int16))
        return {"codes": f"{key}.a{len(arrays) - 1}.npy"}

    rec = walk_audio(record, replace)
    members = [(f"{key}.json", json.dumps(rec, ensure_ascii=False).encode("utf-8"))]
    for a, arr in enumerate(arrays):
        buf = io.BytesIO()
        np.save(buf, arr)
        members.append((f"{key}.a{a}.npy", buf.getvalue()))
    return members


def write_tar(path: str, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
