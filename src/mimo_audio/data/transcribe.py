"""Transcription stage: pluggable recognisers over batches of 24 kHz segments.

Backends (recipe ``transcribe.backend`` / ``agreement.backend``):

* ``mimo`` — our ASR (:meth:`MimoAudio.asr`'s task through the batched engine, greedy, fixed
  ``seed`` so the prompt template is reproducible). ``confidence`` is the geometric mean of the
  chosen text tokens' probabilities (``exp`` of the mean log-softmax at each generated id).
* ``pocketsphinx`` — CMU PocketSphinx with its bundled US-English model (16 kHz), used as the
  second recogniser for the agreement score; no confidence.
* ``sidecar`` — transcripts stored next to the input: ``<stem>.transcript.json``, a list of
  ``{"start": s, "end": s, "text": ..., ["confidence": p, "caption": ...]}`` (seconds); a segment
  gets the entries whose midpoint lies inside it, joined with spaces; ``<stem>.txt`` holds one
  transcript for the whole file. For corpora that come with transcripts, and for tests.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..audio import resample
from ..errors import MimoAudioError


@dataclass
class Clip:
    """A segment handed to a recogniser: ``wav [samples]`` float32 at ``rate``, and where it came from."""

    wav: np.ndarray
    rate: int
    source: Path
    start: float
    end: float


@dataclass(frozen=True)
class Transcript:
    text: str
    confidence: float | None = None  # 0..1


class Recognizer(Protocol):
    def transcribe(self, clips: list[Clip]) -> list[Transcript]: ...


@lru_cache(maxsize=2)
def load_mimo(model: str, tokenizer: str, device: str, dtype: str, max_batch: int):
    """One :class:`~mimo_audio.MimoAudio` per (folders, device, dtype, batch) in a process."""
    from ..api import MimoAudio

    return MimoAudio.from_pretrained(
        model, tokenizer, device=device, dtype=dtype, max_batch=max_batch, progress=False
    )


def run_engine(model, task: str, inputs: list[dict[str, Any]], gen: dict[str, Any]) -> list:
    """Generate ``task`` for every input as one engine batch → ``[(TaskResult, GenerationResult)]``."""
    reqs = [model.prepare(task, inp, **gen) for inp in inputs]
    ids = [model.engine.add(r.prompt, r.options) for r in reqs]
    done: dict[int, Any] = {}
    while len(done) < len(ids):
        for ev in model.engine.step():
            if ev.result is not None:
                done[ev.request_id] = ev.result
    return [(model.finish(done[i], task), done[i]) for i in ids]


def token_confidence(res) -> float | None:
    """Geometric-mean probability of the generated text ids (None without recorded logits)."""
    if res.text_logits is None or not res.text_ids:
        return None
    logp = torch.log_softmax(res.text_logits.float(), dim=-1)
    chosen = logp[torch.arange(len(res.text_ids)), torch.tensor(res.text_ids)]
    return float(math.exp(chosen.mean().item()))


class MimoRecognizer:
    """Our ASR in batches of ``batch_size`` segments."""

    def __init__(
        self,
        model: str,
        tokenizer: str,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 8,
        max_new_steps: int = 64,
        seed: int = 0,
    ) -> None:
        self.model = load_mimo(model, tokenizer, device, dtype, batch_size)
        self.batch_size, self.seed = batch_size, seed
        self.gen = {"greedy": True, "seed": seed, "max_new_steps": max_new_steps, "record_logits": True}

    def transcribe(self, clips: list[Clip]) -> list[Transcript]:
        out: list[Transcript] = []
        rate = self.model.sample_rate
        for b in range(0, len(clips), self.batch_size):
            inputs = [
                {"audio": torch.from_numpy(resample(c.wav, c.rate, rate)), "seed": self.seed}
                for c in clips[b : b + self.batch_size]
            ]
            for task_res, res in run_engine(self.model, "asr", inputs, self.gen):
                out.append(Transcript(task_res.text.strip(), token_confidence(res)))
        return out


class PocketsphinxRecognizer:
    """PocketSphinx (bundled en-us acoustic model, language model and dictionary)."""

    def __init__(self) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError:
            raise MimoAudioError("the pocketsphinx backend needs the pocketsphinx package") from None
        self.decoder = Decoder(logfn="/dev/null")

    def transcribe(self, clips: list[Clip]) -> list[Transcript]:
        out = []
        for c in clips:
            pcm = (np.clip(resample(c.wav, c.rate, 16000), -1, 1) * 32767).astype("<i2").tobytes()
            self.decoder.start_utt()
            self.decoder.process_raw(pcm, full_utt=True)
            self.decoder.end_utt()
            hyp = self.decoder.hyp()
            out.append(Transcript(hyp.hypstr if hyp is not None else ""))
        return out


def read_sidecar(source: Path) -> list[dict] | None:
    """Sidecar entries of an input (see the module docstring), or None when it has none."""
    js = source.with_name(source.stem + ".transcript.json")
    if js.is_file():
        try:
            entries = json.loads(js.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise MimoAudioError(f"{js}: invalid JSON ({e.msg})") from None
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "text" in e for e in entries):
            raise MimoAudioError(f"{js}: expected a list of {{start, end, text}} objects")
        return entries
    txt = source.with_suffix(".txt")
    if txt.is_file():
        return [{"start": 0.0, "end": math.inf, "text": txt.read_text(encoding="utf-8").strip()}]
    return None


def sidecar_entries(clip: Clip) -> list[dict]:
    """The sidecar entries whose midpoint lies in the clip's span."""
    entries = read_sidecar(clip.source) or []
    if len(entries) == 1 and entries[0].get("end", math.inf) == math.inf:
        return entries
    return [
        e
        for e in entries
        if clip.start <= (float(e.get("start", 0.0)) + float(e.get("end", 0.0))) / 2 < clip.end
    ]


class SidecarRecognizer:
    """Transcripts read from sidecar files; segments without one get empty text."""

    def transcribe(self, clips: list[Clip]) -> list[Transcript]:
        out = []
        for c in clips:
            found = sidecar_entries(c)
            conf = [float(e["confidence"]) for e in found if "confidence" in e]
            out.append(
                Transcript(" ".join(str(e["text"]).strip() for e in found), min(conf) if conf else None)
            )
        return out


BACKENDS = ("mimo", "pocketsphinx", "sidecar")


def make_recognizer(backend: str, options: dict[str, Any]) -> Recognizer:
    """A recogniser from its recipe section (``backend`` plus backend options)."""
    if backend == "mimo":
        if not options.get("model") or not options.get("tokenizer"):
            raise MimoAudioError("the mimo backend needs 'model' and 'tokenizer' folders in the recipe")
        keys = ("device", "dtype", "batch_size", "max_new_steps", "seed")
        return MimoRecognizer(
            str(options["model"]), str(options["tokenizer"]), **{k: options[k] for k in keys if k in options}
        )
    if backend == "pocketsphinx":
        return PocketsphinxRecognizer()
    if backend == "sidecar":
        return SidecarRecognizer()
    raise MimoAudioError(f"unknown recogniser backend {backend!r} (choose from {', '.join(BACKENDS)})")
