"""The per-batch processor: inputs → segments → the recipe's stages → shards and done markers.

:class:`Preparer` is plain Python (no Ray): ``process(paths)`` runs one batch of inputs through
ingest, VAD and speaker segmentation, then every per-segment stage of the recipe over all segments
of the batch at once (so the recognisers see full batches), and writes each input's shard and done
marker atomically. The Ray runner (:mod:`.runner`) maps it over the inputs.

Segment metadata (``Item.meta``, stored in the shard's ``<key>.json``): ``source`` (path relative
to the input folder), ``source_rate`` (Hz) and ``bitrate_kbps`` of the input, ``index``,
``start`` / ``end`` / ``duration`` (seconds), ``speaker`` (per-input label), ``text``,
``language``, ``caption``, ``scores`` (name → value or None), ``repeats`` (copies written).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .caption import make_captioner
from .filters import Blocklist, failed_threshold
from .ingest import Dropped, ingest
from .language import LanguageIdentifier
from .quality import agreement, clipping, signal_frames, snr_db, transcript_quality
from .recipe import Recipe
from .shards import OutputDir
from .speakers import SpeakerSegmenter
from .transcribe import Clip, make_recognizer
from .vad import SileroVad


@dataclass
class Item:
    """One segment in flight: its metadata, audio ``wav [samples]`` float32 at ``rate`` (loudness
    normalised) and ``1 / gain`` to recover the decoded level."""

    meta: dict[str, Any]
    wav: np.ndarray
    rate: int
    unscale: float
    source: Path
    dropped: str | None = None
    codes: np.ndarray | None = None  # int16 [N, C] once tokenized

    @property
    def clip(self) -> Clip:
        return Clip(self.wav, self.rate, self.source, self.meta["start"], self.meta["end"])


@dataclass
class InputResult:
    """What happened to one input (the body of its done marker)."""

    source: str
    reason: str | None = None
    detail: str = ""
    duration: float = 0.0
    bitrate_kbps: float | None = None
    source_rate: int | None = None
    items: list[Item] = field(default_factory=list)


class Preparer:
    """Holds the models of every stage; ``process`` handles one batch of inputs."""

    def __init__(self, recipe: Recipe, input_root: Path, out_dir: Path, audio_tokenizer=None) -> None:
        """``audio_tokenizer``: an :class:`~mimo_audio.AudioTokenizer` for the ``tokenize`` stage
        instead of loading the recipe's folder (benchmarks)."""
        self.recipe, self.root = recipe, Path(input_root)
        self.out = OutputDir(out_dir, recipe, audio_tokenizer)
        self.vad = SileroVad(recipe.vad)
        self.segmenter = SpeakerSegmenter(recipe.segment)
        models, sec = recipe.models, recipe.sections
        self.stage_fns = {name: getattr(self, f"_{name}") for name in recipe.stages}
        if "transcribe" in recipe.stages:
            self.recognizer = make_recognizer(sec["transcribe"]["backend"], models)
        if "language" in recipe.stages:
            self.lid = LanguageIdentifier(recipe.language.candidates)
        if "agreement" in recipe.stages:
            self.second = make_recognizer(sec["agreement"]["backend"], models)
        if "blocklist" in recipe.stages:
            self.blocklist = Blocklist.from_config(
                bool(sec["blocklist"]["builtin"]), sec["blocklist"]["file"]
            )
        if "caption" in recipe.stages:
            question = sec["caption"]["question"]
            self.captioner = make_captioner(
                sec["caption"]["backend"], {**models, **({"question": question} if question else {})}
            )
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ per input
    def segment_input(self, path: Path) -> InputResult:
        """Ingest, VAD and speaker segmentation of one input. Each segment's ``snr_db`` is measured
        here, against the non-speech frames of the whole input; the ``signal`` stage thresholds it."""
        res = InputResult(path.relative_to(self.root).as_posix())
        try:
            got = ingest(path, self.recipe.ingest)
        except Dropped as e:
            res.reason, res.detail = e.reason, e.detail
            return res
        res.duration, res.source_rate = got.duration, got.source_rate
        res.bitrate_kbps = round(got.bitrate_kbps, 3)
        regions = self.vad.regions(got.wav, got.sample_rate)
        segments = self.segmenter.segments(got.wav, got.sample_rate, regions) if regions else []
        if not segments:
            res.reason = "no_speech"
            return res
        energy, mask = signal_frames(got.wav, got.sample_rate, regions)
        unscale = 1.0 / got.gain
        for i, seg in enumerate(segments):
            a, b = int(seg.start * got.sample_rate), int(seg.end * got.sample_rate)
            meta = {
                "source": res.source, "index": i, "start": round(seg.start, 3), "end": round(seg.end, 3),
                "duration": round(seg.end - seg.start, 3), "speaker": f"spk{seg.speaker}",
                "source_rate": got.source_rate, "bitrate_kbps": round(got.bitrate_kbps, 3),
                "text": "", "language": "", "caption": "",
                "scores": {"snr_db": round(snr_db(energy, mask, seg.start, seg.end), 2)},
            }  # fmt: skip
            res.items.append(Item(meta, got.wav[a:b], got.sample_rate, unscale, path))
        return res

    # ------------------------------------------------------------------ per batch
    def process(self, paths: list[Path]) -> list[dict]:
        """Run one batch; returns the done markers written (one per input)."""
        results = []
        for p in paths:
            t = time.perf_counter()
            results.append(self.segment_input(p))
            self._time("segment", t)
        live = [it for r in results for it in r.items]
        for name in self.recipe.stages:
            t = time.perf_counter()
            live = [it for it in live if it.dropped is None]
            if live:
                self.stage_fns[name](live)
                for it in live:
                    if it.dropped is None:
                        bad = failed_threshold(it.meta["scores"], self.recipe.thresholds[name])
                        if bad is not None:
                            it.dropped = bad
            self._time(name, t)
        return [self.out.finish(Path(self.root / r.source), r) for r in results]

    def _time(self, name: str, start: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    # ------------------------------------------------------------------ stages
    def _signal(self, items: list[Item]) -> None:
        for it in items:
            it.meta["scores"]["clipping"] = round(clipping(it.wav * it.unscale), 6)

    def _transcribe(self, items: list[Item]) -> None:
        for it, tr in zip(items, self.recognizer.transcribe([it.clip for it in items]), strict=True):
            it.meta["text"] = tr.text
            it.meta["scores"]["asr_confidence"] = None if tr.confidence is None else round(tr.confidence, 4)
            if not tr.text.strip():
                it.dropped = "empty_text"

    def _language(self, items: list[Item]) -> None:
        cfg = self.recipe.language
        for it in items:
            lang, conf = self.lid.identify(it.meta["text"])
            it.meta["language"], it.meta["scores"]["lang_confidence"] = lang, round(conf, 4)
            if cfg.keep and lang not in cfg.keep:
                it.dropped = "language"
            elif conf < cfg.min_confidence:
                it.dropped = "lang_confidence"

    def _agreement(self, items: list[Item]) -> None:
        langs = self.recipe.sections["agreement"]["languages"] or []
        chosen = [it for it in items if not langs or it.meta["language"] in langs]
        for it in items:
            it.meta["scores"]["agreement"] = None
        for it, tr in zip(chosen, self.second.transcribe([it.clip for it in chosen]), strict=True):
            score = agreement(it.meta["text"], tr.text, it.meta["language"])
            it.meta["scores"]["agreement"] = None if score is None else round(score, 4)

    def _quality(self, items: list[Item]) -> None:
        for it in items:
            s = it.meta["scores"]
            q = transcript_quality(s.get("asr_confidence"), s.get("agreement"))
            s["transcript_quality"] = None if q is None else round(q, 4)
            chars = len("".join(it.meta["text"].split()))
            s["chars_per_second"] = round(chars / max(it.meta["duration"], 1e-3), 3)

    def _blocklist(self, items: list[Item]) -> None:
        for it in items:
            if self.blocklist.match(it.meta["text"]) is not None:
                it.dropped = "blocklist"

    def _caption(self, items: list[Item]) -> None:
        for it, cap in zip(items, self.captioner.caption([it.clip for it in items]), strict=True):
            it.meta["caption"] = cap

    def _sample(self, items: list[Item]) -> None:
        sampling = self.recipe.sampling
        for it in items:
            scores = {**it.meta["scores"], "duration": it.meta["duration"]}
            it.meta["repeats"] = sampling.repeats(scores)

    def _tokenize(self, items: list[Item]) -> None:
        tok, sec = self.out.tokenizer(), self.recipe.sections["tokenize"]
        from ..tokenizer.model import pad_to_group

        C, G = int(sec["codebooks"]), int(sec["group_size"])
        rate = self.recipe.ingest.sample_rate
        codes = tok.encode_batch([it.wav for it in items], rate, batch_size=int(sec["batch_size"]))
        for it, c in zip(items, codes, strict=True):
            it.codes = pad_to_group(c[:C].t(), G).numpy().astype(np.int16)
