"""Delay-target test: the patch-decoder targets built for training are exactly what greedy generation
produces when the model predicts them perfectly.

Two views: (1) the fixture's greedy generations (``generate.<task>.ids``) turned into training
examples — at every target slot the teacher-forced model's argmax equals the target, and the logits
at the delayed slots, in order, are the reference's per-step sampling logits; (2) the incremental
:class:`PatchDecoder` driven by a "perfect model" that emits the delayed target of each step
reproduces the frames, for the fixture delays and for uneven ones.
"""

from __future__ import annotations

import json

import pytest
import torch

from mimo_audio.lm import LMConfig, load_lm
from mimo_audio.lm.model import random_lm
from mimo_audio.lm.patch_decoder import PatchDecoder, delay_schedule
from mimo_audio.train.lm_data import IGNORE, LMExample, delay_targets, example_targets
from mimo_audio.train.lm_losses import codebook_loss_sums, step_order_logits
from mimo_audio.train.lm_trainer import LMTrainModule
from test_train_common import MODEL_DIR, restore_threads  # noqa: F401

from conftest import EXPECTED

TOL = 1e-4
TASKS = sorted(EXPECTED["generate"])


@pytest.fixture(scope="module")
def lm():
    return load_lm(MODEL_DIR, optimize=False)


def generated_example(expected_tensors, task: str, group: int) -> LMExample:
    ids = expected_tensors[f"generate.{task}.ids"].long()
    P0 = expected_tensors[f"prompt.{task}"].shape[1] // group
    return LMExample(ids, torch.arange(ids.shape[1] // group) >= P0)


@pytest.mark.parametrize("task", TASKS)
def test_targets_match_greedy_generation(task, lm, expected_tensors):
    cfg = lm.config
    G, delays = cfg.group_size, cfg.delay_pattern
    ex = generated_example(expected_tensors, task, G)
    text_t, speech_t = example_targets(ex, lm.empty_text_id, cfg.speech_zeroemb_idx, delays, G)
    with torch.no_grad():
        out = lm(ex.ids[None])
    # text: one target per generated patch, predicted greedily from the previous position
    pos = (text_t != IGNORE).nonzero().squeeze(-1)
    steps = expected_tensors[f"generate.{task}.text_logits"]
    assert len(pos) == steps.shape[0]
    logits = out.text_logits[0, pos]
    assert (logits - steps).abs().max() <= TOL
    assert torch.equal(logits.argmax(-1), text_t[pos])
    # speech: the delayed slots in step order are the generation loop's sampling order
    rows = (speech_t != IGNORE).flatten(1).any(1).nonzero().squeeze(-1)
    want = expected_tensors[f"generate.{task}.local_logits"]
    if want.numel() == 0:
        assert rows.numel() == 0
        return
    schedule = [(t, c) for t, books in enumerate(delay_schedule(delays, G)) for c in books]
    got, targets = [], []
    for p in rows.tolist():
        per_step = step_order_logits([x[0, p : p + 1] for x in out.local_logits], delays)
        for (t, c), step_logits in zip(schedule, per_step, strict=True):
            got.append(
                torch.full((want.shape[1],), float("-inf")).index_copy(
                    0, torch.arange(step_logits.shape[1]), step_logits[0]
                )
            )
            targets.append(int(speech_t[p, t, c]))
    got = torch.stack(got)
    finite = torch.isfinite(want)
    assert got.shape == want.shape and torch.equal(torch.isfinite(got), finite)
    assert (got[finite] - want[finite]).abs().max() <= TOL
    assert got.argmax(-1).tolist() == targets  # the model "predicts them perfectly"
    assert IGNORE not in targets
    # the training loss reads the same slots: its per-codebook sums are the CE of those logits
    module = LMTrainModule(lm, speech_loss=True)
    collated = {
        "ids": ex.ids[None],
        "positions": torch.arange(ex.patches)[None],
        "doc": torch.zeros(1, ex.patches, dtype=torch.long),
        "text_targets": text_t[None],
        "speech_targets": speech_t[None],
    }
    with torch.no_grad():
        sums = module(**collated)
        ref = codebook_loss_sums([x[0, rows] for x in out.local_logits], speech_t[rows], delays)
    assert torch.allclose(sums[1:], ref, rtol=1e-4)


@pytest.mark.parametrize(
    "delays", [(0, 1, 2, 3, 4, 5, 6, 7), (0, 2, 2, 3, 4, 4, 6, 7), (3, 0, 1, 0, 2, 2, 0, 1)]
)
def test_perfect_model_regenerates_the_patch(delays, expected_tensors):
    """Drive the inference patch decoder with a sampler that returns the delayed target of each
    (step, codebook) it is asked for: it must ask only for real slots and rebuild the frames."""
    raw = json.loads((MODEL_DIR / "config.json").read_text())
    cfg = LMConfig.from_dict({**raw, "delay_pattern": "-".join(map(str, delays))})
    lm = random_lm(cfg, empty_text_id=5, seed=0)
    G = cfg.group_size
    frames = expected_tensors["speech_a.lm_codes"].long()[: 3 * G].reshape(3, G, cfg.audio_channels)
    delayed = delay_targets(frames, delays)  # [3, G + max(d), C]
    decoder = PatchDecoder(lm, max_batch=3)
    calls: dict[int, int] = {}  # codebook -> steps seen (its window opens at delay[c])
    asked = []

    def perfect(c: int, logits: torch.Tensor) -> torch.Tensor:
        t = delays[c] + calls.get(c, 0)
        calls[c] = calls.get(c, 0) + 1
        asked.append((t, c))
        return delayed[:, t, c]

    with torch.no_grad():
        out = decoder(torch.randn(3, cfg.local_dim), perfect)
    assert torch.equal(out, frames)
    real = {
        (t, c)
        for t in range(delayed.shape[1])
        for c in range(cfg.audio_channels)
        if delayed[0, t, c] != IGNORE
    }
    assert set(asked) == real and len(asked) == len(real)
    assert asked == sorted(asked)  # step-major, codebook order: the order targets are laid out in
