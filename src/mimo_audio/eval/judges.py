"""ASR judges: transcribe generated speech so its content can be scored against the intended text.

* :class:`ModelJudge` — our own model's ASR (``MimoAudio.asr`` through the batched engine), for
  English and Mandarin. With a Base model under test, give the judge an Instruct model folder.
* :class:`PocketsphinxJudge` — CMU PocketSphinx with its bundled US-English model: a small,
  independent judge for natural English speech (weak on synthetic voices; Mandarin is not scored).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import soxr
import torch

from .generation import ModelHandle, generate, load_for

JUDGES = ("model", "pocketsphinx", "none")


class AsrJudge(ABC):
    """Transcribes clips ``[samples]`` float32 at ``sr`` Hz; None where it cannot judge a language."""

    name: str

    @abstractmethod
    def transcribe(
        self, clips: Sequence[np.ndarray], sr: int, languages: Sequence[str], ids: Sequence[str]
    ) -> list[str | None]: ...

    def settings(self) -> dict[str, Any]:
        return {"judge": self.name}

    def setup(self) -> None:
        """Load what the judge needs before the first item (checked early, not once per item)."""
        return None  # pocketsphinx loads in __init__


class ModelJudge(AsrJudge):
    """MiMo-Audio ASR (greedy, as the ``asr`` task preset), batched."""

    name = "model"

    def __init__(self, handle: ModelHandle, max_new_steps: int | None = None) -> None:
        self.handle, self.max_new_steps = handle, max_new_steps

    def setup(self) -> None:
        load_for(self.handle, "asr", " (give the judge an Instruct folder with --judge-model)")

    def transcribe(self, clips, sr, languages, ids):
        gen: dict[str, Any] = {} if self.max_new_steps is None else {"max_new_steps": self.max_new_steps}
        inputs = [{"audio": (torch.from_numpy(np.asarray(c, np.float32)), sr)} for c in clips]
        return [r.text for r in generate(self.handle.get(), "asr", inputs, list(ids), gen)]

    def settings(self) -> dict[str, Any]:
        return {
            "judge": self.name,
            "judge_model": self.handle.settings(),
            "judge_max_new_steps": self.max_new_steps,
        }


class PocketsphinxJudge(AsrJudge):
    """PocketSphinx 5 with its default en-us acoustic model, dictionary and language model."""

    name = "pocketsphinx"
    RATE = 16000

    def __init__(self) -> None:
        from pocketsphinx import Decoder

        self._decoder = Decoder(samprate=self.RATE, loglevel="FATAL")

    def _one(self, clip: np.ndarray, sr: int) -> str:
        x = np.asarray(clip, np.float32)
        if sr != self.RATE:
            x = soxr.resample(x, sr, self.RATE)
        pcm = (np.clip(x, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
        d = self._decoder
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        hyp = d.hyp()
        return hyp.hypstr if hyp is not None else ""

    def transcribe(self, clips, sr, languages, ids):
        return [self._one(c, sr) if lang == "en" else None for c, lang in zip(clips, languages, strict=True)]


def make_judge(name: str, handle: ModelHandle | None, max_new_steps: int | None = None) -> AsrJudge | None:
    """The judge called ``name`` (``model`` needs a handle), or None for ``none``."""
    if name == "none":
        return None
    if name == "pocketsphinx":
        return PocketsphinxJudge()
    if name == "model" and handle is not None:
        return ModelJudge(handle, max_new_steps)
    raise ValueError(f"unknown judge {name!r}; choose from {', '.join(JUDGES)}")
