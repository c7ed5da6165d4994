"""``tokenizer``: audio tokenizer reconstruction quality — encode (batched), keep the first
``codebooks`` codebooks, decode as ``mimo-audio reconstruct`` does, then compare with the input.

Per item: PESQ-NB (8 kHz) and PESQ-WB (16 kHz), STOI, speaker similarity input ↔ reconstruction.
The bitrate of the code stream is ``frame_rate · Σ log2(codebook_size_i)`` over the kept codebooks
(bits/s; the official tokenizer's first 8 codebooks: 25 Hz · (10 + 10 + 6·7) bits = 1550 bit/s).

Manifest fields: ``audio``; optional ``language``, ``category``, ``id``. Reconstructions are saved
under ``outputs-tokenizer-<hash>/``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, ClassVar

from ..manifest import FieldSpec, Item
from ..metrics.quality import pesq_nb, pesq_wb, stoi
from ..metrics.speaker import speaker_similarity
from .base import Metric, Suite, mean, parallel_map, read_clip, save_output

METRICS = ("pesq_nb", "pesq_wb", "stoi", "speaker_similarity")


def bitrate(codebook_sizes: list[int] | tuple[int, ...], frame_rate: float, codebooks: int) -> float:
    """Bits per second of ``codebooks`` codebooks of the given sizes at ``frame_rate`` Hz."""
    return frame_rate * sum(math.log2(n) for n in codebook_sizes[:codebooks])


class TokenizerSuite(Suite):
    name = "tokenizer"
    spec: ClassVar[FieldSpec] = FieldSpec(required=("audio",), language=False)
    primary: ClassVar[Metric] = Metric("pesq_wb", "PESQ-WB", higher_is_better=True, aggregate="pesq_wb")

    def __init__(
        self,
        tokenizer_dir: str | os.PathLike | None,
        *,
        codebooks: int = 8,
        device: str | None = None,
        dtype: str | None = None,
        workers: int = 2,
    ) -> None:
        """``device`` defaults to CUDA when available; ``dtype`` to float32 (mel and RVQ stay float32)."""
        self.tokenizer_dir, self.codebooks, self.workers = tokenizer_dir, codebooks, workers
        self.device, self.dtype = device, dtype or "float32"
        self._tok = None
        self._bitrate: float | None = None

    def settings(self) -> dict[str, Any]:
        return {
            "tokenizer": str(Path(self.tokenizer_dir).resolve()) if self.tokenizer_dir else None,
            "codebooks": self.codebooks,
            "dtype": self.dtype,
        }

    def tokenizer(self):
        """The audio tokenizer, loaded on first use."""
        if self._tok is None:
            import torch

            from ...errors import MimoAudioError
            from ...tokenizer import AudioTokenizer

            if not self.tokenizer_dir:
                raise MimoAudioError("the tokenizer suite needs --tokenizer (or MIMO_AUDIO_TOKENIZER)")
            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            tok = AudioTokenizer.from_pretrained(self.tokenizer_dir, device=device, dtype=self.dtype)
            if not 1 <= self.codebooks <= tok.num_quantizers:
                raise MimoAudioError(f"--codebooks must be in 1..{tok.num_quantizers}, got {self.codebooks}")
            self._tok = tok
        return self._tok

    def setup(self) -> None:
        self.tokenizer()

    def bitrate(self) -> float:
        """Bits/s of the kept codebooks (read from the tokenizer's config.json; no weights loaded)."""
        if self._bitrate is None:
            from ...checkpoint import read_config, resolve_dir
            from ...tokenizer.config import TokenizerConfig

            cfg = TokenizerConfig.from_dict(read_config(resolve_dir(self.tokenizer_dir)))
            self._bitrate = bitrate(cfg.codebook_sizes, cfg.frame_rate, self.codebooks)
        return self._bitrate

    def evaluate(self, items: list[Item], work_dir: Path) -> list[dict[str, Any]]:
        tok = self.tokenizer()
        sr = tok.sample_rate
        clips = [read_clip(it["audio"], sr) for it in items]
        codes = tok.encode_batch([c.copy() for c in clips], sr)
        # decoded as `mimo-audio reconstruct` does: the pipeline's chunked decode of the kept codebooks
        recon = [tok.decode_chunked(c[: self.codebooks]).float().cpu().numpy() for c in codes]

        def score(k: int) -> dict[str, Any]:
            ref, out = clips[k], recon[k]
            return {
                "pesq_nb": pesq_nb(ref, out, sr),
                "pesq_wb": pesq_wb(ref, out, sr),
                "stoi": stoi(ref, out, sr),
                "speaker_similarity": speaker_similarity(ref, out, sr),
            }

        scores = parallel_map(score, range(len(items)), self.workers)
        return [
            {
                "audio": it["audio"],
                "output_audio": save_output(work_dir, it, out, sr),
                "duration": ref.size / sr,
                "frames": int(code.shape[1]),
                **s,
            }
            for it, ref, out, code, s in zip(items, clips, recon, codes, scores, strict=True)
        ]

    def aggregate(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in METRICS:
            value = mean(records, key)
            if value is not None:
                out[key] = value
        out["pesq_failures"] = sum(1 for r in records if not _finite(r.get("pesq_wb")))
        out["bitrate_bps"] = self.bitrate()
        return out


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)
