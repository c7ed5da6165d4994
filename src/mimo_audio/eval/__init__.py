"""Evaluation harness (the ``[eval]`` extra): suites over JSONL manifests, cached and resumable.

>>> from mimo_audio.eval import make_suite, run_suite
>>> suite = make_suite("asr", model="MiMo-Audio-7B-Instruct", tokenizer="MiMo-Audio-Tokenizer")
>>> results = run_suite(suite, "librispeech_test_clean.jsonl", "runs/asr")
>>> results.aggregate["wer"]

Suites: ``asr`` (WER/CER), ``tts`` (ASR-judge WER/CER, DTW identification, speaker similarity,
duration ratio), ``tokenizer`` (PESQ, STOI, speaker similarity, bitrate), ``vc`` / ``fewshot``
(target-vs-source voice similarity, content), ``mcq`` (multiple-choice accuracy). Metrics alone:
:mod:`mimo_audio.eval.metrics`. The inference core never imports this package.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from .generation import ModelHandle
from .runner import EvalResults, Runner, run_suite
from .suites.base import Suite

SUITES = ("asr", "tts", "tokenizer", "vc", "fewshot", "mcq")

# third-party modules each suite needs (import names); all need jiwer and matplotlib for reports
_NEEDS = {
    "asr": (),
    "tts": ("resemblyzer", "webrtcvad", "librosa"),
    "tokenizer": ("pesq", "pystoi", "resemblyzer", "webrtcvad", "librosa"),
    "vc": ("resemblyzer", "webrtcvad", "librosa"),
    "fewshot": ("resemblyzer", "webrtcvad", "librosa"),
    "mcq": (),
}


def missing_modules(suite: str, judge: str | None = None) -> list[str]:
    """Import names a suite (and judge) needs that are not installed."""
    names = ["jiwer", "matplotlib", *_NEEDS[suite], *(["pocketsphinx"] if judge == "pocketsphinx" else [])]
    return [n for n in names if importlib.util.find_spec(n) is None]


def make_suite(
    name: str,
    *,
    model: str | None = None,
    tokenizer: str | None = None,
    load: dict[str, Any] | None = None,
    gen: dict[str, Any] | None = None,
    judge: str = "model",
    judge_model: str | None = None,
    workers: int = 2,
    codebooks: int = 8,
    preset: str = "vc",
    instruction: str | None = None,
    dtw_distractors: int = 24,
    thinking: bool = False,
    answerer: Any = None,
) -> Suite:
    """Build a suite by name. ``load``: ``MimoAudio.from_pretrained`` keywords; ``gen``: generation
    overrides (``seed``, ``greedy``, ``max_new_steps``, ...); ``judge``: ``model``, ``pocketsphinx``
    or ``none`` (``judge_model`` gives the judge its own LM folder, e.g. Instruct for a Base model);
    ``answerer``: a callable ``(items) -> replies`` replacing the model for ``mcq``."""
    from .judges import make_judge
    from .suites.asr import AsrSuite
    from .suites.fewshot import FewshotSuite, VcSuite
    from .suites.mcq import McqSuite, ModelAnswerer
    from .suites.tokenizer import TokenizerSuite
    from .suites.tts import TtsSuite

    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; choose from {', '.join(SUITES)}")
    load = dict(load or {})
    handle = ModelHandle(model, tokenizer, **load)
    if name == "asr":
        return AsrSuite(handle, gen)
    if name == "tokenizer":
        return TokenizerSuite(
            tokenizer,
            codebooks=codebooks,
            device=load.get("device"),
            dtype=load.get("dtype"),
            workers=workers,
        )
    if name == "mcq":
        return McqSuite(answerer if answerer is not None else ModelAnswerer(handle, gen, thinking))
    judge_load = {k: v for k, v in load.items() if k != "variant"}  # the judge's folder names its own
    judge_handle = ModelHandle(judge_model, tokenizer, **judge_load) if judge_model else handle
    max_steps = (gen or {}).get("max_new_steps")
    asr_judge = make_judge(judge, judge_handle, max_steps)
    if name == "tts":
        return TtsSuite(
            handle, asr_judge, gen, instruction=instruction, dtw_distractors=dtw_distractors, workers=workers
        )
    cls = VcSuite if name == "vc" else FewshotSuite
    return cls(handle, asr_judge, gen, preset=preset, workers=workers)


__all__ = [
    "SUITES",
    "EvalResults",
    "ModelHandle",
    "Runner",
    "Suite",
    "make_suite",
    "missing_modules",
    "run_suite",
]
