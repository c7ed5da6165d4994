"""``tts``: synthesis quality without listeners.

Per item: the generated speech (saved under ``outputs-tts-<hash>/``), its transcript by an ASR judge
scored against ``text`` (WER / CER), speaker similarity to the voice prompt (``prompt_audio``) and,
where a reference rendering exists (``reference_audio``), the duration ratio output / reference.
Across items: DTW identification — each output is compared by DTW over normalised MFCCs with its own
sentence's rendering and up to ``dtw_distractors`` renderings of other sentences (all of them in
small sets); it is identified when its own is the nearest. Model-free, so it also works where the
ASR judge is weak.

Manifest fields: ``text``, ``language``; optional ``reference_audio``, ``prompt_audio``,
``prompt_text``, ``instruction``, ``id``, ``category``. Seed-TTS-Eval ``meta.lst`` files are read
directly. As in the reference, a voice prompt is used only together with an instruction (the
``instruction`` field or the suite's default instruction).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..generation import ModelHandle, generate, load_for
from ..judges import AsrJudge
from ..manifest import FieldSpec, Item
from ..metrics.acoustic import cmvn, dtw_distance, mfcc
from ..metrics.speaker import SILENCE_PEAK, speaker_similarity
from .base import Metric, Suite, content_scores, corpus_rates, mean, parallel_map, read_clip, save_output

SR = 24000


class TtsSuite(Suite):
    name = "tts"
    spec: ClassVar[FieldSpec] = FieldSpec(required=("text", "language"))
    primary: ClassVar[Metric] = Metric(
        "error_rate", "WER/CER", higher_is_better=False, aggregate="error_rate"
    )

    def __init__(
        self,
        handle: ModelHandle,
        judge: AsrJudge | None,
        gen: dict[str, Any] | None = None,
        *,
        instruction: str | None = None,
        dtw_distractors: int = 24,
        workers: int = 2,
    ) -> None:
        self.handle, self.judge, self.gen = handle, judge, dict(gen or {})
        self.instruction, self.dtw_distractors, self.workers = instruction, dtw_distractors, workers

    def settings(self) -> dict[str, Any]:
        return {
            **self.handle.settings(),
            "generation": self.gen,
            "instruction": self.instruction,
            **(self.judge.settings() if self.judge else {"judge": "none"}),
        }

    def setup(self) -> None:
        load_for(self.handle, "tts")
        if self.judge is not None:
            self.judge.setup()

    def _inputs(self, it: Item) -> dict[str, Any]:
        instruction = it.get("instruction") or self.instruction
        voice = it.get("prompt_audio") if instruction else None
        return {
            "text": it["text"],
            "instruction": instruction,
            "prompt_speech": voice,
            "read_text_only": True,
        }

    def evaluate(self, items: list[Item], work_dir: Path) -> list[dict[str, Any]]:
        results = generate(
            self.handle.get(), "tts", [self._inputs(it) for it in items], [it.id for it in items], self.gen
        )
        wavs = [r.audio.numpy() for r in results]
        hyps = (
            self.judge.transcribe(wavs, SR, [it.language for it in items], [it.id for it in items])
            if self.judge
            else [None] * len(items)
        )

        def acoustic(k: int) -> dict[str, Any]:
            it, wav = items[k], wavs[k]
            out: dict[str, Any] = {}
            if it.get("prompt_audio"):
                out["speaker_similarity"] = speaker_similarity(wav, read_clip(it["prompt_audio"], SR), SR)
            if it.get("reference_audio"):
                ref = read_clip(it["reference_audio"], SR)
                out["duration_ratio"] = (wav.size / SR) / max(ref.size / SR, 1e-9)
            return out

        extras = parallel_map(acoustic, range(len(items)), self.workers)
        return [
            {
                "text": it["text"],
                "output_audio": save_output(work_dir, it, wav, SR),
                "duration": wav.size / SR,
                "reference_audio": it.get("reference_audio"),
                **content_scores(it["text"], hyp, it.language),
                **extra,
            }
            for it, wav, hyp, extra in zip(items, wavs, hyps, extras, strict=True)
        ]

    def _candidates(self, own: int, ids: list[str]) -> list[int]:
        """Its own rendering plus up to ``dtw_distractors`` others, in an order fixed by a hash of the
        pair's ids (so a tie between distances never favours the item's own rendering)."""
        rank = lambda j: hashlib.sha1(f"{ids[own]}\0{ids[j]}".encode()).digest()  # noqa: E731
        others = sorted((j for j in range(len(ids)) if j != own), key=rank)[: self.dtw_distractors]
        return sorted([own, *others], key=rank)

    def finalize(self, records: list[dict[str, Any]], results_dir: Path) -> dict[str, Any]:
        rows = [r for r in records if r.get("reference_audio")]
        if len(rows) < 2:
            return {}
        clips = parallel_map(lambda r: read_clip(results_dir / r["output_audio"], SR), rows, self.workers)
        outs = parallel_map(lambda c: cmvn(mfcc(c, SR)), clips, self.workers)
        refs = parallel_map(lambda r: cmvn(mfcc(read_clip(r["reference_audio"], SR), SR)), rows, self.workers)
        ids = [r["id"] for r in rows]

        def nearest(i: int) -> int | None:
            if not np.abs(clips[i]).max(initial=0.0) > SILENCE_PEAK:
                return None  # silence matches nothing (its normalised MFCCs are all zero)
            cands = self._candidates(i, ids)
            return cands[int(np.argmin([dtw_distance(outs[i], refs[j]) for j in cands]))]

        for i, j in enumerate(parallel_map(nearest, range(len(rows)), self.workers)):
            rows[i]["dtw_nearest"] = None if j is None else ids[j]
            rows[i]["dtw_identified"] = j == i
        return {"dtw_candidates": min(len(rows), self.dtw_distractors + 1)}

    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = corpus_rates(records)
        identified = [r["dtw_identified"] for r in records if "dtw_identified" in r]
        if identified:
            out["dtw_identification"] = sum(identified) / len(identified)
        for key in ("speaker_similarity", "duration_ratio", "duration"):
            value = mean(records, key)
            if value is not None:
                out[key] = value
        return out
