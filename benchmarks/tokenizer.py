"""Audio tokenizer speed on CPU at the official sizes (random weights, no checkpoint needed).

Measures encode and decode real-time factors (RTF = compute seconds / audio seconds) at batch 1 and
batch N, and the peak resident memory of each phase, for three variants measured in the same run:

* ``fp32 dense-vocoder``: float32, the vocoder's windowed attention as a full T × T masked
  attention (the reference's formulation with flash-attn replaced by SDPA) — the baseline;
* ``fp32``: float32, local block attention in the vocoder;
* ``bf16``: bfloat16 weights/activations (mel and RVQ stay float32), local attention.

    python benchmarks/tokenizer.py                  # 10 s clips, 2 threads, batches 1 and 8
    python benchmarks/tokenizer.py --seconds 5 --batch 4 --repeats 1

A CPU/wall ratio well below the thread count flags a measurement slowed by other processes.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mimo_audio.tokenizer import AudioTokenizer, transformer

OFFICIAL = {
    "sampling_rate": 24000,
    "hop_length": 240,
    "nfft": 960,
    "window_size": 960,
    "n_mels": 128,
    "d_model": 1280,
    "kernel_size": 3,
    "stride_size": 2,
    "avg_pooler": 2,
    "scale_embedding": False,
    "encoder_layers": 32,
    "encoder_attention_heads": 20,
    "encoder_ffn_dim": 5120,
    "encoder_skip_layer_id": 3,
    "decoder_layers": 32,
    "decoder_attention_heads": 20,
    "decoder_ffn_dim": 5120,
    "decoder_causal": True,
    "vocoder_dim": 256,
    "vocoder_intermediate_dim": 1024,
    "vocoder_num_layers": 16,
    "vocoder_attention_heads": 16,
    "vocoder_attn_window_size": [40, 10],
    "num_quantizers": 20,
    "codebook_size": [1024, 1024] + [128] * 18,
    "threshold_ema_dead_code": 2,
}


def rss_mb() -> tuple[float, float]:
    """Current and peak resident set size of this process, in MiB (Linux /proc)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def reset_peak() -> None:
    """Reset VmHWM to the current RSS so each phase reports its own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def timed(fn: Callable[[], object]) -> tuple[float, float, float]:
    """Wall time of one call, its CPU/wall ratio and the call's peak RSS (MiB).

    The CPU/wall ratio is ≈ the thread count on an idle machine; much less means other processes
    took the cores and the time is inflated.
    """
    reset_peak()
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    wall = time.perf_counter() - start
    return wall, (time.process_time() - cpu) / wall, rss_mb()[1]


def clips(n: int, seconds: float, rate: int) -> list[torch.Tensor]:
    """Speech-like test signals: harmonic tones with a wandering pitch and a little noise."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(int(seconds * rate)) / rate
    out = []
    for i in range(n):
        f0 = 110 + 20 * i + 30 * torch.sin(2 * math.pi * 0.7 * t)
        phase = 2 * math.pi * torch.cumsum(f0, 0) / rate
        wav = sum(torch.sin(k * phase) / k for k in range(1, 6)) * 0.1
        out.append((wav + 0.01 * torch.randn(t.shape, generator=g)).float())
    return out


def worker(args: argparse.Namespace) -> dict:
    """Time every variant of one dtype in this process (its RSS is then that dtype's alone)."""
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.worker)
    tok = AudioTokenizer.from_config(OFFICIAL, dtype=dtype)
    rate = tok.sample_rate
    audio = clips(args.batch, args.seconds, rate)
    frames = tok.output_frames(1 + audio[0].numel() // tok.config.hop_length)
    g = torch.Generator().manual_seed(1)
    codes = [
        torch.stack([torch.randint(0, n, (frames,), generator=g) for n in tok.config.codebook_sizes[:8]])
        for _ in range(args.batch)
    ]
    tok.encode(audio[0][: rate // 2])  # warm-up: allocator, oneDNN kernels
    tok.decode(codes[0][:, :10])
    name = "fp32" if dtype == torch.float32 else "bf16"
    jobs = [(f"{name} dense-vocoder", False, 1)] if dtype == torch.float32 else []
    jobs.append((name, True, 1))
    if dtype != torch.float32 or args.full:
        jobs.append((name, True, args.batch))
    ops = {
        "encode": lambda b: tok.encode(audio[0]) if b == 1 else tok.encode_batch(audio[:b], batch_size=b),
        "decode": lambda b: tok.decode(codes[0]) if b == 1 else tok.decode_batch(codes[:b]),
    }
    best: dict[str, tuple[float, float, float]] = {}
    # Batch-1 jobs are repeated, interleaved so that a busy spell does not hit one variant only,
    # and the best time is kept; the larger batch runs once.
    for repeat in range(args.repeats):
        for variant, local, batch in jobs:
            if batch > 1 and repeat > 0:
                continue
            transformer.LOCAL_ATTENTION = local
            for op, fn in ops.items():
                result = timed(lambda fn=fn, batch=batch: fn(batch))
                key = f"{variant}|{batch}|{op}"
                if key not in best or result[0] < best[key][0]:
                    best[key] = result
    return {"params": sum(p.numel() for p in tok.parameters()), "best": best}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="audio per clip (default 10)")
    ap.add_argument("--batch", type=int, default=8, help="the larger batch size (default 8)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--repeats", type=int, default=2, help="timed repeats at batch 1, best kept (default 2)")
    ap.add_argument("--full", action="store_true", help="also time float32 at the larger batch")
    ap.add_argument("--worker", choices=("float32", "bfloat16"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    print(f"official-size tokenizer, random weights; {args.threads} threads, {args.seconds:g} s clips")
    best: dict[str, tuple[float, float, float]] = {}
    for dtype in ("float32", "bfloat16"):  # one process per dtype: clean peak RSS for each
        argv = [sys.executable, __file__, "--worker", dtype, *sys.argv[1:]]
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        print(f"{dtype}: {result['params'] / 1e9:.2f} B parameters")
        best.update(result["best"])

    print(
        f"\n{'variant':<19} {'batch':>5} {'encode RTF':>11} {'decode RTF':>11} {'peak RSS MiB':>13}  cpu/wall"
    )
    rtf = {}
    for key in dict.fromkeys(k.rsplit("|", 1)[0] for k in best):
        name, batch = key.split("|")
        seconds = args.seconds * int(batch)
        (enc, enc_cpu, enc_mem), (dec, dec_cpu, dec_mem) = best[f"{key}|encode"], best[f"{key}|decode"]
        rtf[(name, batch)] = (enc / seconds, dec / seconds)
        flag = "  [contended]" if min(enc_cpu, dec_cpu) < 0.8 * args.threads else ""
        print(
            f"{name:<19} {batch:>5} {enc / seconds:>11.3f} {dec / seconds:>11.3f} "
            f"{max(enc_mem, dec_mem):>13.0f}  {enc_cpu:.2f}/{dec_cpu:.2f}{flag}"
        )
    base = rtf[("fp32 dense-vocoder", "1")]
    print("\nspeed-up over the fp32 dense-vocoder baseline at batch 1 (per audio second):")
    for (name, batch), (enc, dec) in list(rtf.items())[1:]:
        print(f"  {name:<5} batch {batch}: encode x{base[0] / enc:.2f}  decode x{base[1] / dec:.2f}")


if __name__ == "__main__":
    main()
