"""Request bodies of the OpenAI audio API subset the server speaks (pydantic models).

Unknown fields are ignored (as OpenAI-compatible servers commonly do), so newer clients keep
working. Fields marked *extension* are not in OpenAI's API; clients send them with ``extra_body``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

OPENAI_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "cedar",
    "coral",
    "echo",
    "fable",
    "marin",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
)

SpeechFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
ChatAudioFormat = Literal["wav", "mp3", "flac", "opus", "aac", "pcm16"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class VoiceRef(_Body):
    """A custom voice by id (``{"id": "voice_…"}``), as returned by ``POST /v1/audio/voices``."""

    id: str = Field(min_length=1, max_length=128)


class Sampling(_Body):
    """Sampling controls shared by the endpoints (all optional; the task presets apply otherwise)."""

    seed: int | None = Field(default=None, ge=0, le=2**62)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0, description="extension")
    max_new_steps: int | None = Field(default=None, ge=1, description="extension: generated patches at most")
    min_new_steps: int | None = Field(
        default=None, ge=0, description="extension: no stop before this many patches"
    )


class SpeechRequest(Sampling):
    """``POST /v1/audio/speech``."""

    model: str = "mimo-audio"
    input: str = Field(min_length=1)
    voice: str | VoiceRef = "default"
    instructions: str | None = None
    response_format: SpeechFormat = "mp3"
    speed: float = Field(default=1.0, ge=0.25, le=4.0)
    stream_format: Literal["sse", "audio"] | None = None
    stream: bool = Field(default=False, description="extension: stream the audio as it is generated")


class InputAudio(_Body):
    data: str = Field(min_length=1, description="base64-encoded audio file")
    format: str = "wav"


class ContentPart(_Body):
    type: Literal["text", "input_audio"]
    text: str | None = None
    input_audio: InputAudio | None = None


class AudioRef(_Body):
    """An earlier audio reply referenced by id (assistant turns)."""

    id: str


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None
    audio: AudioRef | None = None


class ChatAudioParams(_Body):
    voice: str | VoiceRef = "default"
    format: ChatAudioFormat = "wav"


class StreamOptions(_Body):
    include_usage: bool = False


class ChatRequest(Sampling):
    """``POST /v1/chat/completions`` with audio in (``input_audio`` parts) and audio out (``modalities``)."""

    model: str = "mimo-audio"
    messages: list[ChatMessage] = Field(min_length=1)
    modalities: list[Literal["text", "audio"]] | None = None
    audio: ChatAudioParams | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int = Field(default=1, ge=1)
    thinking: bool = Field(default=False, description="extension: let the model reason first (text replies)")
