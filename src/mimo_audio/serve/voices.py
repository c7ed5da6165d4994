"""Voice prompts (named at start-up or uploaded) and recent audio replies (chat ``audio.id``).

Both live on the event loop (no locks); voice codes are computed on the scheduler thread.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from .openai_schemas import OPENAI_VOICES


class UnknownVoice(KeyError):
    pass


@dataclass
class Voice:
    id: str
    name: str
    created_at: int
    codes: torch.Tensor  # [N, C] int64 LM codes of the prompt clip
    uploaded: bool

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "object": "audio.voice",
            "name": self.name,
            "created_at": self.created_at,
            "type": "audio_sample",
        }


class VoiceStore:
    """Named voices. ``default`` and OpenAI's voice names resolve to the ``default`` voice (none: the
    model's own voice) unless a voice of that name was registered."""

    def __init__(self, max_uploaded: int) -> None:
        self.max_uploaded = max_uploaded
        self._by_id: dict[str, Voice] = {}

    def add(self, name: str, codes: torch.Tensor, uploaded: bool) -> Voice:
        if uploaded and sum(v.uploaded for v in self._by_id.values()) >= self.max_uploaded:
            raise ValueError(f"at most {self.max_uploaded} uploaded voices; delete one first")
        if any(v.name == name for v in self._by_id.values()):
            raise ValueError(f"a voice named {name!r} exists")
        vid = f"voice_{secrets.token_hex(8)}" if uploaded else f"voice_{name}"
        voice = Voice(vid, name, int(time.time()), codes, uploaded)
        self._by_id[vid] = voice
        return voice

    def delete(self, vid: str) -> Voice:
        voice = self._by_id.get(vid)
        if voice is None:
            raise UnknownVoice(vid)
        if not voice.uploaded:
            raise ValueError("voices registered at start-up cannot be deleted")
        return self._by_id.pop(vid)

    def list(self) -> list[Voice]:
        return sorted(self._by_id.values(), key=lambda v: (v.created_at, v.name))

    def resolve(self, voice: str | dict | object) -> torch.Tensor | None:
        """LM codes of a voice given by name or ``{"id": …}``; None for the model's own voice."""
        vid = getattr(voice, "id", None)
        if vid is not None:
            if vid not in self._by_id:
                raise UnknownVoice(vid)
            return self._by_id[vid].codes
        name = str(voice)
        for v in self._by_id.values():
            if v.name == name or v.id == name:
                return v.codes
        if name == "default" or name in OPENAI_VOICES:
            return self.resolve("default") if name != "default" else None
        raise UnknownVoice(name)


def new_audio_id() -> str:
    return f"audio_{secrets.token_hex(12)}"


class ReplyStore:
    """Audio replies of chat completions by ``audio.id``, bounded in total seconds and age."""

    def __init__(self, max_seconds: float, ttl: float, sample_rate: int = 24000) -> None:
        self.max_samples = int(max_seconds * sample_rate)
        self.ttl = ttl
        self._items: OrderedDict[str, tuple[float, np.ndarray]] = OrderedDict()
        self._samples = 0

    def add(self, wav: np.ndarray, rid: str | None = None) -> tuple[str, int]:
        """Keep ``wav`` (under ``rid`` or a new id); returns the id and its expiry (unix seconds)."""
        rid = rid or new_audio_id()
        expires = time.time() + self.ttl
        if wav.size <= self.max_samples:
            self._items[rid] = (expires, wav)
            self._samples += wav.size
            self._evict()
        return rid, int(expires)

    def get(self, rid: str) -> np.ndarray | None:
        self._evict()
        item = self._items.get(rid)
        return None if item is None else item[1]

    def _evict(self) -> None:
        now = time.time()
        while self._items:
            rid, (expires, wav) = next(iter(self._items.items()))
            if expires > now and self._samples <= self.max_samples:
                break
            self._items.popitem(last=False)
            self._samples -= wav.size
