"""Greedy generation parity with the reference for every ``generate.<task>`` entry of expected.json."""

from __future__ import annotations

import pytest
import torch

from mimo_audio.lm import GREEDY, GenerationOptions, Generator, StopReason, load_lm

from conftest import EXPECTED, PARITY_DIR

TOL = 1e-4
TASKS = sorted(EXPECTED.get("generate", {}))


@pytest.fixture(scope="module", params=["solo", "batch"])
def results(request, expected_tensors):
    """Every task generated alone (as the reference ran), and all tasks together as one batch."""
    lm = load_lm(PARITY_DIR / "model")
    prompts, options = [], []
    for task in TASKS:
        g = EXPECTED["generate"][task]
        prompts.append(expected_tensors[f"prompt.{g['prompt']}"])
        options.append(
            GenerationOptions(
                text_sampler=GREEDY,
                speech_sampler=GREEDY,
                max_new_steps=g["max_new_tokens"],
                min_new_steps=g.get("min_new_tokens", 0) or 0,
                stop_ids=tuple(g["stop_token_ids"]),
                record_logits=True,
            )
        )
    longest = max(
        p.shape[1] // lm.config.group_size + o.max_new_steps for p, o in zip(prompts, options, strict=True)
    )
    if request.param == "solo":
        engine = Generator(lm, max_batch=1, max_len=longest)
        out = [engine.generate([p], o)[0] for p, o in zip(prompts, options, strict=True)]
    else:
        out = Generator(lm, max_batch=len(TASKS), max_len=longest).generate(prompts, options)
    return dict(zip(TASKS, out, strict=True))


def test_fixture_has_generate_entries():
    assert TASKS, "expected.json has no generate entries"


@pytest.mark.parametrize("task", TASKS)
def test_generated_ids(task, results, expected_tensors):
    want = expected_tensors[f"generate.{task}.ids"]
    got = results[task]
    assert got.ids.shape == want.shape
    assert torch.equal(got.ids, want.long())
    if got.stop_reason is StopReason.STOP_TOKEN:
        assert got.text_ids[-1] in EXPECTED["generate"][task]["stop_token_ids"]


@pytest.mark.parametrize("task", TASKS)
def test_text_logits(task, results, expected_tensors):
    want = expected_tensors[f"generate.{task}.text_logits"]
    got = results[task].text_logits
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= TOL


@pytest.mark.parametrize("task", TASKS)
def test_local_logits(task, results, expected_tensors):
    key = f"generate.{task}.local_logits"
    want = expected_tensors[key]
    got = results[task].local_logits
    if want.numel() == 0:
        assert got is None or got.numel() == 0
        return
    assert got.shape == want.shape
    finite = torch.isfinite(want)
    assert torch.equal(torch.isfinite(got), finite)
    assert (got[finite] - want[finite]).abs().max().item() <= TOL
