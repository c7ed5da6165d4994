"""``asr``: speech recognition accuracy — WER for English items, CER for Mandarin (corpus level).

Manifest fields: ``audio``, ``text`` (reference transcript), ``language`` (``en``/``zh``); optional
``id``, ``category``. Transcripts come from ``MimoAudio.asr`` (greedy, as the task preset), batched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ..generation import ModelHandle, generate, load_for
from ..manifest import FieldSpec, Item
from ..metrics.text import normalize_text
from .base import Metric, Suite, content_scores, corpus_rates


class AsrSuite(Suite):
    name = "asr"
    spec: ClassVar[FieldSpec] = FieldSpec(required=("audio", "text", "language"))
    primary: ClassVar[Metric] = Metric(
        "error_rate", "WER/CER", higher_is_better=False, aggregate="error_rate"
    )

    def __init__(self, handle: ModelHandle, gen: dict[str, Any] | None = None) -> None:
        self.handle, self.gen = handle, dict(gen or {})

    def settings(self) -> dict[str, Any]:
        return {**self.handle.settings(), "generation": self.gen}

    def setup(self) -> None:
        load_for(self.handle, "asr")

    def evaluate(self, items: list[Item], work_dir: Path) -> list[dict[str, Any]]:
        results = generate(
            self.handle.get(),
            "asr",
            [{"audio": it["audio"]} for it in items],
            [it.id for it in items],
            self.gen,
        )
        records = []
        for it, res in zip(items, results, strict=True):
            scores = content_scores(it["text"], res.text, it.language)
            records.append(
                {
                    "audio": it["audio"],
                    "text": it["text"],
                    **scores,
                    "reference_normalized": normalize_text(it["text"], it.language),
                    "hypothesis_normalized": normalize_text(res.text, it.language),
                }
            )
        return records

    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return corpus_rates(records)
