"""``mcq``: multiple-choice audio questions (SpeechMMLU / MMAU style) — accuracy, overall and per category.

Manifest fields: ``audio``, ``question``, ``choices`` (list of 2–26 strings), ``answer`` (a letter,
a 0-based index or the choice text); optional ``category``, ``language``, ``id``.
The answerer is pluggable: any callable ``(items) -> list[str]`` of free-form replies. The default
asks ``MimoAudio.understand``-style audio understanding with :func:`format_question`'s prompt;
replies are read with :func:`~mimo_audio.eval.answers.extract_choice` (its docstring states the rule).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from ..answers import answer_index, extract_choice, format_question, letters
from ..generation import ModelHandle, generate, load_for
from ..manifest import FieldSpec, Item
from .base import Metric, Suite

Answerer = Callable[[list[Item]], list[str]]


class ModelAnswerer:
    """Answers with the model's audio understanding task (batched; ``thinking`` lets it reason)."""

    def __init__(
        self, handle: ModelHandle, gen: dict[str, Any] | None = None, thinking: bool = False
    ) -> None:
        self.handle, self.gen, self.thinking = handle, dict(gen or {}), thinking

    def __call__(self, items: list[Item]) -> list[str]:
        inputs = [
            {
                "audio": it["audio"],
                "question": format_question(it["question"], it["choices"]),
                "thinking": self.thinking,
            }
            for it in items
        ]
        return [
            r.text
            for r in generate(
                self.handle.get(), "audio_understanding", inputs, [it.id for it in items], self.gen
            )
        ]

    def settings(self) -> dict[str, Any]:
        return {**self.handle.settings(), "generation": self.gen, "thinking": self.thinking}

    def setup(self) -> None:
        load_for(self.handle, "audio_understanding")


class McqSuite(Suite):
    name = "mcq"
    spec: ClassVar[FieldSpec] = FieldSpec(required=("audio", "question", "choices", "answer"), language=False)
    primary: ClassVar[Metric] = Metric("correct", "correct", higher_is_better=True, aggregate="accuracy")

    def __init__(self, answerer: Answerer, settings: dict[str, Any] | None = None) -> None:
        """``settings`` identify the answerer in the cache key (default: its own ``settings()`` if any)."""
        self.answerer = answerer
        own = getattr(answerer, "settings", None)
        self._settings = settings if settings is not None else (own() if callable(own) else {})

    def settings(self) -> dict[str, Any]:
        return {"answerer": self._settings}

    def setup(self) -> None:
        setup = getattr(self.answerer, "setup", None)
        if callable(setup):
            setup()

    def category(self, item: Item) -> str:
        return str(item.get("category") or "all")

    def evaluate(self, items: list[Item], work_dir: Path) -> list[dict[str, Any]]:
        keys = []
        for it in items:
            if not isinstance(it["choices"], list) or not all(isinstance(c, str) for c in it["choices"]):
                raise ValueError("field 'choices' must be a list of strings")
            letters(len(it["choices"]))  # 1..26 choices
            keys.append(answer_index(it["answer"], it["choices"]))
        replies = self.answerer(items)
        if len(replies) != len(items):
            raise ValueError(f"the answerer returned {len(replies)} replies for {len(items)} questions")
        records = []
        for it, key, reply in zip(items, keys, replies, strict=True):
            pick = extract_choice(reply, it["choices"])
            valid = letters(len(it["choices"]))
            records.append(
                {
                    "question": it["question"],
                    "answer": valid[key],
                    "reply": reply,
                    "predicted": None if pick is None else valid[pick],
                    "correct": pick == key,
                }
            )
        return records

    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        if not records:
            return {}
        return {
            "accuracy": sum(r["correct"] for r in records) / len(records),
            "unparsed": sum(r["predicted"] is None for r in records),
        }

    def describe(self, record: dict[str, Any]) -> str:
        return (
            f"{record['question']} → {record['predicted']} (key {record['answer']}); reply: {record['reply']}"
        )
