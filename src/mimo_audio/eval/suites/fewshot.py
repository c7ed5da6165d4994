"""``fewshot`` / ``vc``: few-shot speech-to-speech (``MimoAudio.in_context``, Base model).

For each item the model converts ``audio`` (the source speech) after the manifest's example pairs,
with the instruction of the item's ``preset`` (one of ``FEWSHOT_PRESETS``: vc, emotion, speed,
denoise, translate; the ``vc`` suite always uses ``vc``) or its own ``instruction``. Scored:

* voice: speaker similarity of the output to the target voice (``target_audio``, default the first
  example's output clip) and to the source; ``closer_to_target`` is the share of items whose output
  is more similar to the target than to the source;
* content: the ASR judge's transcript of the output against ``text`` (what the output should say:
  the source transcript, or its translation for ``translate``), WER / CER.

Manifest fields: ``audio``, ``text``, ``language``, ``examples`` (``[{input_audio, output_audio,
output_transcription?}, ...]``); optional ``preset``, ``instruction``, ``target_audio``, ``id``.
Categories are the presets. Outputs are saved under ``outputs-<suite>-<hash>/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ...api import FEWSHOT_PRESETS
from ..generation import ModelHandle, generate, load_for
from ..judges import AsrJudge
from ..manifest import FieldSpec, Item
from ..metrics.speaker import cosine, speaker_embedding
from .base import Metric, Suite, content_scores, corpus_rates, mean, parallel_map, read_clip, save_output

SR = 24000


class FewshotSuite(Suite):
    name = "fewshot"
    spec: ClassVar[FieldSpec] = FieldSpec(required=("audio", "text", "language", "examples"))
    primary: ClassVar[Metric] = Metric(
        "error_rate", "WER/CER", higher_is_better=False, aggregate="error_rate"
    )
    fixed_preset: ClassVar[str | None] = None

    def __init__(
        self,
        handle: ModelHandle,
        judge: AsrJudge | None,
        gen: dict[str, Any] | None = None,
        *,
        preset: str = "vc",
        workers: int = 2,
    ) -> None:
        if preset not in FEWSHOT_PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(FEWSHOT_PRESETS)}")
        self.handle, self.judge, self.gen = handle, judge, dict(gen or {})
        self.preset, self.workers = self.fixed_preset or preset, workers

    def settings(self) -> dict[str, Any]:
        return {
            **self.handle.settings(),
            "generation": self.gen,
            "default_preset": self.preset,
            **(self.judge.settings() if self.judge else {"judge": "none"}),
        }

    def setup(self) -> None:
        load_for(self.handle, "in_context_s2s")
        if self.judge is not None:
            self.judge.setup()

    def _preset(self, item: Item) -> str:
        preset = self.fixed_preset or item.get("preset") or self.preset
        if preset not in FEWSHOT_PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(FEWSHOT_PRESETS)}")
        return preset

    def category(self, item: Item) -> str:
        return self._preset(item)

    def evaluate(self, items: list[Item], work_dir: Path) -> list[dict[str, Any]]:
        inputs = [
            {
                "audio": it["audio"],
                "examples": it["examples"],
                "instruction": (None if self.fixed_preset else it.get("instruction"))
                or FEWSHOT_PRESETS[self._preset(it)],
            }
            for it in items
        ]
        results = generate(self.handle.get(), "in_context_s2s", inputs, [it.id for it in items], self.gen)
        wavs = [r.audio.numpy() for r in results]
        hyps = (
            self.judge.transcribe(wavs, SR, [it.language for it in items], [it.id for it in items])
            if self.judge
            else [None] * len(items)
        )

        def voices(k: int) -> dict[str, Any]:
            it = items[k]
            target = it.get("target_audio") or it["examples"][0]["output_audio"]
            out = speaker_embedding(wavs[k], SR)
            to_target = cosine(out, speaker_embedding(read_clip(target, SR), SR))
            to_source = cosine(out, speaker_embedding(read_clip(it["audio"], SR), SR))
            return {
                "similarity_target": to_target,
                "similarity_source": to_source,
                "closer_to_target": to_target > to_source,
            }

        sims = parallel_map(voices, range(len(items)), self.workers)
        return [
            {
                "audio": it["audio"],
                "text": it["text"],
                "preset": self._preset(it),
                "output_audio": save_output(work_dir, it, wav, SR),
                "duration": wav.size / SR,
                **content_scores(it["text"], hyp, it.language),
                **sim,
            }
            for it, wav, hyp, sim in zip(items, wavs, hyps, sims, strict=True)
        ]

    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = corpus_rates(records)
        if records:
            out["closer_to_target"] = sum(bool(r["closer_to_target"]) for r in records) / len(records)
        for key in ("similarity_target", "similarity_source", "duration"):
            value = mean(records, key)
            if value is not None:
                out[key] = value
        return out


class VcSuite(FewshotSuite):
    """Voice conversion only: the ``vc`` preset's instruction for every item."""

    name = "vc"
    fixed_preset = "vc"
