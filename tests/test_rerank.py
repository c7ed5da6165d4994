"""Best-of-N for few-shot speech-to-speech: the example-consistency judge (mimo_audio.rerank) on
synthetic voices, its DTW, the best_of option of the API / model folders / CLI, and bad values."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mimo_audio import MimoAudioError
from mimo_audio.api import BEST_OF_STRIDE
from mimo_audio.rerank import dtw_path, mfcc_frames, pick_best
from mimo_audio.tasks import model_presets

from conftest import FEWSHOT, PARITY_DIR, clip_path

SR = 24000


def voice(content: int, f0: float, bright: float, seconds: float = 1.2) -> np.ndarray:
    """A synthetic "utterance": a harmonic source at ``f0`` whose harmonics fall off with
    ``bright`` (the voice), under a pitch contour and syllable envelope drawn from ``content``."""
    rng = np.random.default_rng(content)
    t = np.arange(int(seconds * SR)) / SR
    syllables = rng.uniform(3, 6)
    contour = 1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0 * contour) / SR
    wav = sum(np.sin(k * phase) * bright**k for k in range(1, 30))
    env = np.clip(np.sin(np.pi * syllables * t + rng.uniform(0, 3)), 0, None) ** 0.5
    return (0.3 * wav * env / np.abs(wav).max()).astype(np.float32)


LOW, HIGH = (110.0, 0.55), (230.0, 0.85)  # (f0, brightness) of two voices


def test_dtw_path_is_the_cheapest_monotone_alignment():
    rng = np.random.default_rng(0)
    for shape in ((1, 1), (1, 5), (6, 1), (7, 9), (12, 5)):
        cost = rng.random(shape)
        path = dtw_path(cost)
        A, B = shape
        assert tuple(path[0]) == (0, 0) and tuple(path[-1]) == (A - 1, B - 1)
        steps = np.diff(path, axis=0)
        assert all(tuple(s) in {(1, 1), (1, 0), (0, 1)} for s in steps)
        acc = np.full((A, B), np.inf)  # the textbook O(A·B) recursion
        for i in range(A):
            for j in range(B):
                prev = min(
                    acc[i - 1, j - 1] if i and j else np.inf,
                    acc[i - 1, j] if i else np.inf,
                    acc[i, j - 1] if j else np.inf,
                )
                acc[i, j] = cost[i, j] + (0.0 if i == j == 0 else prev)
        assert cost[path[:, 0], path[:, 1]].sum() == pytest.approx(acc[-1, -1])


def test_mfcc_frames_keep_voiced_frames_only():
    clip = np.concatenate([np.zeros(SR // 2, np.float32), voice(1, *LOW), np.zeros(SR // 2, np.float32)])
    frames = mfcc_frames(clip, SR)
    assert frames.shape[1] == 19 and 0 < len(frames) < len(mfcc_frames(voice(1, *LOW), SR)) + 10
    assert len(mfcc_frames(np.zeros(SR, np.float32), SR)) == 0
    assert len(mfcc_frames(np.zeros(0, np.float32), SR)) == 0
    assert len(mfcc_frames(np.full(SR, np.nan, np.float32), SR)) == 0


@pytest.mark.parametrize(("source", "target"), [(LOW, HIGH), (HIGH, LOW)])
def test_pick_best_follows_the_examples(source, target):
    """Examples convert voice ``source`` → ``target``: the candidate in the target voice wins,
    whichever way round the examples go and wherever it sits among the candidates."""
    examples = [(voice(c, *source), voice(c, *target)) for c in (1, 2)]
    query = voice(3, *source)
    kept = voice(3, *source)  # a failed conversion: the source voice carried through
    converted = voice(3, *target)
    muddled = voice(3, (source[0] + target[0]) / 2, source[1])
    for order in ([kept, converted, muddled], [converted, muddled, kept], [muddled, kept, converted]):
        best, scores = pick_best(order, query, examples, SR)
        assert order[best] is converted, scores


def test_pick_best_edge_cases():
    examples = [(voice(1, *LOW), voice(1, *HIGH))]
    query = voice(3, *LOW)
    silent = np.zeros(SR, np.float32)
    best, scores = pick_best([silent, voice(3, *HIGH)], query, examples, SR)
    assert best == 1 and scores[0] == -np.inf
    assert pick_best([voice(3, *LOW)], query, examples, SR) == (0, [0.0])
    assert pick_best([voice(3, *LOW), voice(3, *HIGH)], query, [(silent, silent)], SR) == (0, [0.0, 0.0])
    with pytest.raises(ValueError):
        pick_best([], query, examples, SR)


# --------------------------------------------------------------------------- the best_of option
def test_best_of_returns_one_of_its_candidates(model):
    """best_of=N runs candidate j with seed ``seed + j·BEST_OF_STRIDE`` and returns one of them;
    best_of=1 is the plain request."""
    clip = clip_path("speech_b")
    plain = model.in_context(clip, seed=5, **FEWSHOT)
    assert torch.equal(model.in_context(clip, seed=5, best_of=1, **FEWSHOT).ids, plain.ids)
    cands = [model.in_context(clip, seed=5 + j * BEST_OF_STRIDE, **FEWSHOT) for j in range(3)]
    assert torch.equal(cands[0].ids, plain.ids)
    best = model.in_context(clip, seed=5, best_of=3, **FEWSHOT)
    assert any(torch.equal(best.ids, c.ids) for c in cands)
    # batched: each input gets its own candidates and one result
    both = model.in_context([clip, clip_path("speech_a")], seed=5, best_of=2, **FEWSHOT)
    assert len(both) == 2 and all(r.audio is not None for r in both)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m.in_context(clip_path("speech_b"), best_of=0, **FEWSHOT), "best_of must be an integer"),
        (lambda m: m.in_context(clip_path("speech_b"), best_of=17, **FEWSHOT), "from 1 to 16"),
        (lambda m: m.tts("Hi", best_of=2, max_new_steps=4), "best_of applies to in_context_s2s only"),
        (
            lambda m: list(m.in_context_stream(clip_path("speech_b"), best_of=2, **FEWSHOT)),
            "not available for streamed requests",
        ),
    ],
)
def test_bad_best_of(model, call, match):
    with pytest.raises(MimoAudioError, match=match) as e:
        call(model)
    assert "\n" not in str(e.value)


def _folder(tmp_path: Path, samplers: dict) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(PARITY_DIR / "model", folder)
    cfg = {"mimo_audio": {"task_samplers": samplers}}
    (folder / "generation_config.json").write_text(json.dumps(cfg), encoding="utf-8")
    return folder


def test_model_folder_sets_best_of(tmp_path: Path):
    folder = _folder(tmp_path, {"in_context_s2s": {"speech": {"temperature": 0.6}, "best_of": 4}})
    presets = model_presets(folder)
    assert (
        presets["in_context_s2s"].best_of == 4 and presets["in_context_s2s"].speech_sampler.temperature == 0.6
    )
    assert presets["tts"].best_of == 1


@pytest.mark.parametrize(
    ("samplers", "match"),
    [
        ({"in_context_s2s": {"best_of": 0}}, "best_of must be an integer"),
        ({"in_context_s2s": {"best_of": "6"}}, "best_of must be an integer"),
        ({"in_context_s2s": {"best_of": True}}, "best_of must be an integer"),
        ({"tts": {"best_of": 2}}, "'text' and/or 'speech' objects$"),
    ],
)
def test_bad_best_of_in_generation_config(tmp_path: Path, samplers, match):
    with pytest.raises(MimoAudioError, match=match) as e:
        model_presets(_folder(tmp_path, samplers))
    assert "\n" not in str(e.value)


def test_cli_fewshot_best_of(tmp_path: Path, capsys):
    """``fewshot --best-of N`` writes one clip; a bad N is a one-line error with exit 2."""
    from mimo_audio.cli import main

    ex = tmp_path / "examples"
    ex.mkdir()
    shutil.copy(clip_path("speech_a"), ex / "a_input.wav")
    shutil.copy(clip_path("speech_c"), ex / "a_output.wav")
    out = tmp_path / "out.wav"
    args = ["fewshot", str(clip_path("speech_b")), "--examples-dir", str(ex), "--out", str(out)]
    args += ["--model", str(PARITY_DIR / "model"), "--tokenizer", str(PARITY_DIR / "tokenizer")]
    args += ["--max-new-steps", "8", "--seed", "1", "--quiet"]
    assert main([*args, "--best-of", "2"]) == 0
    assert out.is_file() and out.stat().st_size > 44
    out.unlink()
    assert main([*args, "--best-of", "0"]) == 2
    err = capsys.readouterr().err
    assert "best_of must be an integer" in err and "Traceback" not in err and not out.exists()
