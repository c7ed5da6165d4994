"""Running a suite over a manifest: per-item cache, batching, progress, error policy, outputs.

Results of each item are cached as ``DIR/cache/<suite>-<hash>/<item>.json``, where the hash covers the
suite's settings (model, tokenizer, sampling, codebooks, judge, ...) and the files of the model
folders they name: a re-run with the same settings and weights skips every cached item, a run with
other settings or new weights at the same path gets a fresh cache beside the old one.

Error policy for a bad line (unreadable JSON, missing field or audio file, unknown language) or an
item whose evaluation fails: ``skip`` records it under ``errors`` and goes on; ``stop`` evaluates the
items before it, writes the (partial) results and raises :class:`MimoAudioError` ``line N: ...``.
Either way the cache keeps every computed item, so a later run resumes where this one ended.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..audio import atomic_write
from ..errors import MimoAudioError
from .manifest import Item, ManifestError, read_manifest
from .suites.base import Suite

ON_ERROR = ("skip", "stop")


def _folder_stamps(value: Any) -> Any:
    """``value`` with every string naming an existing folder (a model or tokenizer) replaced by that
    path plus the name, size and mtime of each file in it, so that new weights written to the same
    path get a fresh cache."""
    if isinstance(value, dict):
        return {k: _folder_stamps(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_folder_stamps(v) for v in value]
    if isinstance(value, str) and value and Path(value).is_dir():
        files = sorted(f for f in Path(value).iterdir() if f.is_file())
        return [value, [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]]
    return value


def settings_hash(suite: Suite) -> str:
    """12 hex digits identifying the suite, its settings and the files of the model folders they name."""
    stamped = _folder_stamps({"suite": suite.name, **suite.settings()})
    blob = json.dumps(stamped, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


class ItemCache:
    """One JSON record per item id in a folder, written atomically."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, item_id: str) -> Path:
        return self.folder / f"{hashlib.sha1(item_id.encode('utf-8')).hexdigest()[:20]}.json"

    def get(self, item_id: str) -> dict[str, Any] | None:
        p = self.path(item_id)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # absent, or torn by a crash outside atomic_write: recompute
        return data.get("record") if data.get("id") == item_id else None

    def put(self, item_id: str, record: dict[str, Any]) -> None:
        text = json.dumps({"id": item_id, "record": record}, ensure_ascii=False)
        atomic_write(self.path(item_id), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


@dataclass
class EvalResults:
    """What a run produced; ``items`` in manifest order, ``complete`` False after a stop."""

    suite: str
    settings: dict[str, Any]
    settings_hash: str
    manifest: str
    items: list[dict[str, Any]]
    aggregate: dict[str, Any]
    per_category: dict[str, dict[str, Any]]
    errors: list[ManifestError] = field(default_factory=list)
    complete: bool = True
    computed: int = 0  # items evaluated in this run (the others came from the cache)

    def to_dict(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "manifest": self.manifest,
            "settings": self.settings,
            "settings_hash": self.settings_hash,
            "complete": self.complete,
            "counts": {"items": len(self.items), "errors": len(self.errors), "computed": self.computed},
            "aggregate": self.aggregate,
            "per_category": self.per_category,
            "errors": [e.to_dict() for e in self.errors],
            "items": self.items,
        }


class Runner:
    """Evaluates ``suite`` on a manifest into ``out_dir`` (see the module docstring)."""

    def __init__(
        self,
        suite: Suite,
        out_dir: str | os.PathLike,
        *,
        on_error: str = "skip",
        batch_size: int = 8,
        progress: bool = True,
    ) -> None:
        if on_error not in ON_ERROR:
            raise MimoAudioError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
        if batch_size < 1:
            raise MimoAudioError(f"batch size must be ≥ 1, got {batch_size}")
        self.suite, self.out_dir = suite, Path(out_dir)
        self.on_error, self.batch_size, self.progress = on_error, batch_size, progress
        self.hash = settings_hash(suite)
        self.cache = ItemCache(self.out_dir / "cache" / f"{suite.name}-{self.hash}")
        self.work_dir = self.out_dir / f"outputs-{suite.name}-{self.hash}"

    def run(self, manifest: str | os.PathLike) -> EvalResults:
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise MimoAudioError(f"--out {self.out_dir}: exists and is not a directory")
        items, errors = read_manifest(manifest, self.suite.spec)
        stop_line = errors[0].line if errors and self.on_error == "stop" else None
        todo = [it for it in items if stop_line is None or it.line < stop_line]
        records: dict[str, dict[str, Any]] = {}
        for it in todo:
            cached = self.cache.get(it.id)
            if cached is not None:
                records[it.id] = cached
        pending = [it for it in todo if it.id not in records]
        computed = 0
        bar = tqdm(
            total=len(todo),
            initial=len(todo) - len(pending),
            desc=f"eval {self.suite.name}",
            unit="item",
            file=sys.stderr,
            disable=not self.progress,
            dynamic_ncols=True,
        )
        try:
            if pending:
                self.suite.setup()
            for start in range(0, len(pending), self.batch_size):
                batch = pending[start : start + self.batch_size]
                before = len(errors)
                for it, rec in self._evaluate(batch, errors):
                    records[it.id] = rec
                    self.cache.put(it.id, rec)
                    computed += 1
                bar.update(len(batch))
                if self.on_error == "stop" and len(errors) > before:
                    stop_line = errors[before].line
                    break
        except BaseException:
            # interrupted or crashed: leave a partial results.json beside the cache, then re-raise the
            # original error (a second failure while writing must not hide it)
            with contextlib.suppress(Exception):
                self._write(manifest, todo, records, errors, complete=False, computed=computed)
            raise
        finally:
            bar.close()
        errors.sort(key=lambda e: e.line)
        complete = stop_line is None
        results = self._write(manifest, todo, records, errors, complete=complete, computed=computed)
        if not complete:
            first = next(e for e in errors if e.line == stop_line)
            raise MimoAudioError(f"{first} (stopped; {len(records)} item(s) kept in {self.out_dir})")
        return results

    def _evaluate(self, batch: list[Item], errors: list[ManifestError]) -> list[tuple[Item, dict[str, Any]]]:
        """Records of a batch; when the batch fails, items are retried alone to find the bad one."""
        try:
            return list(zip(batch, self._score(batch), strict=True))
        except (ValueError, OSError) as e:
            if len(batch) == 1:
                errors.append(ManifestError(batch[0].line, _one_line(e)))
                return []
        out = []
        for it in batch:
            got = self._evaluate([it], errors)
            out += got
            if not got and self.on_error == "stop":
                break
        return out

    def _score(self, batch: list[Item]) -> list[dict[str, Any]]:
        recs = self.suite.evaluate(batch, self.work_dir)
        suite = self.suite
        return [
            {"id": it.id, "line": it.line, "category": suite.category(it), "language": it.language, **rec}
            for it, rec in zip(batch, recs, strict=True)
        ]

    def _write(self, manifest, todo, records, errors, *, complete: bool, computed: int) -> EvalResults:
        from .report import write_outputs

        rows = [records[it.id] for it in todo if it.id in records]
        extra = self.suite.finalize(rows, self.out_dir) if rows else {}
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            groups.setdefault(r["category"], []).append(r)
        results = EvalResults(
            suite=self.suite.name,
            settings=self.suite.settings(),
            settings_hash=self.hash,
            manifest=str(Path(manifest).resolve()),
            items=rows,
            aggregate={"n": len(rows), **self.suite.aggregate(rows), **extra},
            per_category={c: {"n": len(g), **self.suite.aggregate(g)} for c, g in sorted(groups.items())},
            errors=sorted(errors, key=lambda e: e.line),
            complete=complete,
            computed=computed,
        )
        write_outputs(results, self.suite, self.out_dir)
        return results


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def run_suite(
    suite: Suite, manifest: str | os.PathLike, out_dir: str | os.PathLike, **options: Any
) -> EvalResults:
    """Evaluate ``suite`` on ``manifest`` into ``out_dir`` (options: ``on_error``, ``batch_size``, ``progress``)."""
    return Runner(suite, out_dir, **options).run(manifest)
