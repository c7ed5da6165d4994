"""LM forward parity with the reference (``lm.<prompt>.*`` tensors) and config parsing (SPEC §1.2, §7)."""

from __future__ import annotations

import json

import pytest
import torch

from mimo_audio.errors import CheckpointError
from mimo_audio.lm import GREEDY, LMConfig, load_lm
from mimo_audio.lm.patch_decoder import PatchDecoder, delay_schedule
from mimo_audio.lm.sampler import sample

from conftest import EXPECTED, PARITY_DIR

TOL = 1e-4
LM_TENSORS = sorted(k for k in EXPECTED["tensors"] if k.startswith("lm."))
LM_PROMPTS = sorted({k.split(".")[1] for k in LM_TENSORS})


@pytest.fixture(scope="module")
def lm():
    return load_lm(PARITY_DIR / "model")


@pytest.fixture(scope="module")
def lm_outputs(lm, expected_tensors):
    """Per prompt: what the reference saved, computed by our model."""
    out = {}
    with torch.inference_mode():
        for name in LM_PROMPTS:
            ids = expected_tensors[f"prompt.{name}"][None]
            text, speech = lm.split_ids(ids)
            embeds = lm.embed(text, speech)
            h = lm.model(embeds)
            text_logits, local_in = lm.heads(h[:, -1:])
            decoder = PatchDecoder(lm, max_batch=1)
            empty = lm.config.speech_zeroemb_idx
            tokens = decoder(
                local_in[:, 0], lambda c, logits, empty=empty: sample(logits, GREEDY, None, (empty[c],))
            )
            out[name] = {
                "input_embeds": embeds,
                "text_logits": text_logits,
                "local_hidden": local_in,
                "local_tokens_greedy": tokens,
            }
    return out


def test_fixture_has_lm_tensors():
    assert LM_TENSORS, "expected.json lists no lm.* tensors"


@pytest.mark.parametrize("key", LM_TENSORS)
def test_lm_tensor(key, lm_outputs, expected_tensors):
    _, prompt, quantity = key.split(".", 2)
    got, want = lm_outputs[prompt][quantity], expected_tensors[key]
    assert got.shape == want.shape, key
    if want.is_floating_point():
        assert (got - want).abs().max().item() <= TOL, key
    else:
        assert torch.equal(got, want.to(got.dtype)), key


@pytest.mark.parametrize("prompt", LM_PROMPTS)
def test_teacher_forced_forward_matches_reference(prompt, lm, expected_tensors):
    ids = expected_tensors[f"prompt.{prompt}"][None]
    with torch.inference_mode():
        out = lm(ids, local_logits=False)
    want = expected_tensors.get(f"lm.{prompt}.text_logits")
    if want is not None:
        assert (out.text_logits[:, -1:] - want).abs().max().item() <= TOL
    want = expected_tensors.get(f"lm.{prompt}.local_hidden")
    if want is not None:
        assert (out.local_in[:, -1:] - want).abs().max().item() <= TOL


def test_fixture_config_parsing():
    cfg = LMConfig.from_dir(PARITY_DIR / "model")
    raw = json.loads((PARITY_DIR / "model" / "config.json").read_text())
    assert cfg.hidden_size == raw["hidden_size"] and cfg.head_dim == raw["head_dim"]
    assert len(cfg.speech_vocab_size) == cfg.audio_channels == len(cfg.delay_pattern)
    assert cfg.local.head_dim == cfg.local_dim // cfg.local_attn_heads
    assert cfg.local.n_kv_heads == cfg.local_attn_heads
    assert cfg.input_local.ffn_dim == 4 * cfg.input_local_dim
    assert cfg.input_local.causal is (raw.get("input_full_attention") is not True)
    assert cfg.local_steps == cfg.group_size + max(cfg.delay_pattern)


def test_config_defaults_and_dash_strings():
    cfg = LMConfig.from_dict(
        {"hidden_size": 64, "num_attention_heads": 4, "delay_pattern": "0-2-2-3-4-4-6-7"}
    )
    assert cfg.head_dim == 128  # class default, not hidden / heads
    assert cfg.num_key_value_heads == 4
    assert cfg.delay_pattern == (0, 2, 2, 3, 4, 4, 6, 7)
    assert cfg.speech_vocab_size == (1025, 1025, 129, 129, 129, 129, 129, 129)
    assert cfg.input_local_dim == cfg.local_dim == 1024
    assert cfg.input_local.causal  # input_full_attention absent → causal patch encoder
    assert cfg.local.head_dim == 16 and cfg.input_local.n_heads == 64
    assert LMConfig.from_dict({"input_full_attention": None}).input_local.causal
    assert not LMConfig.from_dict({"input_full_attention": True}).input_local.causal
    assert LMConfig.from_dict(
        {"audio_channels": 3, "speech_vocab_size": 17, "speech_zeroemb_idx": "16", "delay_pattern": 0}
    ).speech_vocab_size == (17, 17, 17)
    assert LMConfig.from_dict({"n_rvq": 12, "audio_config": {}}).extra == {"n_rvq": 12, "audio_config": {}}


@pytest.mark.parametrize(
    "bad",
    [
        {"delay_pattern": "0-1-2"},
        {"speech_zeroemb_idx": "1025-1024-128-128-128-128-128-128"},
        {"speech_vocab_size": "a-b"},
        {"local_dim": 100, "local_attn_heads": 64},
        {"hidden_act": "swish2"},
        {"rope_scaling": {"rope_type": "yarn", "factor": 2.0}},
    ],
)
def test_config_errors(bad):
    with pytest.raises(CheckpointError):
        cfg = LMConfig.from_dict(bad)
        cfg.backbone, cfg.local  # noqa: B018 - stack configs validate lazily


def test_delay_schedule_windows():
    sched = delay_schedule((0, 2, 2, 3, 4, 4, 6, 7), 4)
    assert len(sched) == 11
    assert sched[0] == [0] and sched[2] == [0, 1, 2] and sched[10] == [7]
    assert sum(len(s) for s in sched) == 4 * 8
