"""Voice matching: few-shot voice conversion rendered nearer the examples' target voice.

In-context voice conversion asks the LM to speak the query's words in the voice of the examples'
outputs. A small LM often carries part of the query's own voice through. This stage works after the
LM, on what the audio tokenizer's decoder renders: the quantised features of a frame, the sum of the
codewords of its ``C`` codebooks (``[frames, d_model]``). Every frame of the converted speech looks
up its ``k`` nearest frames (cosine of those features) among the frames of the examples' outputs,
which are the target voice, and moves toward their mean:

* the residual codebooks' part (codebooks 1..C-1: timbre and fine detail) by ``timbre`` of the way;
* codebook 0's codeword (trained to follow the text: the content) by ``content`` of the way.

``content=timbre=1`` is k-nearest-neighbour voice conversion (kNN-VC, Baas et al. 2023, there on
self-supervised speech features) with the examples as the reference set; a small ``content`` keeps
the LM's words. Each frame depends only on its own codes and the examples, so streamed and offline
decoding give the same audio.

It suits voice conversion only: the examples' outputs of denoising, speed or translation prompts are
other speakers than the query's, whose voice such an output must keep. So :class:`mimo_audio.api.MimoAudio`
applies a model's ``voice_match`` setting to requests with the ``vc`` instruction unless told
otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from .errors import MimoAudioError

if TYPE_CHECKING:
    from .tokenizer import AudioTokenizer

MAX_K = 64
MAX_POOL_FRAMES = 25 * 600  # 10 minutes of example output at 25 Hz: a [frames, pool] similarity per chunk


@dataclass(frozen=True)
class VoiceMatch:
    """Settings of the matching: ``k`` neighbours; how far codebook 0 (``content``) and the other
    codebooks (``timbre``) move toward them (0: not at all, 1: all the way)."""

    k: int = 4
    content: float = 0.4
    timbre: float = 1.0

    def __post_init__(self) -> None:
        k = self.k
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise MimoAudioError(f"voice_match k must be an integer from 1 to {MAX_K}, got {k!r}")
        for name in ("content", "timbre"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise MimoAudioError(f"voice_match {name} must be a number from 0 to 1, got {v!r}")

    @classmethod
    def parse(cls, value: Any) -> VoiceMatch | None:
        """A setting from a request or a config: ``None``/``False``/``0``/``"off"`` → None (off);
        ``True``/``"on"`` → the defaults; an int → that ``k``; a mapping (or its JSON text) of
        ``k``/``content``/``timbre``; or a :class:`VoiceMatch`. Anything else is a one-line error."""
        if value is None or value is False or value == "off" or (type(value) is int and value == 0):
            return None
        if isinstance(value, VoiceMatch):
            return value
        if value is True or value == "on":
            return cls()
        if type(value) is int:
            return cls(k=value)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise MimoAudioError(
                    f"voice_match must be on, off, a number of neighbours or a JSON object, got {value!r}"
                ) from None
            return cls.parse(value)
        if isinstance(value, dict):
            extra = set(value) - {"k", "content", "timbre"}
            if extra:
                raise MimoAudioError(
                    f"voice_match takes k, content and timbre; unknown: {', '.join(sorted(extra))}"
                )
            return cls(**value)
        raise MimoAudioError(f"voice_match must be on, off, k or {{k, content, timbre}}, got {value!r}")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


class VoicePool:
    """The target voice of one request: the quantised features of its examples' output frames.

    ``features``: ``[P, d]`` float32 (all codebooks); ``first``: ``[P, d]`` codebook 0's part;
    ``keys``: ``[P, d]`` unit-norm ``features`` for the cosine search.
    """

    def __init__(self, tokenizer: AudioTokenizer, codes: Sequence[torch.Tensor], match: VoiceMatch) -> None:
        """``codes``: one ``[C, N_i]`` int64 array per example output (LM codebooks, frame-minor)."""
        if not codes or sum(int(c.shape[1]) for c in codes) == 0:
            raise MimoAudioError("voice matching needs examples with output audio")
        whole = torch.cat([c.to(tokenizer.device) for c in codes], dim=1)[:, :MAX_POOL_FRAMES]
        self.tokenizer, self.match = tokenizer, match
        self.channels = int(whole.shape[0])
        self.features = tokenizer.dequantize(whole).float()
        self.first = tokenizer.dequantize(whole[:1]).float()
        self.keys = F.normalize(self.features, dim=1)

    def apply(self, codes: torch.Tensor) -> torch.Tensor:
        """Converted frames' codes ``[C, N]`` → matched features ``[N, d]`` float32 for the decoder."""
        tok, m = self.tokenizer, self.match
        if codes.shape[0] != self.channels:
            raise MimoAudioError(
                f"voice matching: {codes.shape[0]} codebooks, the examples have {self.channels}"
            )
        codes = codes.to(tok.device)
        x = tok.dequantize(codes).float()
        if x.shape[0] == 0:
            return x
        first = tok.dequantize(codes[:1]).float()
        k = min(m.k, self.features.shape[0])
        idx = (F.normalize(x, dim=1) @ self.keys.T).topk(k, dim=1).indices  # [N, k]
        nn_all, nn_first = self.features[idx].mean(1), self.first[idx].mean(1)
        rest, nn_rest = x - first, nn_all - nn_first
        return first + m.content * (nn_first - first) + rest + m.timbre * (nn_rest - rest)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[C, N]`` → float32 waveform ``[samples]`` on the CPU (chunked as the pipeline's decode)."""
        return self.tokenizer.decode_features_chunked(self.apply(codes)).float().cpu()
