"""HTTP serving: throughput, p50/p99 latency and time to first audio chunk at several concurrencies.

Starts the server on 127.0.0.1 in a subprocess (the parity fixture checkpoints by default, their LM
tilted so that ~70% of generated patches are speech, like a trained model's TTS) unless ``--url``
names a running server, then runs closed-loop clients: each of ``c`` clients sends
streamed TTS requests (``response_format=pcm``) back to back for ``--duration`` seconds. Reports
requests/s, generated patches/s (from /metrics), latency and time-to-first-audio percentiles, 429s,
and the server's resident memory. The speed-up line compares each concurrency with concurrency 1.

    python benchmarks/serve.py                                  # fixture model, concurrency 1, 8, 32
    python benchmarks/serve.py --concurrency 1,8,32,64 --duration 30 --max-new-steps 64
    python benchmarks/serve.py --url http://127.0.0.1:8000 --api-key KEY

Only loopback addresses are used; every loop is bounded by ``--duration``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("MIMO_PARITY_FIXTURES", ROOT.parent / "shared" / "fixtures" / "parity"))
TEXT = "The quick brown fox jumps over the lazy dog."


@dataclass
class Sample:
    status: int
    seconds: float
    first_audio: float | None
    audio_bytes: int


@dataclass
class Run:
    concurrency: int
    duration: float
    samples: list[Sample] = field(default_factory=list)
    tokens: float = 0.0
    audio_seconds: float = 0.0
    rss_mb: float | None = None

    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.status == 200]

    def summary(self) -> dict:
        ok = self.ok()
        lat = sorted(s.seconds for s in ok)
        ttfa = sorted(s.first_audio for s in ok if s.first_audio is not None)
        return {
            "concurrency": self.concurrency,
            "requests": len(ok),
            "rejected_429": sum(s.status == 429 for s in self.samples),
            "errors": sum(s.status not in (200, 429) for s in self.samples),
            "requests_per_s": len(ok) / self.duration,
            "patches_per_s": self.tokens / self.duration,
            "audio_s_per_s": self.audio_seconds / self.duration,
            "p50_latency_s": _pct(lat, 50),
            "p99_latency_s": _pct(lat, 99),
            "p50_first_audio_s": _pct(ttfa, 50),
            "p99_first_audio_s": _pct(ttfa, 99),
            "server_rss_mb": self.rss_mb,
        }


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[min(98, max(0, int(p) - 1))]


async def one_request(client: httpx.AsyncClient, body: dict) -> Sample:
    start = time.perf_counter()
    first, size = None, 0
    streamed = body["response_format"] == "pcm"
    try:
        async with client.stream("POST", "/v1/audio/speech", json=body) as r:
            async for chunk in r.aiter_bytes():
                if chunk and first is None:
                    first = time.perf_counter() - start
                size += len(chunk)
            status = r.status_code
    except httpx.HTTPError:
        status = 0
    return Sample(status, time.perf_counter() - start, first if status == 200 and streamed else None, size)


async def closed_loop(url: str, headers: dict, concurrency: int, duration: float, body: dict) -> list[Sample]:
    """``concurrency`` clients, each sending its next request when the previous one ends, for ``duration`` s."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(duration + 120.0)
    end = time.perf_counter() + duration
    samples: list[Sample] = []
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=timeout) as client:

        async def worker(i: int) -> None:
            n = 0
            while time.perf_counter() < end:
                s = await one_request(client, {**body, "seed": i * 100_000 + n})
                samples.append(s)
                n += 1
                if s.status == 429:
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return samples


def scrape(url: str, headers: dict) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", headers=headers, timeout=10).text
    out = {}
    for name in ("mimo_audio_generated_tokens_total", "mimo_audio_generated_audio_seconds_total"):
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        out[name] = float(m.group(1)) if m else 0.0
    return out


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def measure(url: str, headers: dict, concurrency: int, duration: float, body: dict, pid: int | None) -> Run:
    before = scrape(url, headers)
    t0 = time.perf_counter()
    samples = asyncio.run(closed_loop(url, headers, concurrency, duration, body))
    elapsed = time.perf_counter() - t0
    after = scrape(url, headers)
    run = Run(concurrency, elapsed, samples, rss_mb=rss_mb(pid))
    run.tokens = after["mimo_audio_generated_tokens_total"] - before["mimo_audio_generated_tokens_total"]
    run.audio_seconds = (
        after["mimo_audio_generated_audio_seconds_total"] - before["mimo_audio_generated_audio_seconds_total"]
    )
    return run


def start_server(args: argparse.Namespace, port: int) -> subprocess.Popen:
    """This script in ``--worker`` mode: the server, in its own process."""
    cmd = [
        sys.executable, __file__, "--worker", "--port", str(port),
        "--model", str(args.model), "--tokenizer", str(args.tokenizer), "--device", args.device,
        "--max-batch", str(args.max_batch), "--max-queue", str(args.max_queue),
        "--max-new-steps", str(args.max_new_steps), "--speech-share", str(args.speech_share),
    ]  # fmt: skip
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=sys.stderr)


def tilt_to_speech(model, share: float) -> float:
    """Bias the ``<|empty|>`` text logit so that about ``share`` of generated TTS patches are speech
    (bisection on eight short seeded generations); returns the share reached. The fixture LM is
    random and speaks in ~2% of TTS steps; a trained model does in most of them."""
    lm, engine = model.lm, model.engine
    head = Biased(lm.lm_head, lm.empty_text_id, 0.0)
    lm.lm_head = head
    inputs = {"text": TEXT, "seed": 0}
    reqs = [model.prepare("tts", inputs, max_new_steps=24, min_new_steps=24, seed=i) for i in range(8)]

    def measured() -> float:
        ids = [
            t
            for r in engine.generate([q.prompt for q in reqs], [q.options for q in reqs])
            for t in r.text_ids
        ]
        return sum(t == lm.empty_text_id for t in ids) / len(ids)

    lo, hi, got = 0.0, 20.0, 0.0
    for _ in range(10):
        head.bias = (lo + hi) / 2
        got = measured()
        if abs(got - share) < 0.05:
            break
        lo, hi = (head.bias, hi) if got < share else (lo, head.bias)
    return got


class Biased(torch.nn.Module):
    def __init__(self, head: torch.nn.Module, index: int, bias: float) -> None:
        super().__init__()
        self.head, self.index, self.bias = head, index, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(x)
        y[..., self.index] += self.bias
        return y


def worker(args: argparse.Namespace) -> int:
    from mimo_audio import MimoAudio
    from mimo_audio.serve import ServerConfig, run_server

    if args.threads:
        torch.set_num_threads(args.threads)
    model = MimoAudio.from_pretrained(
        args.model, args.tokenizer, device=args.device, progress=False, max_batch=args.max_batch, max_len=2048
    )
    if args.speech_share > 0:
        share = tilt_to_speech(model, args.speech_share)
        print(f"server: speech share of generated patches {share:.2f}", file=sys.stderr)
    config = ServerConfig(max_queue=args.max_queue, max_new_steps=args.max_new_steps)
    run_server(model, config, host="127.0.0.1", port=args.port, log_level="warning")
    return 0


def wait_healthy(url: str, proc: subprocess.Popen | None, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not become healthy")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=None, help="a running server (default: start one on 127.0.0.1)")
    p.add_argument("--api-key", default=os.environ.get("MIMO_AUDIO_API_KEY"))
    p.add_argument("--model", default=FIXTURES / "model")
    p.add_argument("--tokenizer", default=FIXTURES / "tokenizer")
    p.add_argument("--device", default="cpu")
    p.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts")
    p.add_argument("--duration", type=float, default=15.0, help="seconds per concurrency level")
    p.add_argument("--max-new-steps", type=int, default=32, help="generated patches per request")
    p.add_argument(
        "--free-length",
        action="store_true",
        help="let requests stop at a stop token (default: exactly --max-new-steps patches each)",
    )
    p.add_argument("--whole", action="store_true", help="whole WAV responses instead of streamed PCM")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-queue", type=int, default=64)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument(
        "--speech-share",
        type=float,
        default=None,
        help="tilt the LM so this share of generated patches is speech (default 0.7 on the fixture, else 0)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads of the server (default: torch's)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    if args.speech_share is None:
        args.speech_share = 0.7 if Path(args.model).resolve() == (FIXTURES / "model").resolve() else 0.0
    if args.worker:
        return worker(args)
    if args.url and not args.url.startswith(("http://127.", "http://localhost", "http://[::1]")):
        raise SystemExit("--url must be a loopback address")
    levels = [int(c) for c in args.concurrency.split(",")]
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    fmt = "wav" if args.whole else "pcm"
    body = {"model": "mimo-audio", "input": TEXT, "voice": "alloy", "response_format": fmt}
    body["max_new_steps"] = args.max_new_steps
    if not args.free_length:
        body["min_new_steps"] = args.max_new_steps
    proc = None
    url = args.url
    if url is None:
        from mimo_audio.serve import free_port

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(args, port)
    try:
        wait_healthy(url, proc)
        measure(url, headers, max(levels), args.warmup, body, None)
        runs = [measure(url, headers, c, args.duration, body, proc.pid if proc else None) for c in levels]
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    rows = [r.summary() for r in runs]
    base = rows[0]["requests_per_s"] or float("nan")
    kind = "whole wav" if args.whole else "streamed pcm"
    print(f"{kind}, {args.max_new_steps} patches/request, {args.duration:g} s per level, {url}")
    print(
        f"{'conc':>4} {'req':>6} {'429':>5} {'err':>4} {'req/s':>8} {'patch/s':>9} {'audio/s':>8} {'p50 s':>7} {'p99 s':>7} "
        f"{'ttfa50':>7} {'ttfa99':>7} {'speedup':>7} {'rss MB':>7}"
    )
    for r in rows:
        print(
            f"{r['concurrency']:>4} {r['requests']:>6} {r['rejected_429']:>5} {r['errors']:>4} "
            f"{r['requests_per_s']:>8.2f} {r['patches_per_s']:>9.1f} {r['audio_s_per_s']:>8.1f} {_f(r['p50_latency_s'])} "
            f"{_f(r['p99_latency_s'])} {_f(r['p50_first_audio_s'])} {_f(r['p99_first_audio_s'])} "
            f"{r['requests_per_s'] / base:>7.2f} {_f(r['server_rss_mb'], 7, 0)}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"max_new_steps": args.max_new_steps, "runs": rows}, indent=2))
    return 0


def _f(x: float | None, width: int = 7, digits: int = 3) -> str:
    return f"{'-':>{width}}" if x is None else f"{x:>{width}.{digits}f}"


if __name__ == "__main__":
    sys.exit(main())
