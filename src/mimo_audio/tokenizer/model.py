"""The audio tokenizer: 24 kHz waveform ⇄ 25 Hz RVQ codes (SPEC §2–§6).

>>> tok = AudioTokenizer.from_pretrained("MiMo-Audio-Tokenizer")
>>> codes = tok.encode("speech.wav")        # [n_q, frames] int64
>>> wav = tok.decode(codes[:8])             # [960 · frames] float32
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..audio import DEFAULT_MAX_SECONDS, AudioLike, load_audio
from ..checkpoint import PathLike, load_into, load_weights, read_config, resolve_dir
from ..errors import CheckpointError, MimoAudioError
from .config import TokenizerConfig
from .decoder import Decoder
from .encoder import Encoder, encoder_output_lengths
from .mel import MelFrontEnd
from .streaming import ChunkedDecoder, StreamDecoder

SEGMENT_FRAMES = 6000  # mel frames per encoder segment (60 s)
MAX_PASS_FRAMES = 256000  # mel frames per reference forward pass
DECODE_CHUNK_FRAMES = 1500  # code frames per chunk of the pipeline decode (60 s)

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def parse_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``torch.float32``/``bfloat16``/``float16`` or one of their names."""
    if isinstance(dtype, torch.dtype):
        if dtype in (torch.float32, torch.bfloat16, torch.float16):
            return dtype
    elif str(dtype).lower() in DTYPES:
        return DTYPES[str(dtype).lower()]
    raise MimoAudioError(f"unsupported dtype {dtype!r}; use float32, bfloat16 or float16")


def parse_device(device: torch.device | str) -> torch.device:
    """A torch device that exists on this machine."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise MimoAudioError(f"invalid device {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MimoAudioError(f"device {device!r} requested but CUDA is not available")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise MimoAudioError(f"device {device!r} requested but MPS is not available")
    return dev


@dataclass(frozen=True)
class Segment:
    """One encoder segment of a clip: mel frames ``[start, start + length)``.

    ``context`` is the longest segment of the reference forward pass that holds it (≥ ``length``).
    """

    start: int
    length: int
    context: int


def plan_segments(
    num_frames: int, segment_frames: int = SEGMENT_FRAMES, max_pass_frames: int = MAX_PASS_FRAMES
) -> list[Segment]:
    """Split ``num_frames`` mel frames as the reference does (SPEC §2.4).

    Consecutive segments of ``segment_frames``, the remainder last; segments are packed greedily
    into passes of at most ``max_pass_frames`` frames, and each segment records its pass's longest
    segment (which decides the padding artefacts of SPEC §3).
    """
    lengths = [min(segment_frames, num_frames - s) for s in range(0, num_frames, segment_frames)]
    passes: list[list[int]] = []
    total = 0
    for length in lengths:
        if not passes or total + length > max_pass_frames:
            passes.append([])
            total = 0
        passes[-1].append(length)
        total += length
    segments, start = [], 0
    for group in passes:
        for length in group:
            segments.append(Segment(start, length, max(group)))
            start += length
    return segments


class AudioTokenizer(nn.Module):
    """MiMo-Audio tokenizer: mel front end, encoder + RVQ, decoder + vocoder.

    Build with :meth:`from_pretrained`. Every public method runs under ``torch.inference_mode`` and
    returns CPU tensors. Waveforms are float32 mono at :attr:`sample_rate`; codes are int64.
    """

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.front_end = MelFrontEnd(config)
        self.max_seconds: float | None = DEFAULT_MAX_SECONDS

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        path: PathLike,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | str = torch.float32,
        *,
        max_seconds: float | None = DEFAULT_MAX_SECONDS,
    ) -> AudioTokenizer:
        """Load a tokenizer folder (``config.json`` + single or sharded safetensors).

        Args:
            path: local folder (or a hub id when ``huggingface_hub`` is installed and online).
            device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``…
            dtype: ``torch.float32`` (parity), ``torch.bfloat16`` (the official pipeline) or
                ``torch.float16``. The mel front end and the RVQ search always run in float32.
            max_seconds: longest accepted input audio (None: no limit).

        Raises:
            CheckpointError: missing folder/files, invalid config, missing/unexpected/mis-shaped weights.
        """
        device, dtype = parse_device(device), parse_dtype(dtype)
        folder = resolve_dir(path)
        raw = read_config(folder)
        model_type = raw.get("model_type", "mimo_audio_tokenizer")
        if model_type != "mimo_audio_tokenizer":
            raise CheckpointError(f"{folder}: model_type is {model_type!r}, not an audio tokenizer")
        config = TokenizerConfig.from_dict(raw)
        with torch.device("meta"):
            model = cls(config)
        load_into(model, load_weights(folder), source=str(folder), dtype=dtype, device=device)
        model.max_seconds = max_seconds
        return model.eval()

    @classmethod
    def from_config(
        cls,
        config: TokenizerConfig | dict[str, Any],
        device: torch.device | str = "cpu",
        dtype: torch.dtype | str = torch.float32,
        seed: int = 0,
    ) -> AudioTokenizer:
        """A randomly initialised tokenizer (benchmarks, tests): default init, Gaussian codebooks.

        Built directly in ``dtype`` on ``device`` (no float32 copy on the way).
        """
        if isinstance(config, dict):
            config = TokenizerConfig.from_dict(config)
        device, dtype = parse_device(device), parse_dtype(dtype)
        previous = torch.get_default_dtype()
        with torch.random.fork_rng(devices=[]), torch.device(device):
            torch.manual_seed(seed)
            torch.set_default_dtype(dtype)
            try:
                model = cls(config)
                for layer in model.encoder.quantizer.vq.layers:
                    layer._codebook.embed.normal_()
            finally:
                torch.set_default_dtype(previous)
        return model.eval()

    # ------------------------------------------------------------------ properties

    @property
    def sample_rate(self) -> int:
        """Waveform rate in Hz (24000)."""
        return self.config.sampling_rate

    @property
    def frame_rate(self) -> float:
        """Code frames per second (25.0)."""
        return self.config.frame_rate

    @property
    def samples_per_frame(self) -> int:
        """Waveform samples per code frame (960)."""
        return self.config.samples_per_frame

    @property
    def num_quantizers(self) -> int:
        return self.config.num_quantizers

    @property
    def device(self) -> torch.device:
        return self.decoder.layer_norm.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.layer_norm.weight.dtype

    # ------------------------------------------------------------------ front end

    def load_wav(
        self, wav: AudioLike, sample_rate: int | None = None, *, name: str = "audio"
    ) -> torch.Tensor:
        """Path / array / tensor → float32 mono ``[samples]`` at :attr:`sample_rate` (validated)."""
        if isinstance(wav, (str, os.PathLike)):
            name = str(wav)
        return load_audio(
            wav, sample_rate, target_rate=self.sample_rate, max_seconds=self.max_seconds, name=name
        )

    @torch.inference_mode()
    def mel(self, wav: AudioLike, sample_rate: int | None = None) -> torch.Tensor:
        """Log-mel of a clip: float32 ``[frames, n_mels]``, ``frames = 1 + samples // hop_length``."""
        return self.front_end(self.load_wav(wav, sample_rate).to(self.device)).cpu()

    # ------------------------------------------------------------------ encoding

    @torch.inference_mode()
    def encode(self, wav: AudioLike, sample_rate: int | None = None) -> torch.Tensor:
        """Encode a clip to all codebooks: int64 ``[n_q, frames]`` (25 Hz).

        Clips over 60 s are cut into 6000-mel-frame segments and encoded as the reference's packed
        passes (SPEC §2.4), padding artefacts included.
        """
        return self.encode_batch([wav], sample_rate)[0]

    @torch.inference_mode()
    def encode_batch(
        self, wavs: Sequence[AudioLike], sample_rate: int | None = None, batch_size: int = 8
    ) -> list[torch.Tensor]:
        """Encode many clips in padded batches of up to ``batch_size`` segments.

        Returns one int64 ``[n_q, frames_i]`` per clip, equal to :meth:`encode` of each clip alone.
        """
        if isinstance(wavs, (str, os.PathLike, np.ndarray, torch.Tensor)):
            raise MimoAudioError("encode_batch expects a list of clips; use encode for one clip")
        mels = [self.front_end(self.load_wav(w, sample_rate).to(self.device)) for w in wavs]
        return [self.encoder.quantizer.encode(f).cpu() for f in self._features(mels, batch_size)]

    @torch.inference_mode()
    def encode_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """Codes of a precomputed log-mel ``[mel_frames, n_mels]`` (segmented like :meth:`encode`): int64 ``[n_q, frames]``."""
        mel = torch.as_tensor(mel)
        if mel.ndim != 2 or mel.shape[1] != self.config.n_mels or mel.shape[0] == 0:
            raise MimoAudioError(f"expected a log-mel [frames, {self.config.n_mels}], got {tuple(mel.shape)}")
        features = self._features([mel.to(self.device, torch.float32)], 1)[0]
        return self.encoder.quantizer.encode(features).cpu()

    @torch.inference_mode()
    def encode_features(self, wav: AudioLike, sample_rate: int | None = None) -> torch.Tensor:
        """Continuous encoder output before quantisation: float32 ``[frames, d_model]``."""
        mel = self.front_end(self.load_wav(wav, sample_rate).to(self.device))
        return self._features([mel], 1)[0].float().cpu()

    @torch.inference_mode()
    def encode_for_lm(
        self, wav: AudioLike, sample_rate: int | None = None, channels: int = 8, group_size: int = 4
    ) -> torch.Tensor:
        """LM input codes (SPEC §2.5): int64 ``[frames_padded, channels]``.

        The first ``channels`` codebooks, frame-major, padded to a multiple of ``group_size`` frames
        by repeating the last frame.
        """
        if not 1 <= channels <= self.num_quantizers or group_size < 1:
            raise MimoAudioError(f"channels must be in 1..{self.num_quantizers} and group_size ≥ 1")
        return pad_to_group(self.encode(wav, sample_rate)[:channels].t(), group_size)

    def _features(self, mels: list[torch.Tensor], batch_size: int) -> list[torch.Tensor]:
        """Mel clips ``[T_i, n_mels]`` → encoder features ``[N_i, d]`` per clip (segmented, batched)."""
        items = []  # (clip, segment index, mel slice, context)
        per_clip: list[list[torch.Tensor | None]] = []
        for c, mel in enumerate(mels):
            segments = plan_segments(mel.shape[0])
            per_clip.append([None] * len(segments))
            for s, seg in enumerate(segments):
                items.append((c, s, mel[seg.start : seg.start + seg.length], seg.context))
        items.sort(key=lambda it: -it[2].shape[0])  # similar lengths share a batch
        for i in range(0, len(items), max(1, batch_size)):
            group = items[i : i + max(1, batch_size)]
            lengths = torch.tensor([it[2].shape[0] for it in group], device=self.device)
            context = torch.tensor([it[3] for it in group], device=self.device)
            width = int(lengths.max())
            mel = torch.stack([F.pad(it[2].t(), (0, width - it[2].shape[0])) for it in group])
            feats, out_lengths = self.encoder(mel, lengths, context)
            for (c, s, _, _), f, n in zip(group, feats, out_lengths.tolist(), strict=True):
                per_clip[c][s] = f[:n]
        return [torch.cat(parts) for parts in per_clip]

    def output_frames(self, mel_frames: int) -> int:
        """Code frames produced for a clip of ``mel_frames`` mel frames (segmentation included)."""
        lengths = torch.tensor([seg.length for seg in plan_segments(mel_frames)])
        return int(encoder_output_lengths(lengths, self.config).sum())

    # ------------------------------------------------------------------ decoding

    def check_codes(self, codes: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Validate ``[k, frames]`` codes (k ≤ n_q, ids inside each codebook) → int64 on the model device."""
        if isinstance(codes, np.ndarray):
            codes = torch.from_numpy(codes)
        if not isinstance(codes, torch.Tensor):
            raise MimoAudioError(f"codes must be a tensor or array, got {type(codes).__name__}")
        if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise MimoAudioError(f"codes must be integers, got {codes.dtype}")
        if codes.ndim != 2 or not 1 <= codes.shape[0] <= self.num_quantizers:
            raise MimoAudioError(
                f"codes must be [codebooks, frames] with 1..{self.num_quantizers} codebooks, "
                f"got shape {tuple(codes.shape)}"
            )
        codes = codes.to(self.device, torch.long)
        if codes.numel():
            sizes = torch.tensor(self.config.codebook_sizes[: codes.shape[0]], device=codes.device)
            bad = (codes < 0) | (codes >= sizes[:, None])
            if bool(bad.any()):
                row = int(bad.any(dim=1).nonzero()[0])
                raise MimoAudioError(
                    f"codes of codebook {row} must be in 0..{self.config.codebook_sizes[row] - 1}, "
                    f"got values {int(codes[row].min())}..{int(codes[row].max())}"
                )
        return codes

    @torch.inference_mode()
    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """codes ``[k, frames]`` → float32 features ``[frames, d_model]`` (sum of the k codewords)."""
        codes = self.check_codes(codes)
        if codes.shape[1] == 0:
            return torch.zeros(0, self.config.d_model, device=self.device)
        return self.encoder.quantizer.decode(codes)

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Decode one sequence ``[k, frames]`` (any leading k ≤ n_q codebooks) in a single pass.

        Returns float32 ``[samples_per_frame · frames]``.
        """
        return self.decode_features(self.dequantize(codes))

    @torch.inference_mode()
    def decode_features(self, features: torch.Tensor) -> torch.Tensor:
        """Decode quantised features ``[frames, d_model]`` (what :meth:`dequantize` returns, or a
        transform of it) in a single pass → float32 ``[samples_per_frame · frames]``."""
        if features.ndim != 2 or features.shape[1] != self.config.d_model:
            raise MimoAudioError(
                f"features must be [frames, {self.config.d_model}], got {tuple(features.shape)}"
            )
        if features.shape[0] == 0:
            return torch.zeros(0)
        return self.decoder(features.to(self.device)[None])[0].cpu()

    @torch.inference_mode()
    def decode_batch(self, codes: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Decode several sequences in one padded batch; each result equals :meth:`decode` alone."""
        features = [self.dequantize(c) for c in codes]
        lengths = torch.tensor([f.shape[0] for f in features], device=self.device)
        out: list[torch.Tensor] = [torch.zeros(0) for _ in features]
        keep = [i for i, f in enumerate(features) if f.shape[0]]
        if keep:
            width = int(lengths.max())
            batch = torch.stack([F.pad(features[i], (0, 0, 0, width - features[i].shape[0])) for i in keep])
            wav = self.decoder(batch, lengths[keep])
            for row, i in enumerate(keep):
                out[i] = wav[row, : int(lengths[i]) * self.samples_per_frame].cpu()
        return out

    @torch.inference_mode()
    def decode_chunked(self, codes: torch.Tensor, chunk_frames: int = DECODE_CHUNK_FRAMES) -> torch.Tensor:
        """The pipeline decode (SPEC §6): independent ``chunk_frames`` chunks, concatenated.

        Equals :meth:`decode` up to ``chunk_frames`` frames; longer inputs may have seams every chunk.
        """
        if chunk_frames < 1:
            raise MimoAudioError(f"chunk_frames must be ≥ 1, got {chunk_frames}")
        return self.decode_features_chunked(self.dequantize(codes), chunk_frames)

    @torch.inference_mode()
    def decode_features_chunked(
        self, features: torch.Tensor, chunk_frames: int = DECODE_CHUNK_FRAMES
    ) -> torch.Tensor:
        """:meth:`decode_chunked` from quantised features ``[frames, d_model]``."""
        if chunk_frames < 1:
            raise MimoAudioError(f"chunk_frames must be ≥ 1, got {chunk_frames}")
        pieces = [self.decode_features(part) for part in features.split(chunk_frames, dim=0)]
        return torch.cat(pieces) if pieces else torch.zeros(0)

    def stream_decoder(
        self,
        left_overlap: int = 250,
        right_overlap: int = 40,
        chunk_frames: int = 0,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> StreamDecoder | ChunkedDecoder:
        """A :class:`StreamDecoder` for one sequence of codes arriving in chunks (SPEC §6).

        ``chunk_frames > 0`` buffers pushes and decodes every ``chunk_frames`` frames
        (:class:`ChunkedDecoder`): the same audio in fewer pieces, at a fraction of the decoding cost
        when codes arrive a few frames at a time. ``transform``: see :class:`StreamDecoder`.
        """
        dec = StreamDecoder(self, left_overlap=left_overlap, right_overlap=right_overlap, transform=transform)
        return ChunkedDecoder(dec, chunk_frames) if chunk_frames > 0 else dec


def pad_to_group(frames: torch.Tensor, group_size: int) -> torch.Tensor:
    """``[n, C]`` → ``[ceil(n / group) · group, C]`` by repeating the last row."""
    missing = -frames.shape[0] % group_size
    if missing == 0 or frames.shape[0] == 0:
        return frames
    return torch.cat([frames, frames[-1:].expand(missing, -1)])


__all__ = ["AudioTokenizer", "Segment", "pad_to_group", "parse_dtype", "parse_device", "plan_segments"]
