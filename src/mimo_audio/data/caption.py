"""Caption stage: a sentence of non-semantic attributes (speaker, emotion, environment) per segment.

Backends (recipe ``caption.backend``): ``mimo`` asks our audio-understanding task
(:meth:`MimoAudio.understand`) ``question`` about each segment, in engine batches, with a fixed seed
so re-runs give the same caption; ``sidecar`` takes the ``caption`` field of the sidecar entries
(see :mod:`.transcribe`); ``none`` leaves the caption empty.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from ..audio import resample
from ..errors import MimoAudioError
from .transcribe import Clip, load_mimo, run_engine, sidecar_entries

QUESTION = (
    "Describe the speaker (gender, age, timbre), their emotion and the recording environment in one sentence."
)


class Captioner(Protocol):
    def caption(self, clips: list[Clip]) -> list[str]: ...


class MimoCaptioner:
    """Captions from the audio-understanding task, ``batch_size`` segments per engine batch."""

    def __init__(
        self,
        model: str,
        tokenizer: str,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int = 8,
        max_new_steps: int = 64,
        seed: int = 0,
        question: str = QUESTION,
    ) -> None:
        self.model = load_mimo(model, tokenizer, device, dtype, batch_size)
        self.batch_size, self.question = batch_size, question
        self.gen = {"seed": seed, "max_new_steps": max_new_steps}

    def caption(self, clips: list[Clip]) -> list[str]:
        out: list[str] = []
        rate = self.model.sample_rate
        for b in range(0, len(clips), self.batch_size):
            inputs = [
                {"audio": torch.from_numpy(resample(c.wav, c.rate, rate)), "question": self.question}
                for c in clips[b : b + self.batch_size]
            ]
            out += [
                r.text.strip() for r, _ in run_engine(self.model, "audio_understanding", inputs, self.gen)
            ]
        return out


class SidecarCaptioner:
    def caption(self, clips: list[Clip]) -> list[str]:
        return [
            " ".join(str(e.get("caption", "")).strip() for e in sidecar_entries(c)).strip() for c in clips
        ]


class NoCaptioner:
    def caption(self, clips: list[Clip]) -> list[str]:
        return [""] * len(clips)


BACKENDS = ("mimo", "sidecar", "none")


def make_captioner(backend: str, options: dict[str, Any]) -> Captioner:
    """A captioner from its recipe section."""
    if backend == "mimo":
        if not options.get("model") or not options.get("tokenizer"):
            raise MimoAudioError("the mimo caption backend needs 'model' and 'tokenizer' folders")
        keys = ("device", "dtype", "batch_size", "max_new_steps", "seed", "question")
        return MimoCaptioner(
            str(options["model"]), str(options["tokenizer"]), **{k: options[k] for k in keys if k in options}
        )
    if backend == "sidecar":
        return SidecarCaptioner()
    if backend == "none":
        return NoCaptioner()
    raise MimoAudioError(f"unknown caption backend {backend!r} (choose from {', '.join(BACKENDS)})")
