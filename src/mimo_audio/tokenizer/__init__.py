"""The MiMo-Audio audio tokenizer: 24 kHz speech ⇄ 25 Hz residual-VQ codes.

>>> from mimo_audio.tokenizer import AudioTokenizer
>>> tok = AudioTokenizer.from_pretrained("path/to/MiMo-Audio-Tokenizer")
>>> codes = tok.encode("speech.wav")          # int64 [n_q, frames]
>>> wav = tok.decode(codes[:8])               # float32 [960 · frames]
"""

from __future__ import annotations

from .config import TokenizerConfig
from .model import AudioTokenizer
from .streaming import ChunkedDecoder, StreamDecoder, StreamState

__all__ = ["AudioTokenizer", "ChunkedDecoder", "StreamDecoder", "StreamState", "TokenizerConfig"]
