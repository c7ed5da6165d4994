"""Training data: manifests, code sources (manifests, shards), and the deterministic batch plan.

**Manifest** (JSONL, one record per line; relative paths resolve against the manifest's folder):

* tokenizer training: ``{"audio": "clip.wav", "text": "transcript"}``;
* LM training: ``{"task": "asr", "audio": "clip.wav", "text": "..."}`` and the other tasks of
  :mod:`.lm_data`. Audio fields (``audio``, ``prompt_speech``, ``input_audio``, ``output_audio``, at
  any depth, e.g. inside ``messages``) hold an audio file, a code file (``.npy`` ``[N, C]``, or the
  ``.safetensors`` of ``mimo-audio tokenize`` ``[n_q, frames]``) or ``{"codes": FILE_OR_LIST}``.

**Code shards** (``mimo-audio data encode``, :mod:`.encode`): webdataset-style tar files read by
:class:`ShardSource`.

**Batch plan**: every epoch shuffles the examples with ``(seed, epoch)``, packs them into rows of at
most ``context`` units and cuts the rows into global batches; step ``s`` maps to one batch, so the
data position of a run is a function of its step (exact resume without iterator state).
"""

from __future__ import annotations

import io
import json
import logging
import random
import tarfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from ..audio import load_audio
from ..errors import MimoAudioError
from ..tokenizer.model import pad_to_group

log = logging.getLogger("mimo_audio.train")

AUDIO_KEYS = ("audio", "prompt_speech", "input_audio", "output_audio")
CODE_SUFFIXES = (".npy", ".safetensors")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


class DataError(MimoAudioError):
    """A manifest, shard or record that cannot be used."""


# ---------------------------------------------------------------------------- manifests
def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSONL manifest (blank lines skipped); errors name the line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest not found: {path}")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: invalid JSON ({e.msg})") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}:{n}: a record must be a JSON object")
        out.append(rec)
    return out


def walk_audio(record: Any, fn: Callable[[Any], Any]) -> Any:
    """A copy of ``record`` with every audio field value ``v`` replaced by ``fn(v)``."""
    if isinstance(record, dict):
        return {
            k: (fn(v) if k in AUDIO_KEYS and v is not None and not isinstance(v, bool) else walk_audio(v, fn))
            for k, v in record.items()
        }
    if isinstance(record, list):
        return [walk_audio(v, fn) for v in record]
    return record


def lm_codes_from_file(path: Path, channels: int, group_size: int) -> torch.Tensor:
    """LM codes ``[N, C]`` from ``.npy`` (``[N, C]``) or ``.safetensors`` (key ``codes`` ``[n_q, frames]``)."""
    if not path.is_file():
        raise DataError(f"code file not found: {path}")
    if path.suffix == ".npy":
        codes = torch.from_numpy(np.load(path).astype(np.int64))
        if codes.ndim != 2 or codes.shape[1] != channels:
            raise DataError(f"{path}: expected LM codes [frames, {channels}], got {tuple(codes.shape)}")
    else:
        codes = load_file(str(path)).get("codes")
        if codes is None or codes.ndim != 2 or codes.shape[0] < channels:
            raise DataError(f"{path}: expected a 'codes' tensor [n_q >= {channels}, frames]")
        codes = codes[:channels].t().long()
    return pad_to_group(codes, group_size)


class CodeResolver:
    """Turns an audio field value into LM codes ``[N, C]`` int64.

    Accepts tensors (from shards), ``{"codes": path_or_nested_list}``, code files, and — when an
    ``audio_tokenizer`` is given — audio files (encoded on the fly).
    """

    def __init__(self, channels: int, group_size: int, audio_tokenizer=None) -> None:
        self.channels, self.group_size, self.audio_tokenizer = channels, group_size, audio_tokenizer

    def __call__(self, value: Any, base: Path) -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            codes = value.long()
        elif isinstance(value, dict) and "codes" in value:
            inner = value["codes"]
            if isinstance(inner, str):
                return lm_codes_from_file(base / inner, self.channels, self.group_size)
            codes = torch.tensor(inner, dtype=torch.long)
        elif isinstance(value, str):
            path = base / value
            if path.suffix.lower() in CODE_SUFFIXES:
                return lm_codes_from_file(path, self.channels, self.group_size)
            if self.audio_tokenizer is None:
                raise DataError(
                    f"{path}: audio files need encoding; run `mimo-audio data encode` first "
                    "(or set data.audio_tokenizer)"
                )
            codes = self.audio_tokenizer.encode_for_lm(
                path, channels=self.channels, group_size=self.group_size
            )
        else:
            raise DataError(f"cannot read audio field value {value!r}")
        if codes.ndim != 2 or codes.shape[1] != self.channels:
            raise DataError(f"codes must be [frames, {self.channels}], got {tuple(codes.shape)}")
        return pad_to_group(codes, self.group_size)


# ---------------------------------------------------------------------------- sources
class JsonlSource:
    """Records of one JSONL manifest; audio fields keep their raw values (resolved later)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.base = self.path.parent
        self.records = read_jsonl(self.path)

    def __len__(self) -> int:
        return len(self.records)

    def get(self, i: int) -> tuple[dict, Path]:
        return self.records[i], self.base


class ShardSource:
    """Records of code shards (a folder of ``*.tar`` or one ``.tar``), read by offset on demand."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        # hidden files are a writer's temp files (atomic_write), never finished shards
        files = (
            sorted(f for f in path.glob("*.tar") if not f.name.startswith(".")) if path.is_dir() else [path]
        )
        if not files or not all(f.is_file() for f in files):
            raise DataError(f"no code shards (*.tar) at {path}")
        self.base = path if path.is_dir() else path.parent
        self.samples: list[tuple[Path, dict[str, tuple[int, int]]]] = []
        for f in files:
            groups: dict[str, dict[str, tuple[int, int]]] = {}
            try:
                with tarfile.open(f, "r:") as tar:
                    for m in tar:
                        if m.isfile():
                            key, _, suffix = m.name.partition(".")
                            groups.setdefault(key, {})[suffix] = (m.offset_data, m.size)
            except tarfile.TarError as e:
                raise DataError(f"{f}: not a readable tar shard ({e})") from None
            for key, members in groups.items():
                if "json" not in members:
                    raise DataError(f"{f}: sample {key!r} has no .json member")
                self.samples.append((f, members))

    def __len__(self) -> int:
        return len(self.samples)

    @staticmethod
    def _read(f: Path, span: tuple[int, int]) -> bytes:
        with open(f, "rb") as fh:
            fh.seek(span[0])
            return fh.read(span[1])

    def get(self, i: int) -> tuple[dict, Path]:
        f, members = self.samples[i]
        record = json.loads(self._read(f, members["json"]))

        def load(value: Any) -> Any:
            if isinstance(value, dict) and isinstance(value.get("codes"), str):
                suffix = value["codes"].partition(".")[2]
                if suffix in members:
                    arr = np.load(io.BytesIO(self._read(f, members[suffix])))
                    return torch.from_numpy(arr.astype(np.int64))
            return value

        return walk_audio(record, load), self.base


class ConcatSource:
    """Several sources as one index space."""

    def __init__(self, sources: Sequence[JsonlSource | ShardSource]) -> None:
        self.sources = list(sources)
        self.offsets = np.cumsum([0] + [len(s) for s in self.sources])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def get(self, i: int) -> tuple[dict, Path]:
        s = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return self.sources[s].get(i - int(self.offsets[s]))


def open_sources(paths: Sequence[str]) -> ConcatSource:
    """JSONL manifests and shard folders / tar files, concatenated in the given order."""
    sources = []
    for p in paths:
        path = Path(p)
        if path.suffix in (".jsonl", ".json"):
            sources.append(JsonlSource(path))
        elif path.is_dir() or path.suffix == ".tar":
            sources.append(ShardSource(path))
        else:
            raise DataError(f"unknown data source {p} (expected .jsonl, a .tar shard or a shard folder)")
    if not sources:
        raise DataError("no data sources given")
    return ConcatSource(sources)


def source_files(source) -> list[tuple[str, int, int]]:
    """``(resolved path, size, mtime_ns)`` of every file a source reads, in order: what a cache of
    values derived from the source's records is keyed by."""
    if isinstance(source, ConcatSource):
        return [f for s in source.sources for f in source_files(s)]
    if isinstance(source, JsonlSource):
        files = [source.path]
    elif isinstance(source, ShardSource):
        files = list(dict.fromkeys(f for f, _ in source.samples))
    else:
        raise TypeError(f"unknown record source {type(source).__name__}")
    out = []
    for f in files:
        st = Path(f).stat()
        out.append((str(Path(f).resolve()), st.st_size, st.st_mtime_ns))
    return out


# ---------------------------------------------------------------------------- batch plan
def sample_rng(seed: int, *parts: int) -> random.Random:
    """A ``random.Random`` determined by ``seed`` and ``parts`` (stable across runs and processes)."""
    return random.Random(":".join(str(int(p)) for p in (seed, *parts)))


def pack_rows(lengths: Sequence[int], order: Sequence[int], context: int, pack: bool) -> list[list[int]]:
    """Greedy packing in ``order``: a row closes when the next example would overflow ``context``."""
    rows: list[list[int]] = []
    cur: list[int] = []
    used = 0
    for i in order:
        n = min(int(lengths[i]), context)
        if cur and (not pack or used + n > context):
            rows.append(cur)
            cur, used = [], 0
        cur.append(i)
        used += n
    if cur:
        rows.append(cur)
    return rows


class BatchPlan:
    """Step → global batch (a list of rows, each a list of example indices).

    Epoch ``e`` orders the examples by ``(seed, e)`` (or keeps them in order without shuffling),
    packs them into rows and keeps whole batches of ``batch_rows`` rows (a remainder is dropped).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        *,
        context: int,
        batch_rows: int,
        seed: int,
        shuffle: bool = True,
        pack: bool = True,
    ) -> None:
        if not lengths:
            raise DataError("the dataset is empty")
        self.lengths, self.context, self.batch_rows = list(lengths), context, batch_rows
        self.seed, self.shuffle, self.pack = seed, shuffle, pack
        self._epochs: dict[int, list[list[int]]] = {}
        self._starts = [0]  # first step of each epoch
        self._lock = threading.RLock()  # the trainer's loader thread reads the plan too
        if len(self.epoch_rows(0)) < batch_rows:
            raise DataError(
                f"the dataset packs into {len(self.epoch_rows(0))} rows per epoch, fewer than one batch "
                f"({batch_rows} rows)"
            )

    def epoch_rows(self, epoch: int) -> list[list[int]]:
        with self._lock:
            return self._epoch_rows(epoch)

    def _epoch_rows(self, epoch: int) -> list[list[int]]:
        if epoch not in self._epochs:
            order = list(range(len(self.lengths)))
            if self.shuffle:
                sample_rng(self.seed, epoch).shuffle(order)
            self._epochs = {epoch: pack_rows(self.lengths, order, self.context, self.pack)}
        return self._epochs[epoch]

    def steps_in_epoch(self, epoch: int) -> int:
        return len(self.epoch_rows(epoch)) // self.batch_rows

    def locate(self, step: int) -> tuple[int, int]:
        """``(epoch, batch index within the epoch)`` of global step ``step``."""
        with self._lock:
            return self._locate(step)

    def _locate(self, step: int) -> tuple[int, int]:
        while self._starts[-1] <= step:
            e = len(self._starts) - 1
            self._starts.append(self._starts[-1] + self.steps_in_epoch(e))
        epoch = max(e for e, s in enumerate(self._starts) if s <= step)
        return epoch, step - self._starts[epoch]

    def batch(self, step: int) -> tuple[int, list[list[int]]]:
        """``(epoch, rows)`` of global step ``step``."""
        with self._lock:
            epoch, b = self._locate(step)
            rows = self._epoch_rows(epoch)
        return epoch, rows[b * self.batch_rows : (b + 1) * self.batch_rows]


def rank_slice(items: Sequence, rank: int, world: int) -> list:
    """The contiguous share of ``items`` for ``rank`` (so gathering in rank order restores the batch)."""
    if len(items) % world:
        raise DataError(f"a global batch of {len(items)} does not split over {world} processes")
    n = len(items) // world
    return list(items[rank * n : (rank + 1) * n])


def micro_batches(items: Sequence, size: int) -> Iterator[list]:
    if len(items) % size:
        raise DataError(f"{len(items)} rows per process do not split into micro-batches of {size}")
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


# ---------------------------------------------------------------------------- tokenizer clips
class ClipDataset:
    """Audio clips for tokenizer training, cut to fixed-length crops.

    ``item(i, epoch)`` → ``(wav [segment] float32, valid samples, transcript or None)``; the crop
    offset is drawn from ``(seed, epoch, i)``. The transcript is kept only when the crop is the whole clip.
    """

    def __init__(self, paths: Sequence[str], sample_rate: int, segment_samples: int, seed: int) -> None:
        self.records: list[tuple[Path, str | None]] = []
        for p in paths:
            path = Path(p)
            for rec in read_jsonl(path):
                audio = rec.get("audio")
                if not isinstance(audio, str):
                    raise DataError(f"{path}: every tokenizer record needs an 'audio' file path")
                self.records.append((path.parent / audio, rec.get("text") or None))
        if not self.records:
            raise DataError("no tokenizer training clips")
        self.sample_rate, self.segment, self.seed = sample_rate, segment_samples, seed

    def __len__(self) -> int:
        return len(self.records)

    def item(self, i: int, epoch: int) -> tuple[torch.Tensor, int, str | None]:
        path, text = self.records[i]
        wav = load_audio(path, target_rate=self.sample_rate)
        n = wav.shape[0]
        if n > self.segment:
            offset = sample_rng(self.seed, epoch, i).randrange(n - self.segment + 1)
            return wav[offset : offset + self.segment].clone(), self.segment, None
        out = torch.zeros(self.segment)
        out[:n] = wav
        return out, n, text
