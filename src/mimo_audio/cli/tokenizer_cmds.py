"""``mimo-audio tokenize | detokenize | reconstruct``: the audio tokenizer from the command line.

Thin wrappers over :class:`mimo_audio.tokenizer.AudioTokenizer`. Outputs are written atomically
(temp file + rename), so a failed run never leaves a partial file behind.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ..audio import DEFAULT_MAX_SECONDS, atomic_write, write_audio
from ..errors import MimoAudioError
from ..tokenizer import AudioTokenizer

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
CODES_KEY = "codes"


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tokenizer",
        default=os.environ.get("MIMO_AUDIO_TOKENIZER"),
        metavar="DIR",
        help="tokenizer checkpoint folder (env MIMO_AUDIO_TOKENIZER; default: the installed default model's)",
    )
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...); default cpu")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16", "float16"),
        help="weights/activations dtype (mel and RVQ stay float32); default float32",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary on stderr")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the tokenizer commands to the ``mimo-audio`` parser."""
    p = subparsers.add_parser(
        "tokenize",
        help="audio files → RVQ codes (safetensors, key 'codes' [n_q, frames] int64)",
        description="Encode audio files to 25 Hz RVQ codes. One input and an --out ending in "
        ".safetensors writes that file; otherwise --out is a directory of <stem>.safetensors.",
    )
    _add_common(p)
    p.add_argument("inputs", nargs="+", metavar="IN", help="audio files (any rate/channels; resampled)")
    p.add_argument("--out", required=True, metavar="DIR_OR_FILE", help="output file or directory")
    p.add_argument("--batch-size", type=int, default=1, help="clips encoded per batch (default 1)")
    p.add_argument(
        "--max-seconds", type=float, default=DEFAULT_MAX_SECONDS, help="reject longer audio (default 3600)"
    )
    p.set_defaults(func=cmd_tokenize)

    p = subparsers.add_parser(
        "detokenize",
        help="RVQ codes → waveform",
        description="Decode codes (safetensors with key 'codes' [k, frames], or .npy) to 24 kHz audio.",
    )
    _add_common(p)
    p.add_argument("codes", metavar="CODES", help="codes file (.safetensors key 'codes', or .npy)")
    p.add_argument("--out", required=True, metavar="OUT", help="output audio (.wav/.flac/.ogg/.mp3)")
    p.add_argument("--codebooks", type=int, default=None, help="use the first N codebooks (default: all)")
    p.set_defaults(func=cmd_detokenize)

    p = subparsers.add_parser(
        "reconstruct",
        help="audio → codes → audio round trip",
        description="Encode then decode an audio file (the first --codebooks codebooks, default 8 as the LM).",
    )
    _add_common(p)
    p.add_argument("input", metavar="IN", help="input audio file")
    p.add_argument("output", metavar="OUT", help="output audio (.wav/.flac/.ogg/.mp3)")
    p.add_argument("--codebooks", type=int, default=8, help="codebooks used for decoding (default 8)")
    p.add_argument(
        "--max-seconds", type=float, default=DEFAULT_MAX_SECONDS, help="reject longer audio (default 3600)"
    )
    p.set_defaults(func=cmd_reconstruct)


def _load(args: argparse.Namespace) -> AudioTokenizer:
    max_seconds = getattr(args, "max_seconds", DEFAULT_MAX_SECONDS)
    if max_seconds is not None and max_seconds <= 0:
        raise MimoAudioError(f"--max-seconds must be positive, got {max_seconds}")
    folder = args.tokenizer
    if not folder:
        from ..defaults import default_model_dirs

        folder = default_model_dirs()[1]
    return AudioTokenizer.from_pretrained(
        folder, device=args.device, dtype=args.dtype, max_seconds=max_seconds
    )


def _check_audio_out(path: str) -> Path:
    out = Path(path)
    if out.suffix.lower() not in AUDIO_SUFFIXES:
        raise MimoAudioError(f"{path}: output must end with one of {', '.join(AUDIO_SUFFIXES)}")
    if out.is_dir():
        raise MimoAudioError(f"{path}: is a directory")
    return out


def _check_inputs(paths: list[str]) -> None:
    for path in paths:
        p = Path(path)
        if not p.exists():
            raise MimoAudioError(f"{path}: no such file")
        if p.is_dir():
            raise MimoAudioError(f"{path}: is a directory, not an audio file")


def _codebooks(tok: AudioTokenizer, n: int | None, available: int) -> int:
    n = available if n is None else n
    if not 1 <= n <= available:
        raise MimoAudioError(f"--codebooks must be in 1..{available}, got {n}")
    return n


def _save_codes(path: Path, codes: torch.Tensor, tok: AudioTokenizer, source: str) -> None:
    metadata = {
        "sample_rate": str(tok.sample_rate),
        "frame_rate": str(tok.frame_rate),
        "source": Path(source).name,
    }
    tensors = {CODES_KEY: codes.to(torch.int64).contiguous()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata), suffix=".safetensors")


def cmd_tokenize(args: argparse.Namespace) -> int:
    inputs: list[str] = args.inputs
    if args.batch_size < 1:
        raise MimoAudioError(f"--batch-size must be ≥ 1, got {args.batch_size}")
    _check_inputs(inputs)
    out = Path(args.out)
    single_file = len(inputs) == 1 and out.suffix == ".safetensors"
    if single_file:
        if out.is_dir():
            raise MimoAudioError(f"{out}: is a directory")
        targets = [out]
    else:
        if out.suffix == ".safetensors":
            raise MimoAudioError(f"{out}: with several inputs --out must be a directory")
        if out.exists() and not out.is_dir():
            raise MimoAudioError(f"{out}: exists and is not a directory")
        stems = [Path(p).stem for p in inputs]
        dupes = sorted({s for s in stems if stems.count(s) > 1})
        if dupes:
            raise MimoAudioError(f"several inputs share the name {dupes[0]!r}; outputs would collide")
        targets = [out / f"{s}.safetensors" for s in stems]
    tok = _load(args)
    with tqdm(total=len(inputs), unit="file", file=sys.stderr, disable=args.quiet or len(inputs) == 1) as bar:
        for i in range(0, len(inputs), args.batch_size):
            batch = inputs[i : i + args.batch_size]
            for path, target, codes in zip(batch, targets[i:], tok.encode_batch(batch), strict=False):
                _save_codes(target, codes, tok, path)
                bar.update(1)
    if not args.quiet:
        where = targets[0] if single_file else f"{out}/"
        print(f"tokenized {len(inputs)} file(s) → {where}", file=sys.stderr)
    return 0


def read_codes(path: str) -> torch.Tensor:
    """Codes ``[k, frames]`` from a safetensors file (key ``codes``) or a ``.npy`` array."""
    p = Path(path)
    if not p.is_file():
        raise MimoAudioError(f"{path}: no such file" if not p.exists() else f"{path}: is not a file")
    if p.suffix == ".npy":
        try:
            return torch.from_numpy(np.load(p, allow_pickle=False))
        except (ValueError, OSError) as e:
            raise MimoAudioError(f"{path}: not a readable .npy array ({e})".splitlines()[0]) from None
    try:
        tensors = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as e:
        raise MimoAudioError(f"{path}: not a readable safetensors file ({e})".splitlines()[0]) from None
    if CODES_KEY not in tensors:
        raise MimoAudioError(f"{path}: no tensor named '{CODES_KEY}' (found: {', '.join(sorted(tensors))})")
    return tensors[CODES_KEY]


def cmd_detokenize(args: argparse.Namespace) -> int:
    out = _check_audio_out(args.out)
    codes = read_codes(args.codes)
    tok = _load(args)
    codes = tok.check_codes(codes)
    codes = codes[: _codebooks(tok, args.codebooks, codes.shape[0])]
    wav = tok.decode_chunked(codes)
    write_audio(out, wav, tok.sample_rate)
    if not args.quiet:
        print(
            f"decoded {codes.shape[1]} frames ({wav.numel() / tok.sample_rate:.2f} s) → {out}",
            file=sys.stderr,
        )
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    out = _check_audio_out(args.output)
    _check_inputs([args.input])
    tok = _load(args)
    n = _codebooks(tok, args.codebooks, tok.num_quantizers)
    codes = tok.encode(args.input)[:n]
    wav = tok.decode_chunked(codes)
    write_audio(out, wav, tok.sample_rate)
    if not args.quiet:
        print(f"reconstructed {args.input} with {n} codebooks → {out}", file=sys.stderr)
    return 0
