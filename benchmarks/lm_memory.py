"""Peak memory of the official 7B LM shapes on CPU, loaded from disk like a real checkpoint.

Writes a random-weight checkpoint with the official 7B sizes (SPEC §1.2) in the official on-disk
format (sharded ``model-XXXXX-of-YYYYY.safetensors`` + index, bfloat16) once, then, in a fresh
process per variant, loads it with :func:`mimo_audio.lm.load_lm`, allocates the engine's static
caches for ``--max-len`` patches, prefills a ``--prompt-patches`` prompt and decodes ``--steps``
patches, and reports the process's peak resident memory next to the weight and cache sizes.

    python benchmarks/lm_memory.py --dir /tmp/mimo-7b-random            # bfloat16 and int8
    python benchmarks/lm_memory.py --dir /tmp/mimo-7b-random --variants bfloat16 --max-len 8192

The checkpoint takes ≈ 16 GB of disk; building it needs ≈ 16 GB of RAM (weights are created one
tensor at a time in bfloat16).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_MODEL = ROOT.parent / "shared" / "fixtures" / "parity" / "model"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

OFFICIAL_7B = dict(
    architectures=["MiMoAudioForCausalLM"],
    model_type="qwen2",
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=36,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    hidden_act="silu",
    rms_norm_eps=1e-6,
    rope_theta=640000,
    max_position_embeddings=8192,
    vocab_size=151680,
    tie_word_embeddings=False,
    speech_vocab_size="1025-1025-129-129-129-129-129-129",
    speech_zeroemb_idx="1024-1024-128-128-128-128-128-128",
    delay_pattern="0-1-2-3-4-5-6-7",
    group_size=4,
    audio_channels=8,
    local_dim=1024,
    local_layers=16,
    local_attn_heads=64,
    local_ffn_dim=4096,
    input_local_layers=6,
    input_local_dim=1024,
    input_full_attention=True,
    torch_dtype="bfloat16",
)


def write_checkpoint(folder: Path, shard_bytes: int = 2 * 1024**3) -> None:
    """Random official-7B weights (bfloat16) in the official sharded layout, plus the fixture's text tokenizer."""
    from mimo_audio.checkpoint import save_weights
    from mimo_audio.lm import LMConfig
    from mimo_audio.lm.model import random_lm

    if (folder / "model.safetensors.index.json").is_file():
        return
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    model = random_lm(LMConfig.from_dict(OFFICIAL_7B), empty_text_id=5, dtype=torch.bfloat16)
    print(f"built random 7B in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    state = model.state_dict()
    total = sum(v.numel() * v.element_size() for v in state.values())
    save_weights(tmp, state, shard_bytes)
    (tmp / "config.json").write_text(json.dumps(OFFICIAL_7B, indent=1))
    for f in TOKENIZER_FILES:
        shutil.copy(FIXTURE_MODEL / f, tmp / f)
    tmp.rename(folder)
    print(f"wrote {total / 2**30:.2f} GiB to {folder}", file=sys.stderr, flush=True)


class AnonPeak:
    """Samples this process's anonymous resident memory (``RssAnon``, /proc/self/status) in a thread.

    ``ru_maxrss`` also counts the checkpoint's file pages while safetensors has them mapped; those
    are page cache the kernel can drop, so the anonymous part is what must fit in RAM.
    """

    def __init__(self, every: float = 0.02) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    @staticmethod
    def now() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
        return 0

    def _run(self, every: float) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(every)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self.now())


def measure(folder: Path, variant: str, max_len: int, prompt_patches: int, steps: int) -> dict:
    """Load, allocate caches, prefill and decode; returns sizes, timings and peak memory (this process)."""
    from mimo_audio.lm import GREEDY, GenerationOptions, Generator, load_lm

    torch.manual_seed(0)
    sampler = AnonPeak()
    t0 = time.perf_counter()
    quantize = "int8" if variant == "int8" else None
    model = load_lm(folder, dtype=torch.bfloat16, quantize=quantize, optimize=False)
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    model.optimize_for_inference()
    load_s = time.perf_counter() - t0
    anon_loaded = sampler.peak
    cfg = model.config
    G, C = cfg.group_size, cfg.audio_channels
    ids = torch.full((1 + C, G * prompt_patches), -100, dtype=torch.long)
    ids[0, ::G] = torch.randint(20, 600, (prompt_patches,))
    ids[1:] = torch.tensor(cfg.speech_zeroemb_idx)[:, None]
    engine = Generator(model, max_batch=1, max_len=max_len)
    opts = GenerationOptions(text_sampler=GREEDY, speech_sampler=GREEDY, max_new_steps=steps + 1)
    engine.add(ids, opts)
    t1 = time.perf_counter()
    engine.step()  # prefill + first patch
    prefill_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    n = 0
    while engine.num_active:
        engine.step()
        n += 1
    step_s = (time.perf_counter() - t2) / max(n, 1)
    return dict(
        variant=variant,
        max_len=max_len,
        load_s=load_s,
        weights_gib=weights / 2**30,
        cache_gib=engine.memory_bytes / 2**30,
        prefill_s=prefill_s,
        s_per_patch=step_s,
        anon_load_peak_gib=anon_loaded / 2**30,
        anon_peak_gib=sampler.stop() / 2**30,
        peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/mimo-7b-random"), help="checkpoint folder")
    ap.add_argument("--variants", nargs="+", default=["bfloat16", "int8"], choices=["bfloat16", "int8"])
    ap.add_argument("--max-len", type=int, default=8192, help="cache length in patches")
    ap.add_argument("--prompt-patches", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one", metavar="VARIANT", help=argparse.SUPPRESS)  # child process: one variant
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(measure(args.dir, args.one, args.max_len, args.prompt_patches, args.steps)))
        return
    write_checkpoint(args.dir)
    for v in args.variants:
        cmd = [sys.executable, __file__, "--dir", str(args.dir), "--one", v, "--max-len", str(args.max_len)]
        cmd += ["--prompt-patches", str(args.prompt_patches), "--steps", str(args.steps)]
        cmd += ["--threads", str(args.threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(
            f"{r['variant']:>8}: weights {r['weights_gib']:.2f} GiB + caches {r['cache_gib']:.2f} GiB "
            f"({r['max_len']} patches)  peak anonymous memory {r['anon_peak_gib']:.2f} GiB "
            f"(while loading {r['anon_load_peak_gib']:.2f}; peak RSS with mapped file pages "
            f"{r['peak_rss_gib']:.2f})  load {r['load_s']:.0f} s  "
            f"prefill {r['prefill_s']:.1f} s  {r['s_per_patch']:.2f} s/patch",
            flush=True,
        )


if __name__ == "__main__":
    main()
