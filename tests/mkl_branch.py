"""Log-mels computed under each of MKL's FFT code paths, for the mel parity tests.

torch's CPU FFT is MKL's, and MKL picks its kernels by CPU: AVX2/AVX-512 machines run fused
multiply-add kernels, others (and MKL's reproducible "CNR" mode, ``MKL_CBWR=COMPATIBLE``) run the
SSE ones. The two round differently. In mel bins some 80 dB below a frame's peak (espeak-ng clips
have next to nothing above 11 kHz) that rounding moves the log-mel by up to ~3e-3, more than the
fixtures' 1e-4 tolerance; everywhere else all paths agree far inside it. A fixture set carries the
rounding of the machine that produced it, so the parity tests compare our front end run on each
path — the automatic one in-process, the reproducible one in a child interpreter, since MKL fixes
its branch when it first runs — and require the fixture to match one of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

# MKL reads this before its first call, so it only takes effect in a fresh process.
REPRODUCIBLE_BRANCH = {"MKL_CBWR": "COMPATIBLE"}

_CHILD = """
import sys
from safetensors.torch import save_file
from mimo_audio import AudioTokenizer
tok = AudioTokenizer.from_pretrained(sys.argv[1])
clips = dict(zip(sys.argv[3::2], sys.argv[4::2]))
save_file({name: tok.mel(path).contiguous() for name, path in clips.items()}, sys.argv[2])
"""


def mels_on_reproducible_branch(tokenizer_dir: Path, clips: dict[str, Path]) -> dict[str, torch.Tensor]:
    """``AudioTokenizer.mel`` of each clip, computed in a child process on MKL's CNR branch.

    Returns ``{name: [frames, n_mels] float32}``. Raises ``RuntimeError`` with the child's stderr
    if it fails.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("MKL_")}
    env.update(REPRODUCIBLE_BRANCH)
    env["OMP_NUM_THREADS"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "mels.safetensors"
        args = [str(tokenizer_dir), str(out)]
        for name, path in clips.items():
            args += [name, str(path)]
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, *args], env=env, capture_output=True, text=True, timeout=300
        )
        if proc.returncode != 0:
            raise RuntimeError(f"mel child process failed:\n{proc.stderr}")
        return load_file(str(out))


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference; ``inf`` when the shapes differ."""
    return (a - b).abs().max().item() if a.shape == b.shape else float("inf")
