"""Audio in and out of the HTTP server: upload decoding, response formats, streaming, speed.

Uploads are decoded from memory (soundfile over ``BytesIO``; nothing a client sends is written to disk
or used as a path), mixed to mono and resampled to the model rate. Responses are encoded in the
OpenAI formats that libsndfile can write (wav, flac, mp3, opus, pcm); ``pcm`` is raw 16-bit
little-endian mono at 24 kHz, as OpenAI's is. ``speed`` is applied with a streaming WSOLA time
stretch (pitch kept).
"""

from __future__ import annotations

import base64
import binascii
import io
import struct

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 24000

MEDIA_TYPES = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "pcm": "audio/pcm",
}
# response_format → (libsndfile format, subtype); aac has no libsndfile writer.
_SF_FORMATS = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "opus": ("OGG", "OPUS"),
}
STREAMABLE = ("pcm", "wav")


class AudioDecodeError(ValueError):
    """The upload is not audio we can read (→ 400)."""


class AudioTooLong(ValueError):
    """The upload is longer than the server's limit (→ 413)."""


def available_formats() -> tuple[str, ...]:
    """Response formats this server can produce (depends on the bundled libsndfile)."""
    have = sf.available_formats()
    out = ["pcm"]
    for name, (fmt, subtype) in _SF_FORMATS.items():
        if fmt in have and subtype in sf.available_subtypes(fmt):
            out.append(name)
    return tuple(out)


def decode_upload(data: bytes, max_seconds: float, name: str = "file") -> np.ndarray:
    """Decode an uploaded file (wav/flac/ogg/mp3) to float32 mono ``[samples]`` at 24 kHz."""
    if not data:
        raise AudioDecodeError(f"{name}: the upload is empty")
    try:
        info = sf.info(io.BytesIO(data))
        if info.samplerate <= 0 or info.channels <= 0:
            raise AudioDecodeError(f"{name}: not an audio file")
        if info.frames > max_seconds * info.samplerate:
            raise AudioTooLong(
                f"{name}: audio is {info.frames / info.samplerate:.1f} s long, over the limit of {max_seconds:g} s"
            )
        wav, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (AudioDecodeError, AudioTooLong):
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AudioDecodeError(f"{name}: cannot decode audio ({first})") from None
    mono = wav.mean(axis=1) if wav.shape[1] > 1 else wav[:, 0]
    if mono.size == 0:
        raise AudioDecodeError(f"{name}: audio is empty (0 samples)")
    if mono.size > max_seconds * rate:
        raise AudioTooLong(
            f"{name}: audio is {mono.size / rate:.1f} s long, over the limit of {max_seconds:g} s"
        )
    if not np.isfinite(mono).all():
        raise AudioDecodeError(f"{name}: audio contains NaN or infinite samples")
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def decode_base64_audio(data: str, max_seconds: float, name: str = "audio") -> np.ndarray:
    """Decode base64 audio (chat ``input_audio.data``; a ``data:`` URL prefix is accepted)."""
    if data.startswith("data:") and "," in data:
        data = data.split(",", 1)[1]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise AudioDecodeError(f"{name}: not valid base64") from None
    return decode_upload(raw, max_seconds, name)


def to_pcm16(wav: np.ndarray) -> bytes:
    """float32 ``[samples]`` → 16-bit little-endian PCM bytes."""
    return (np.clip(wav, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def wav_header(sample_rate: int = SAMPLE_RATE, num_samples: int | None = None) -> bytes:
    """A 16-bit mono WAV header; ``num_samples=None`` writes the open-ended sizes used for streaming."""
    data_size = 0xFFFFFFFF if num_samples is None else num_samples * 2
    riff_size = 0xFFFFFFFF if num_samples is None else 36 + data_size
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_size)
    )


def encode_audio(wav: np.ndarray, fmt: str, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Encode a whole float32 mono waveform in ``fmt`` (one of :func:`available_formats`)."""
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    if fmt == "pcm":
        return to_pcm16(wav)
    if fmt == "wav":
        return wav_header(sample_rate, wav.size) + to_pcm16(wav)
    if fmt not in _SF_FORMATS:
        raise ValueError(f"unsupported audio format {fmt!r}")
    container, subtype = _SF_FORMATS[fmt]
    buf = io.BytesIO()
    sf.write(buf, np.clip(wav, -1.0, 1.0), sample_rate, format=container, subtype=subtype)
    return buf.getvalue()


class StreamEncoder:
    """Encodes audio chunks for a streamed response: ``pcm`` raw, ``wav`` with an open-ended header."""

    def __init__(self, fmt: str, sample_rate: int = SAMPLE_RATE) -> None:
        if fmt not in STREAMABLE:
            raise ValueError(f"format {fmt!r} cannot be streamed")
        self.fmt, self.sample_rate = fmt, sample_rate
        self._started = False

    def encode(self, wav: np.ndarray | None) -> bytes:
        out = b""
        if not self._started and self.fmt == "wav":
            out = wav_header(self.sample_rate)
        self._started = True
        if wav is not None and wav.size:
            out += to_pcm16(np.asarray(wav, dtype=np.float32).reshape(-1))
        return out


class TimeStretcher:
    """Streaming WSOLA time-scale modification: ``speed`` > 1 shortens, < 1 lengthens; pitch is kept.

    Frames of ``frame`` samples (Hann window) are overlap-added every ``frame // 2`` output samples;
    each analysis frame is taken near ``speed ×`` the output position, shifted by up to ``tolerance``
    samples to best continue the previous frame (cross-correlation). ``push`` returns the samples that
    are final; ``flush`` the rest. Feeding a signal in any chunking gives the same output.
    """

    def __init__(self, speed: float, sample_rate: int = SAMPLE_RATE) -> None:
        self.speed = float(speed)
        self.frame = max(256, int(0.04 * sample_rate)) // 2 * 2  # 40 ms
        self.hop = self.frame // 2
        self.tolerance = self.frame // 4
        self.window = np.hanning(self.frame + 2)[1:-1].astype(np.float32)
        self._in = np.zeros(0, np.float32)
        self._in_start = 0  # absolute index of self._in[0]
        self._out = np.zeros(self.frame, np.float32)  # overlap-add accumulator from _out_start
        self._norm = np.zeros(self.frame, np.float32)
        self._k = 0  # output frames written
        self._prev: int | None = None  # absolute input start of the last analysis frame
        self._total_in = 0

    def push(self, wav: np.ndarray) -> np.ndarray:
        wav = np.asarray(wav, dtype=np.float32).reshape(-1)
        if self.speed == 1.0:
            return wav
        self._in = np.concatenate([self._in, wav])
        self._total_in += wav.size
        return self._run(final=False)

    def flush(self) -> np.ndarray:
        if self.speed == 1.0:
            return np.zeros(0, np.float32)
        out = [self._run(final=True)]
        # The remaining accumulator holds the tail of the last frame.
        expected = int(round(self._total_in / self.speed))
        written = self._k * self.hop
        tail = self._out[: max(0, min(self.frame, expected - written))]
        norm = self._norm[: tail.size]
        out.append(np.where(norm > 1e-3, tail / np.maximum(norm, 1e-3), tail))
        return np.concatenate(out).astype(np.float32)

    def _run(self, final: bool) -> np.ndarray:
        N, H, T = self.frame, self.hop, self.tolerance
        emitted = []
        while True:
            nominal = int(round(self._k * H * self.speed))
            lo, hi = nominal - T, nominal + T
            if self._prev is not None:
                need_end = max(hi + N, self._prev + H + N)
            else:
                need_end = nominal + N
            have_end = self._in_start + self._in.size
            if need_end > have_end:
                if not final or nominal >= self._total_in:
                    break
                self._in = np.concatenate([self._in, np.zeros(need_end - have_end, np.float32)])
            start = nominal if self._prev is None else self._best_start(max(lo, 0), hi)
            seg = self._in[start - self._in_start : start - self._in_start + N]
            self._out += seg * self.window
            self._norm += self.window
            # the first H samples of the accumulator are now final
            done = self._out[:H] / np.maximum(self._norm[:H], 1e-3)
            emitted.append(np.where(self._norm[:H] > 1e-3, done, self._out[:H]))
            self._out = np.concatenate([self._out[H:], np.zeros(H, np.float32)])
            self._norm = np.concatenate([self._norm[H:], np.zeros(H, np.float32)])
            self._prev = start
            self._k += 1
            keep_from = max(0, min(start + H, int(round(self._k * H * self.speed)) - T) - self._in_start)
            self._in = self._in[keep_from:]
            self._in_start += keep_from
        return np.concatenate(emitted) if emitted else np.zeros(0, np.float32)

    def _best_start(self, lo: int, hi: int) -> int:
        """The start in ``[lo, hi]`` whose frame best matches the natural continuation of the last one."""
        N, H = self.frame, self.hop
        ref_at = self._prev + H - self._in_start
        ref = self._in[ref_at : ref_at + N]
        region = self._in[lo - self._in_start : hi - self._in_start + N]
        if region.size < N or not np.any(ref):
            return max(lo, min(hi, self._prev + H))
        corr = np.correlate(region, ref, mode="valid")
        return lo + int(np.argmax(corr))


def stretch(wav: np.ndarray, speed: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Time-stretch a whole waveform (see :class:`TimeStretcher`)."""
    if speed == 1.0:
        return np.asarray(wav, dtype=np.float32).reshape(-1)
    ts = TimeStretcher(speed, sample_rate)
    return np.concatenate([ts.push(wav), ts.flush()])
