"""Server settings (what ``mimo-audio serve`` options set)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MimoAudioError

API_KEY_ENV = "MIMO_AUDIO_API_KEY"


@dataclass
class ServerConfig:
    """Limits and identity of one server (one replica under Ray Serve)."""

    model_id: str = "mimo-audio"  # the id listed by GET /v1/models; requests may name any model
    api_key: str | None = None  # Bearer token required on every route but /health (None: open)
    max_queue: int = 64  # requests waiting beyond the running batch; 429 past that
    request_timeout: float = 300.0  # seconds from arrival to the end of generation
    max_new_steps: int | None = 2048  # generated patches per request at most (6.25 per second of speech)
    max_upload_bytes: int = 25 * 1024 * 1024  # request body size limit (413)
    max_audio_seconds: float = 600.0  # length limit of each uploaded clip (413)
    max_input_chars: int = 4096  # /v1/audio/speech input length limit
    voices: dict[str, str] = field(default_factory=dict)  # name → audio file, registered at start-up
    max_uploaded_voices: int = 32  # custom voices created through POST /v1/audio/voices
    max_reply_audio_seconds: float = 900.0  # audio replies kept for multi-turn chat (audio.id), in total
    reply_audio_ttl: float = 3600.0  # seconds an audio reply can be referenced

    def __post_init__(self) -> None:
        if self.api_key is None:
            self.api_key = os.environ.get(API_KEY_ENV) or None
        if self.max_queue < 0:
            raise MimoAudioError("max_queue must be >= 0")
        if not self.request_timeout > 0:
            raise MimoAudioError("request_timeout must be > 0")
        if self.max_new_steps is not None and self.max_new_steps < 1:
            raise MimoAudioError("max_new_steps must be >= 1")
        if self.max_upload_bytes < 1024 or not self.max_audio_seconds > 0:
            raise MimoAudioError("max_upload_bytes must be >= 1024 and max_audio_seconds > 0")
        for name, path in self.voices.items():
            if not name or not name.replace("-", "").replace("_", "").isalnum():
                raise MimoAudioError(f"voice name {name!r}: use letters, digits, '-' and '_'")
            if not Path(path).is_file():
                raise MimoAudioError(f"voice {name!r}: {path}: no such file")


def parse_voice_args(values: list[str] | None) -> dict[str, str]:
    """``NAME=PATH`` strings (``--voice``) → ``{name: path}``."""
    voices: dict[str, str] = {}
    for value in values or []:
        name, sep, path = value.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise MimoAudioError(f"--voice {value!r}: use NAME=PATH")
        voices[name.strip()] = path.strip()
    return voices
