"""Outputs of ``data prepare``: code shards, per-input done markers, the shard index.

Layout of ``--out DIR``::

    shards/shard-<id>.tar   one per input with kept segments (the training loader's format)
    shards/index.json       shard names and sample counts
    done/<id>.json          one per finished input: what happened to it and to each segment
    recipe.json             the resolved recipe of the last run
    report.md, summary.json, plots/*.png   (see :mod:`.report`)

``<id>`` is the first 16 hex digits of the SHA-1 of the input's path relative to the input folder.
Shards are written with :mod:`mimo_audio.train.data`'s sample writer, so every kept segment becomes
``<key>.json`` (an ``asr`` record: ``audio`` → ``{"codes": "<key>.a0.npy"}``, ``text`` and the
metadata of :mod:`.pipeline`) + ``<key>.a0.npy`` (int16 LM codes ``[N, C]``), with key
``<id>-<segment:04d>-r<copy>``; a high-quality segment appears ``repeats`` times. Without the
``tokenize`` stage the records carry no ``audio`` field. Every file is written to a temp file
(``.<name>.<random>.partial``, removed at the next start if a run was killed) and renamed; the done marker is written last, so an input counts as done only once its shard exists.
An input is skipped when its marker exists with the same file size, mtime and recipe digest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..audio import atomic_write
from ..errors import MimoAudioError
from ..train.data import CodeResolver
from ..train.encode import sample_members, write_tar

if TYPE_CHECKING:
    from .pipeline import InputResult
    from .recipe import Recipe


def input_id(rel: str) -> str:
    return hashlib.sha1(rel.encode("utf-8")).hexdigest()[:16]


def fingerprint(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


PARTIAL = ".partial"  # temp-file suffix: never matches the ``*.tar`` / ``*.json`` globs of readers


def write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=1, ensure_ascii=False, sort_keys=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"), suffix=PARTIAL)


class OutputDir:
    """The output folder of one recipe (see the module docstring)."""

    def __init__(self, root: Path, recipe: Recipe, audio_tokenizer=None) -> None:
        self.root, self.recipe = Path(root), recipe
        self.shards, self.done = self.root / "shards", self.root / "done"
        self.digest = recipe.digest()
        self._tokenizer = audio_tokenizer

    def clean_partial(self) -> None:
        """Remove temp files a killed run left behind (``.<name>.<random>.partial``)."""
        for folder in (self.root, self.shards, self.done):
            for p in folder.glob(f".*{PARTIAL}") if folder.is_dir() else []:
                p.unlink(missing_ok=True)

    def marker(self, rel: str) -> Path:
        return self.done / f"{input_id(rel)}.json"

    def is_done(self, path: Path, rel: str) -> bool:
        m = self.marker(rel)
        if not m.is_file():
            return False
        try:
            data = json.loads(m.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, OSError):
            return False
        return data.get("recipe") == self.digest and data.get("fingerprint") == fingerprint(path)

    def markers(self) -> list[dict]:
        """Every done marker of the current recipe, sorted by source."""
        out = []
        for m in sorted(self.done.glob("*.json")) if self.done.is_dir() else []:
            data = json.loads(m.read_text(encoding="utf-8"))
            if data.get("recipe") == self.digest:
                out.append(data)
        return sorted(out, key=lambda d: d["source"])

    def tokenizer(self):
        """The audio tokenizer of the ``tokenize`` stage (loaded once)."""
        if self._tokenizer is None:
            from ..tokenizer import AudioTokenizer

            path = self.recipe.sections["tokenize"]["tokenizer"] or self.recipe.models["tokenizer"]
            if not path:
                raise MimoAudioError(
                    "the tokenize stage needs tokenize.tokenizer or models.tokenizer (--tokenizer)"
                )
            self._tokenizer = AudioTokenizer.from_pretrained(
                str(path), device=self.recipe.models["device"], max_seconds=None
            )
        return self._tokenizer

    def finish(self, path: Path, res: InputResult) -> dict:
        """Write the input's shard (if it kept any segment), then its done marker; returns the marker."""
        ident = input_id(res.source)
        shard = self.shards / f"shard-{ident}.tar"
        members: list[tuple[str, bytes]] = []
        sec = self.recipe.sections["tokenize"]
        resolver = CodeResolver(int(sec["codebooks"]), int(sec["group_size"]))
        segments = []
        for it in res.items:
            meta = {**it.meta, "dropped": it.dropped}
            segments.append(meta)
            if it.dropped is not None:
                continue
            for r in range(int(it.meta.get("repeats", 1))):
                key = f"{ident}-{it.meta['index']:04d}-r{r}"
                record = {"task": "asr", **{k: v for k, v in it.meta.items() if k != "repeats"}, "repeat": r}
                if it.codes is not None:
                    record["audio"] = torch.from_numpy(it.codes.astype(np.int64))
                members += sample_members(key, record, self.shards, {}, resolver)
        if members:
            atomic_write(shard, lambda tmp: write_tar(tmp, members), suffix=PARTIAL)
        else:
            shard.unlink(missing_ok=True)  # a redone input that now keeps nothing
        marker = {
            "source": res.source,
            "fingerprint": fingerprint(path),
            "recipe": self.digest,
            "reason": res.reason,
            "detail": res.detail,
            "duration": round(res.duration, 3),
            "bitrate_kbps": res.bitrate_kbps,
            "source_rate": res.source_rate,
            "shard": shard.name if members else None,
            "samples": sum(1 for name, _ in members if name.endswith(".json")),
            "segments": segments,
        }
        write_json(self.marker(res.source), marker)
        return marker

    def write_index(self, markers: list[dict]) -> dict:
        """``shards/index.json`` over the done inputs' shards."""
        sec = self.recipe.sections["tokenize"]
        index = {
            "shards": sorted(m["shard"] for m in markers if m["shard"]),
            "num_samples": sum(m["samples"] for m in markers),
            "channels": int(sec["codebooks"]),
            "group_size": int(sec["group_size"]),
            "tokenized": "tokenize" in self.recipe.stages,
        }
        write_json(self.shards / "index.json", index)
        return index
