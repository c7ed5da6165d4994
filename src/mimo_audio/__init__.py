"""mimo-audio: the MiMo-Audio speech language model — audio tokenizer, LM engine and tasks.

>>> from mimo_audio import AudioTokenizer, MimoAudio
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = ["AudioTokenizer", "MimoAudio", "MimoAudioError", "__version__"]

from .errors import MimoAudioError

if TYPE_CHECKING:
    from .api import MimoAudio
    from .tokenizer import AudioTokenizer


def __getattr__(name: str):
    # Lazy imports keep `import mimo_audio` cheap and let each half be used alone.
    if name == "AudioTokenizer":
        from .tokenizer import AudioTokenizer

        return AudioTokenizer
    if name == "MimoAudio":
        from .api import MimoAudio

        return MimoAudio
    raise AttributeError(f"module 'mimo_audio' has no attribute {name!r}")
