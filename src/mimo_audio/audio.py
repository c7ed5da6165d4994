"""Audio input/output: decoding files, validation, down-mixing, resampling, atomic writes.

Files are read with soundfile (wav/flac/ogg/mp3 where libsndfile supports it), mixed down to mono by
averaging channels and resampled with soxr to the model rate. Waveforms handed in as tensors or
arrays are validated but, like the reference, neither resampled nor down-mixed unless a
``sample_rate`` different from the target is given.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from .errors import AudioInputError, MimoAudioError

SAMPLE_RATE = 24000
DEFAULT_MAX_SECONDS = 3600.0

AudioLike = str | os.PathLike | np.ndarray | torch.Tensor

UMASK = os.umask(0)  # read once at import (os.umask can only be read by setting it)
os.umask(UMASK)


def _check_samples(wav: np.ndarray, name: str, max_seconds: float | None, sample_rate: int) -> None:
    if wav.size == 0:
        raise AudioInputError(f"{name}: audio is empty (0 samples)")
    if not np.isfinite(wav).all():
        raise AudioInputError(f"{name}: audio contains NaN or infinite samples")
    if max_seconds is not None and wav.shape[-1] > max_seconds * sample_rate:
        seconds = wav.shape[-1] / sample_rate
        raise AudioInputError(f"{name}: audio is {seconds:.0f} s long, over the limit of {max_seconds:.0f} s")


def read_audio_file(
    path: str | os.PathLike, max_seconds: float | None = DEFAULT_MAX_SECONDS
) -> tuple[np.ndarray, int]:
    """Decode a file to float32 mono ``[samples]`` at its own rate. Raises :class:`AudioInputError`."""
    p = Path(path)
    if not p.exists():
        raise AudioInputError(f"{path}: no such file")
    if p.is_dir():
        raise AudioInputError(f"{path}: is a directory, not an audio file")
    try:
        info = sf.info(str(p))
        if max_seconds is not None and info.frames > max_seconds * info.samplerate:
            raise AudioInputError(
                f"{path}: audio is {info.frames / info.samplerate:.0f} s long, over the limit of {max_seconds:.0f} s"
            )
        data, rate = sf.read(str(p), dtype="float32", always_2d=True)
    except AudioInputError:
        raise
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AudioInputError(f"{path}: cannot decode audio ({msg})") from None
    wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    _check_samples(wav, str(path), max_seconds, rate)
    return np.ascontiguousarray(wav, dtype=np.float32), int(rate)


def resample(wav: np.ndarray, from_rate: int, to_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling with soxr (very high quality); identity when the rates match."""
    if from_rate <= 0:
        raise AudioInputError(f"invalid sample rate {from_rate}")
    if from_rate == to_rate:
        return wav
    return soxr.resample(wav, from_rate, to_rate, quality="VHQ").astype(np.float32, copy=False)


def load_audio(
    audio: AudioLike,
    sample_rate: int | None = None,
    *,
    target_rate: int = SAMPLE_RATE,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    name: str = "audio",
) -> torch.Tensor:
    """Return float32 mono ``[samples]`` at ``target_rate`` from a path, array or tensor.

    Arrays/tensors may be ``[samples]`` or ``[channels, samples]`` (channels ≤ 8, averaged); integer
    PCM arrays are scaled to [-1, 1]. ``sample_rate`` states the rate of an array (default: target).
    """
    if isinstance(audio, (str, os.PathLike)):
        wav, rate = read_audio_file(audio, max_seconds)
        return torch.from_numpy(resample(wav, rate, target_rate))
    if isinstance(audio, torch.Tensor):
        arr = audio.detach().cpu()
        arr = (arr.float() if arr.is_floating_point() else arr).numpy()
    elif isinstance(audio, np.ndarray):
        arr = audio
    else:
        raise MimoAudioError(
            f"{name}: expected a path, numpy array or torch tensor, got {type(audio).__name__}"
        )
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / float(-np.iinfo(arr.dtype).min)
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 2 and min(arr.shape) == 1:
        arr = arr.reshape(-1)
    if arr.ndim == 2:
        if arr.shape[0] > 8 and arr.shape[1] <= 8:
            arr = arr.T
        if arr.shape[0] > 8:
            raise AudioInputError(f"{name}: expected [samples] or [channels, samples], got shape {arr.shape}")
        arr = arr.mean(axis=0)
    if arr.ndim != 1:
        raise AudioInputError(f"{name}: expected [samples] or [channels, samples], got shape {arr.shape}")
    rate = target_rate if sample_rate is None else int(sample_rate)
    _check_samples(arr, name, max_seconds, rate)
    return torch.from_numpy(np.ascontiguousarray(resample(arr, rate, target_rate)))


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], suffix: str | None = None) -> Path:
    """Call ``write(tmp_path)`` then rename the temp file onto ``path``: no partial output on failure."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{dest.name}.", suffix=suffix or dest.suffix or ".tmp", dir=dest.parent
    )
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def write_audio(
    path: str | os.PathLike, wav: torch.Tensor | np.ndarray, sample_rate: int = SAMPLE_RATE
) -> Path:
    """Write mono float audio atomically; the format follows the extension (wav → 16-bit PCM)."""
    data = (
        wav.detach().float().cpu().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav, np.float32)
    )
    data = data.reshape(-1)
    ext = Path(path).suffix.lower()
    fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".mp3": "MP3"}.get(ext)
    if fmt is None:
        raise MimoAudioError(
            f"{path}: unsupported output format {ext or '(none)'}; use .wav, .flac, .ogg or .mp3"
        )
    subtype = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS", "MP3": "MPEG_LAYER_III"}[fmt]
    return atomic_write(
        path, lambda tmp: sf.write(tmp, np.clip(data, -1.0, 1.0), sample_rate, format=fmt, subtype=subtype)
    )
