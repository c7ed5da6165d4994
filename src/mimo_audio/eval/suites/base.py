"""What every suite shares: the :class:`Suite` interface, output audio files, content scoring,
aggregation helpers and a thread pool for CPU metrics."""

from __future__ import annotations

import math
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ...audio import load_audio, write_audio
from ..manifest import FieldSpec, Item
from ..metrics.text import edit_counts


@dataclass(frozen=True)
class Metric:
    """A per-item metric a report ranks and plots: record key, label, direction, aggregate key."""

    key: str
    label: str
    higher_is_better: bool
    aggregate: str  # its key in the aggregate / per-category tables (e.g. per-item "correct" → "accuracy")


def read_clip(path: str | Path, sr: int = 24000) -> np.ndarray:
    """A clip as mono float32 ``[samples]`` at ``sr`` Hz."""
    return load_audio(path, target_rate=sr).numpy()


def output_path(work_dir: Path, item: Item, suffix: str = ".wav") -> Path:
    """Where an item's generated audio goes (named by a hash: ids may hold any characters)."""
    return work_dir / f"{zlib.crc32(item.id.encode('utf-8')):08x}-{_slug(item.id)}{suffix}"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:60]


def save_output(work_dir: Path, item: Item, wav: np.ndarray, sr: int) -> str:
    """Write an item's output audio atomically; returns its path relative to the results folder."""
    path = write_audio(output_path(work_dir, item), wav, sr)
    return str(Path(work_dir.name) / path.name)


def content_scores(reference: str, hypothesis: str | None, language: str) -> dict[str, Any]:
    """Judge transcript vs reference: WER units for English, CER for Mandarin (None without a
    transcript), plus character edits in every language (``char_errors`` / ``char_len``)."""
    if hypothesis is None:
        return {
            "hypothesis": None,
            "errors": None,
            "ref_len": None,
            "error_rate": None,
            "char_errors": None,
            "char_len": None,
        }
    counts = edit_counts(reference, hypothesis, language)
    chars = counts if language != "en" else edit_counts(reference, hypothesis, language, unit="char")
    return {
        "hypothesis": hypothesis,
        "errors": counts.errors,
        "ref_len": counts.length,
        "error_rate": counts.rate,
        "char_errors": chars.errors,
        "char_len": chars.length,
    }


def corpus_rates(records: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Corpus WER (English records) / CER (Mandarin) and the pooled rate, from ``errors``/``ref_len``;
    ``char_error_rate``: the character error rate over every language (``char_errors``/``char_len``)."""
    records = list(records)
    out: dict[str, float] = {}
    totals: dict[str, list[int]] = {}
    for r in records:
        if r.get("errors") is not None:
            t = totals.setdefault(r["language"], [0, 0])
            t[0] += r["errors"]
            t[1] += r["ref_len"]
    for lang, key in (("en", "wer"), ("zh", "cer")):
        if lang in totals:
            out[key] = totals[lang][0] / max(totals[lang][1], 1)
    if totals:
        out["error_rate"] = sum(t[0] for t in totals.values()) / max(sum(t[1] for t in totals.values()), 1)
    chars = [(r["char_errors"], r["char_len"]) for r in records if r.get("char_errors") is not None]
    if chars:
        out["char_error_rate"] = sum(e for e, _ in chars) / max(sum(n for _, n in chars), 1)
    return out


def mean(records: Iterable[dict[str, Any]], key: str) -> float | None:
    """Mean of a numeric record field over records where it is a finite number (None when none)."""
    values = [r[key] for r in records if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return float(np.mean(values)) if values else None


def parallel_map(fn: Callable[[Any], Any], items: Sequence[Any], workers: int) -> list[Any]:
    """``[fn(x) for x in items]`` on a thread pool (CPU metrics in C extensions release the GIL)."""
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


class Suite(ABC):
    """One evaluation: which manifest fields it needs, how it scores a batch, how it aggregates."""

    name: ClassVar[str]
    spec: ClassVar[FieldSpec]
    primary: ClassVar[Metric]

    workers: int = 1

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Everything that changes the results (hashed into the cache key); JSON-serialisable."""

    def setup(self) -> None:
        """Load models before the first uncached batch (not called when everything is cached)."""
        return None  # suites without models have nothing to load

    def category(self, item: Item) -> str:
        """The group an item is reported under: its ``category`` field, else its language."""
        return str(item.get("category") or item.language or "all")

    @abstractmethod
    def evaluate(self, items: list[Item], work_dir: Path) -> list[dict[str, Any]]:
        """Score a batch: one JSON-serialisable record per item (outputs under ``work_dir``)."""

    def finalize(self, records: list[dict[str, Any]], results_dir: Path) -> dict[str, Any]:
        """Cross-item metrics over all records (may add fields to them); extra aggregate values."""
        return {}

    @abstractmethod
    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Aggregate metrics of a group of records (the whole set, or one category)."""

    def describe(self, record: dict[str, Any]) -> str:
        """A short text for the report's worst-items table."""
        hyp = record.get("hypothesis")
        return (
            f"ref: {record.get('text', '')} | hyp: {hyp}" if hyp is not None else str(record.get("text", ""))
        )
