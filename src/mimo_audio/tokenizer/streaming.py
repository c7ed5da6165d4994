"""Streaming decode of one code sequence arriving in chunks (SPEC §6, ``streaming_decode``).

Each call re-decodes the cached context (at most ``left_overlap`` frames) plus the new frames and
emits the audio up to ``right_overlap`` frames before the end; the final call emits the rest. The
emitted pieces concatenate to a waveform of exactly ``samples_per_frame`` samples per code frame.
The state lives in an explicit :class:`StreamState` per decoder (no shared mutable default).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..errors import MimoAudioError

if TYPE_CHECKING:
    from .model import AudioTokenizer


@dataclass
class StreamState:
    """Per-sequence streaming state.

    ``features``: cached dequantised frames ``[L, d]`` (float32) or None; ``processed``: frames of
    ``features`` already emitted; ``tail``: audio of the last call past what it emitted — what a
    final call with no new frames emits.
    """

    features: torch.Tensor | None = None
    processed: int = 0
    tail: torch.Tensor | None = None

    def reset(self) -> None:
        self.features = None
        self.processed = 0
        self.tail = None


class StreamDecoder:
    """Chunk-by-chunk decoder for one sequence of codes.

    >>> dec = tok.stream_decoder()
    >>> pieces = [dec.push(chunk) for chunk in chunks]   # chunk: [k, n] int64
    >>> pieces.append(dec.flush())                        # or dec.push(last_chunk, last=True)
    >>> wav = torch.cat(pieces)                           # [960 · frames] float32

    ``push(chunk, last=True)`` and ``push(chunk)`` followed by ``flush()`` give the same audio.
    ``transform`` (optional) maps a chunk's codes ``[k, n]`` to the features ``[n, d]`` to decode in
    place of their dequantisation, frame by frame (e.g. :meth:`mimo_audio.voice_match.VoicePool.apply`).
    """

    def __init__(
        self,
        tokenizer: AudioTokenizer,
        left_overlap: int = 250,
        right_overlap: int = 40,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        if right_overlap < 0 or left_overlap < max(1, right_overlap):
            raise MimoAudioError(
                f"need left_overlap ≥ max(1, right_overlap) ≥ 0, got left {left_overlap}, right {right_overlap}"
            )
        self.tokenizer = tokenizer
        self.left_overlap = left_overlap
        self.right_overlap = right_overlap
        self.transform = transform
        self.state = StreamState()

    @property
    def samples_per_frame(self) -> int:
        return self.tokenizer.samples_per_frame

    def reset(self) -> None:
        """Forget the sequence (drops any audio not yet emitted)."""
        self.state.reset()

    @torch.inference_mode()
    def push(self, codes: torch.Tensor, last: bool = False) -> torch.Tensor:
        """Feed new frames ``[k, n]`` → newly emitted float32 audio ``[samples]`` (possibly empty).

        ``last=True`` marks the call that carries the final frames: everything left is emitted and
        the decoder is reset for a new sequence.
        """
        tok, st, spf = self.tokenizer, self.state, self.samples_per_frame
        new = tok.dequantize(codes) if self.transform is None else self.transform(codes)  # [n, d] float32
        if new.shape[0] == 0:
            return self.flush() if last else torch.zeros(0)
        x = new if st.features is None else torch.cat([st.features, new])
        wav = tok.decoder(x[None])[0]  # [spf · L]
        L, start = x.shape[0], st.processed
        if last:
            out = wav[start * spf :]
            st.reset()
            return out.cpu()
        if L <= self.right_overlap:
            st.features, st.processed, st.tail = x, 0, wav[start * spf :]
            return torch.zeros(0)
        end = L - self.right_overlap
        out, st.tail = wav[start * spf : end * spf], wav[end * spf :]
        st.features, st.processed = x, end
        if L > self.left_overlap:
            st.features = x[L - self.left_overlap :]
            st.processed -= L - self.left_overlap
        return out.cpu()

    def flush(self) -> torch.Tensor:
        """End the sequence: emit the audio held back by the last :meth:`push`, then reset."""
        tail = self.state.tail
        self.state.reset()
        return torch.zeros(0) if tail is None else tail.cpu()


class ChunkedDecoder:
    """Feeds a tokenizer ``StreamDecoder`` in chunks of frames instead of one speech patch at a time.

    Each ``push`` of the streaming decoder re-decodes its left context (250 frames), so pushing every
    4-frame patch makes audio decoding dominate a busy server. This buffers codes and pushes once the
    decoder can emit audio (more than its right overlap) and then every ``every`` frames; ``flush``
    pushes the rest as the last chunk. The audio is the streaming decoder's, in fewer, larger pieces.
    """

    def __init__(self, decoder: StreamDecoder, every: int = 20) -> None:
        if every < 1:
            raise MimoAudioError(f"chunk_frames must be ≥ 1, got {every}")
        self.decoder, self.every = decoder, every
        self.first = decoder.right_overlap + 1
        self._buf: list[torch.Tensor] = []
        self._frames = 0
        self._pushed = False

    @property
    def right_overlap(self) -> int:
        return self.decoder.right_overlap

    def push(self, codes: torch.Tensor, last: bool = False) -> torch.Tensor:
        """Like :meth:`StreamDecoder.push` (``codes [k, n]``); audio comes out once a chunk is complete."""
        self._buf.append(codes)
        self._frames += codes.shape[-1]
        if last:
            return self.flush()
        if self._frames < (self.every if self._pushed else max(self.first, self.every)):
            return torch.zeros(0)
        out = self.decoder.push(torch.cat(self._buf, dim=-1))
        self._buf, self._frames, self._pushed = [], 0, True
        return out

    def flush(self) -> torch.Tensor:
        """Decode what is buffered as the final chunk; both decoders are then ready for a new sequence."""
        buf = self._buf
        self._buf, self._frames, self._pushed = [], 0, False
        if not buf:
            return self.decoder.flush()
        return self.decoder.push(torch.cat(buf, dim=-1), last=True)
