"""Load on a live server process on 127.0.0.1 (fixture checkpoints).

Short form (default): 64 concurrent clients for a few seconds: every request ends in 200 or 429
(with Retry-After), the server stays up, its memory stays bounded; and 32 concurrent clients
share engine steps (mean step batch >= 16, read from /metrics) for at least 2.5x the requests/s of
one client sending requests one after another (``benchmarks/serve.py`` measures the 4x target). The long form (``-m slow``) runs the 64 clients for a minute. ``benchmarks/serve.py``
reports latency percentiles and time to first audio.

The fixture LM is random: left alone it emits a speech patch in ~2% of TTS steps, where a trained
model speaks in most of them. The server process (this file run as a script) adds a bias to the
``<|empty|>`` logit so that about 70% of the patches are speech, as benchmarks/generate.py does,
so the patch decoder and audio decoding do realistic work. It runs torch on one thread, so that
the server and the clients share the two CPU cores without oversubscription.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import torch

from mimo_audio.serve import free_port

from conftest import PARITY_DIR, ROOT

MAX_BATCH, MAX_QUEUE = 32, 16
STEPS = 32  # patches per request (fixed: min = max, so both runs do the same work per request)
ARTIFACTS = Path(os.environ.get("MIMO_AUDIO_ARTIFACTS", ROOT / "tmp" / "artifacts"))


@pytest.fixture(scope="module")
def server():
    port = free_port()
    cmd = [sys.executable, __file__, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, f"the server exited with code {proc.returncode}"
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.2)
    yield url, proc
    proc.terminate()
    proc.wait(30)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def body(seed: int, steps: int = STEPS) -> dict:
    return {
        "model": "m",
        "input": "The quick brown fox jumps over the lazy dog.",
        "voice": "alloy",
        "response_format": "wav",
        "seed": seed,
        "max_new_steps": steps,
        "min_new_steps": steps,
    }


async def clients(url: str, n: int, seconds: float, steps: int = STEPS) -> tuple[list[int], float, list[str]]:
    """``n`` closed-loop clients for ``seconds``; returns statuses, elapsed seconds, Retry-After values."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    statuses: list[int] = []
    retry_after: list[str] = []
    start = time.perf_counter()
    end = start + seconds
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:

        async def worker(i: int) -> None:
            k = 0
            while time.perf_counter() < end:
                try:
                    r = await client.post("/v1/audio/speech", json=body(i * 10_000 + k, steps))
                    statuses.append(r.status_code)
                    if r.status_code == 429:
                        retry_after.append(r.headers.get("retry-after", ""))
                        await asyncio.sleep(0.02)
                except httpx.HTTPError as e:
                    statuses.append(-1)
                    print("client error:", repr(e))
                k += 1

        await asyncio.gather(*(worker(i) for i in range(n)))
    return statuses, time.perf_counter() - start, retry_after


def overload(url: str, pid: int, seconds: float) -> dict:
    asyncio.run(clients(url, 64, 1.0, steps=8))  # warm up: caches, allocator pools, thread pools
    before = rss_mb(pid)
    statuses, _, retry_after = asyncio.run(clients(url, 64, seconds))
    after = rss_mb(pid)
    counts = Counter(statuses)
    assert set(counts) <= {200, 429}, counts
    assert counts[200] > 0 and counts[429] > 0, counts  # 64 clients > 32 slots + 16 queued
    assert all(v.isdigit() and int(v) >= 1 for v in retry_after)
    health = httpx.get(f"{url}/health", timeout=5).json()
    assert health["status"] == "ok"
    return {"statuses": dict(counts), "rss_before_mb": before, "rss_after_mb": after}


def test_64_clients_only_success_or_429(server):
    url, proc = server
    out = overload(url, proc.pid, 4.0)
    assert out["rss_after_mb"] - out["rss_before_mb"] < 150, out
    deadline = time.monotonic() + 10
    while httpx.get(f"{url}/health").json()["active"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert httpx.get(f"{url}/health").json()["active"] == 0
    _save("serve_overload.json", out)


def step_batch_sizes(url: str) -> tuple[float, int]:
    """(sum, count) of the server's ``mimo_audio_step_batch_size`` histogram: active requests per
    engine step, summed over steps, and the number of steps."""
    body = httpx.get(f"{url}/metrics", timeout=5).text
    values = dict(
        line.split()[:2] for line in body.splitlines() if line.startswith("mimo_audio_step_batch_size_")
    )
    return float(values["mimo_audio_step_batch_size_sum"]), int(
        float(values["mimo_audio_step_batch_size_count"])
    )


def test_batched_serving_shares_steps_and_outpaces_sequential(server):
    """32 concurrent clients share engine steps (the mean step batch, from /metrics, is at least 16),
    and that pays: at least 2.5x the requests/s of one client. The 4x target is measured in
    ``benchmarks/serve.py`` (its speed-up line), not asserted here: a timed ratio near its target
    fails on a busy machine."""
    url, _ = server
    asyncio.run(clients(url, 32, 1.0))  # warm up at full batch
    sequential, batched, mean_batch = [], [], []
    for _ in range(3):  # interleaved rounds, best of each: other load on the machine hits both alike
        statuses, seconds, _ = asyncio.run(clients(url, 1, 2.5))
        assert set(statuses) == {200}
        sequential.append(len(statuses) / seconds)
        total0, steps0 = step_batch_sizes(url)
        statuses, seconds, _ = asyncio.run(clients(url, 32, 2.5))
        total1, steps1 = step_batch_sizes(url)
        assert set(statuses) == {200} and steps1 > steps0
        batched.append(len(statuses) / seconds)
        mean_batch.append((total1 - total0) / (steps1 - steps0))
    ratio = max(batched) / max(sequential)
    result = {
        "patches_per_request": STEPS,
        "sequential_rps": sequential,
        "batched32_rps": batched,
        "mean_step_batch": mean_batch,
        "ratio": ratio,
    }
    print(
        f"throughput: sequential {max(sequential):.2f} req/s, 32 clients {max(batched):.2f} req/s, x{ratio:.1f}"
        f" (mean step batch {max(mean_batch):.1f})"
    )
    _save("serve_throughput.json", result)
    assert max(mean_batch) >= 16, result
    assert ratio >= 2.5, result


@pytest.mark.slow
def test_64_clients_for_a_minute(server):
    url, proc = server
    out = overload(url, proc.pid, 60.0)
    assert out["rss_after_mb"] - out["rss_before_mb"] < 100, out
    _save("serve_overload_long.json", out)


def _save(name: str, data: dict) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / name).write_text(json.dumps(data, indent=2))


# ---------------------------------------------------------------------------- the server process
def tilt_to_speech(model, share: float) -> float:
    """Bias the ``<|empty|>`` text logit so that about ``share`` of generated TTS patches are speech.

    The bias is found by bisection on the speech share of eight short seeded TTS generations.
    Returns the share reached.
    """
    lm, engine = model.lm, model.engine
    head = _Biased(lm.lm_head, lm.empty_text_id, 0.0)
    lm.lm_head = head
    inputs = {"text": "The quick brown fox jumps over the lazy dog.", "seed": 0}
    reqs = [model.prepare("tts", inputs, max_new_steps=24, min_new_steps=24, seed=i) for i in range(8)]

    def measured() -> float:
        results = engine.generate([r.prompt for r in reqs], [r.options for r in reqs])
        ids = [t for r in results for t in r.text_ids]
        return sum(t == lm.empty_text_id for t in ids) / len(ids)

    lo, hi, got = 0.0, 20.0, 0.0
    for _ in range(10):
        head.bias = (lo + hi) / 2
        got = measured()
        if abs(got - share) < 0.05:
            break
        lo, hi = (head.bias, hi) if got < share else (lo, head.bias)
    return got


class _Biased(torch.nn.Module):
    def __init__(self, head: torch.nn.Module, index: int, bias: float) -> None:
        super().__init__()
        self.head, self.index, self.bias = head, index, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(x)
        y[..., self.index] += self.bias
        return y


def main() -> None:
    import argparse

    from mimo_audio import MimoAudio
    from mimo_audio.serve import ServerConfig, run_server

    p = argparse.ArgumentParser(description="the load tests' server: fixture model tilted to speech")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    model = MimoAudio.from_pretrained(
        PARITY_DIR / "model",
        PARITY_DIR / "tokenizer",
        device="cpu",
        progress=False,
        max_batch=MAX_BATCH,
        max_len=512,
    )
    share = tilt_to_speech(model, 0.7)
    print(f"speech share of generated patches: {share:.2f}", file=sys.stderr)
    config = ServerConfig(max_queue=MAX_QUEUE, max_new_steps=64)
    run_server(model, config, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
