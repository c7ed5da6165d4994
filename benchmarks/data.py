"""``data prepare`` throughput: hours of audio processed per hour of wall time per CPU core.

Builds a synthetic corpus (espeak-ng dialogues of two voices with pauses and noise, 16 kHz wav,
transcript sidecars) and runs the pipeline's batch processor in this process with one torch /
onnxruntime thread (so one core), for each configuration:

* ``no-tokenize``: ingest → VAD → speaker segmentation → signal scores → transcript (sidecar) →
  language ID → quality → blocklist → sampling, shards without codes;
* ``tokenize-fixture``: the same plus audio codes from the fixture tokenizer (tiny, random weights);
* ``tokenize-official``: the same with a randomly initialised tokenizer of the official size
  (benchmarks/tokenizer.py's config, 1.2 B parameters), what real data pays per hour of audio.

ASR and captioning use the ``sidecar`` backends: the 7B LM's cost depends on the accelerator and is
measured by benchmarks/generate.py, not here; ``--agreement`` adds the PocketSphinx second
recogniser. Ray start-up is excluded (the Ray runner adds a fixed few seconds per run). A CPU/wall
ratio well below 1 flags a measurement slowed by other processes on the machine.

    python benchmarks/data.py                       # 8 dialogues (≈ 2.5 min of audio)
    python benchmarks/data.py --files 4 --no-official
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the synthetic-corpus helpers of the data tests
sys.path.insert(0, str(ROOT / "benchmarks"))

from mimo_audio.data.ingest import list_inputs  # noqa: E402
from mimo_audio.data.pipeline import Preparer  # noqa: E402
from mimo_audio.data.recipe import load_recipe  # noqa: E402
from test_data_corpus import SENTENCES, dialogue  # noqa: E402
from tokenizer import OFFICIAL  # noqa: E402

FIXTURE_TOKENIZER = ROOT.parent / "shared" / "fixtures" / "parity" / "tokenizer"
STAGES = ["signal", "transcribe", "language", "quality", "blocklist", "caption", "sample"]


def make_corpus(folder: Path, files: int) -> float:
    """``files`` dialogues of six turns; returns the total audio seconds."""
    seconds = 0.0
    for i in range(files):
        turns = [("AB"[(i + k) % 2], SENTENCES[(i + k) % len(SENTENCES)]) for k in range(6)]
        truth = dialogue(folder, f"d{i:03d}", turns, gap=0.8, seed=i)
        seconds += truth[-1]["end"] + 0.8
    return seconds


def run(name: str, inputs: Path, tmp: Path, audio_seconds: float, agreement: bool, tokenizer) -> dict:
    stages = STAGES[:3] + (["agreement"] if agreement else []) + STAGES[3:]
    overrides = {
        "stages": stages + (["tokenize"] if tokenizer is not None else []),
        "transcribe": {"backend": "sidecar"},
        "caption": {"backend": "sidecar"},
        "models": {"tokenizer": str(FIXTURE_TOKENIZER)},
    }
    prep = Preparer(load_recipe(None, overrides), inputs, tmp / name, audio_tokenizer=tokenizer)
    files = list_inputs(inputs)
    prep.process(files[:1])  # warm-up: first calls of every model
    prep.timings.clear()
    wall, cpu = time.perf_counter(), time.process_time()
    markers = prep.process(files)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "config": name,
        "audio_s": round(audio_seconds, 1),
        "wall_s": round(wall, 2),
        "cpu_over_wall": round(cpu / wall, 2),
        "hours_per_hour_per_core": round(audio_seconds / wall, 1),
        "segments_kept": sum(1 for m in markers for s in m["segments"] if s["dropped"] is None),
        "stage_s": {k: round(v, 2) for k, v in prep.timings.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=8, help="dialogues in the corpus (≈ 19 s each)")
    ap.add_argument("--agreement", action="store_true", help="include the PocketSphinx agreement stage")
    ap.add_argument("--no-official", action="store_true", help="skip the official-size tokenizer")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from mimo_audio.tokenizer import AudioTokenizer

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        inputs = tmp / "in"
        inputs.mkdir()
        seconds = make_corpus(inputs, args.files)
        configs = [
            ("no-tokenize", None),
            ("tokenize-fixture", AudioTokenizer.from_pretrained(FIXTURE_TOKENIZER)),
        ]
        if not args.no_official:
            configs.append(("tokenize-official", AudioTokenizer.from_config(OFFICIAL)))
        for name, tok in configs:
            print(json.dumps(run(name, inputs, tmp, seconds, args.agreement, tok)), flush=True)


if __name__ == "__main__":
    main()
