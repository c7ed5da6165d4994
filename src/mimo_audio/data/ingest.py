"""Ingest stage: probe, decode to 24 kHz mono float32, loudness-normalise; drop unusable files.

**Effective bitrate** (kbit/s) is ``file bytes × 8 / decoded duration / 1000``: what the file spends
per second of audio, container overhead included, independent of what the container header claims.
A file below ``min_bitrate_kbps`` (default 2 kbit/s, so 8 kbit/s low-bitrate mp3 passes and 1.2
kbit/s codec2 does not) is dropped with reason ``low_bitrate``.

Decoding tries soundfile first (wav/flac/ogg/mp3) and falls back to the ``ffmpeg`` program for any
other format it reads (m4a, opus, codec2, ...). Loudness follows ITU-R BS.1770 integrated loudness
(pyloudnorm); the gain is capped so that the peak stays at or below ``max_peak``.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import read_audio_file, resample
from ..errors import AudioInputError

SAMPLE_RATE = 24000
SIDECAR_SUFFIXES = (".json", ".txt", ".md")


@dataclass(frozen=True)
class IngestConfig:
    """Recipe keys of the ``ingest`` stage (seconds, kbit/s, LUFS)."""

    sample_rate: int = SAMPLE_RATE
    target_lufs: float = -23.0
    max_peak: float = 0.95
    min_bitrate_kbps: float = 2.0
    min_seconds: float = 0.5
    max_seconds: float = 4 * 3600.0


@dataclass(frozen=True)
class Ingested:
    """A decoded input: ``wav [samples]`` float32 at ``sample_rate``, and what the probe found."""

    wav: np.ndarray
    sample_rate: int
    source_rate: int
    duration: float  # seconds
    bitrate_kbps: float  # effective, see the module docstring
    loudness_lufs: float  # before normalisation (-inf for digital silence)
    gain: float  # applied by loudness normalisation: decoded = wav / gain


class Dropped(Exception):
    """An input or segment left out, with a machine-readable ``reason`` and a one-line detail."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


def list_inputs(root: Path) -> list[Path]:
    """Every regular file under ``root`` (recursively, sorted) that is not hidden or a sidecar."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and p.suffix.lower() not in SIDECAR_SUFFIXES
    )


def _ffmpeg_decode(path: Path, rate: int) -> np.ndarray:
    """Decode any ffmpeg-readable file to float32 mono ``[samples]`` at ``rate``."""
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), *f"-f f32le -ac 1 -ar {rate} -".split()]
    try:
        res = subprocess.run(cmd, capture_output=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Dropped("decode_failed", f"ffmpeg: {e}") from None
    if res.returncode != 0 or not res.stdout:
        msg = res.stderr.decode(errors="replace").strip().splitlines()
        raise Dropped("decode_failed", msg[-1] if msg else "ffmpeg produced no audio")
    return np.frombuffer(res.stdout, dtype="<f4").copy()


def _source_rate(path: Path) -> int:
    """The first audio stream's sample rate from ffprobe (0 when unknown)."""
    cmd = [
        *"ffprobe -v error -select_streams a:0 -show_entries stream=sample_rate -of json".split(),
        str(path),
    ]
    try:
        res = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
        streams = json.loads(res.stdout or b"{}").get("streams") or [{}]
        return int(streams[0].get("sample_rate") or 0)
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return 0


def decode(path: Path, rate: int = SAMPLE_RATE, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """``(wav [samples] float32 mono at rate, source sample rate)``; raises :class:`Dropped`."""
    try:
        wav, source_rate = read_audio_file(path, max_seconds)
        return resample(wav, source_rate, rate), source_rate
    except AudioInputError as e:
        if "over the limit" in str(e):
            raise Dropped("too_long", str(e)) from None
    wav = _ffmpeg_decode(path, rate)
    if not np.isfinite(wav).all():
        raise Dropped("decode_failed", "non-finite samples")
    return wav, _source_rate(path)


def loudness(wav: np.ndarray, rate: int) -> float:
    """BS.1770 integrated loudness in LUFS (-inf for silence or clips under one 400 ms block)."""
    import pyloudnorm

    if wav.shape[0] < int(0.4 * rate) or not np.any(wav):
        return float("-inf")
    return float(pyloudnorm.Meter(rate).integrated_loudness(wav.astype(np.float64)))


def normalise_loudness(
    wav: np.ndarray, rate: int, target_lufs: float, max_peak: float
) -> tuple[np.ndarray, float, float]:
    """``(wav scaled towards target_lufs with peak ≤ max_peak, measured loudness, gain)``."""
    lufs = loudness(wav, rate)
    peak = float(np.abs(wav).max()) if wav.size else 0.0
    if not np.isfinite(lufs) or peak == 0.0:
        return wav, lufs, 1.0
    gain = min(10.0 ** ((target_lufs - lufs) / 20.0), max_peak / peak)
    return (wav * gain).astype(np.float32), lufs, float(gain)


def ingest(path: Path, cfg: IngestConfig) -> Ingested:
    """Run the whole stage on one file; raises :class:`Dropped` (``decode_failed``, ``low_bitrate``,
    ``too_short``, ``too_long``)."""
    wav, source_rate = decode(path, cfg.sample_rate, cfg.max_seconds)
    duration = wav.shape[0] / cfg.sample_rate
    if duration < cfg.min_seconds:
        raise Dropped("too_short", f"{duration:.2f} s")
    if duration > cfg.max_seconds:
        raise Dropped("too_long", f"{duration:.0f} s")
    kbps = path.stat().st_size * 8 / duration / 1000.0
    if kbps < cfg.min_bitrate_kbps:
        raise Dropped("low_bitrate", f"{kbps:.2f} kbit/s")
    wav, lufs, gain = normalise_loudness(wav, cfg.sample_rate, cfg.target_lufs, cfg.max_peak)
    return Ingested(wav, cfg.sample_rate, source_rate, duration, kbps, lufs, gain)
