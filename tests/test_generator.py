"""Generation engine: batching, caches, sampling, stop rules, streaming, loading errors, int8."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from mimo_audio.checkpoint import save_weights
from mimo_audio.errors import CheckpointError, MimoAudioError
from mimo_audio.lm import (
    GREEDY,
    GenerationOptions,
    Generator,
    LMConfig,
    MimoAudioLM,
    SamplerConfig,
    StopReason,
    load_lm,
)
from mimo_audio.lm.model import random_lm
from mimo_audio.lm.patch_decoder import delay_schedule

from conftest import PARITY_DIR

MODEL_DIR = PARITY_DIR / "model"
PROMPTS = ["tts", "asr", "in_context_s2s", "text_dialogue", "spoken_dialogue"]
GREEDY_OPTS = GenerationOptions(
    text_sampler=GREEDY, speech_sampler=GREEDY, max_new_steps=10, record_logits=True
)
SAMPLING = SamplerConfig(do_sample=True, temperature=0.9, top_k=50, top_p=0.95)


@pytest.fixture(scope="module")
def lm() -> MimoAudioLM:
    return load_lm(MODEL_DIR)


@pytest.fixture(scope="module")
def prompts(expected_tensors) -> list[torch.Tensor]:
    return [expected_tensors[f"prompt.{name}"] for name in PROMPTS]


def _tilt_towards_speech(model: MimoAudioLM, prompt: torch.Tensor, share: float) -> None:
    """Give ``lm_head`` a bias on ``<|empty|>`` so that about ``share`` of the positions choose speech."""
    with torch.inference_mode():
        logits = model(prompt[None], local_logits=False).text_logits[0]
    empty = model.empty_text_id
    margin = logits.clone()
    margin[:, empty] = float("-inf")
    margin = margin.max(-1).values - logits[:, empty]
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[empty] = torch.quantile(margin, share).item()
    model.lm_head = head.requires_grad_(False)


def _random_prompt(cfg: LMConfig, patches: int, empty_text_id: int, seed: int) -> torch.Tensor:
    """Text patches, then an audio clip of speech patches, then text."""
    g = torch.Generator().manual_seed(seed)
    G, C = cfg.group_size, cfg.audio_channels
    ids = torch.empty(1 + C, G * patches, dtype=torch.long)
    ids[0] = -100
    ids[0, ::G] = torch.randint(20, cfg.vocab_size, (patches,), generator=g)
    for c in range(C):
        ids[1 + c] = cfg.speech_zeroemb_idx[c]
    audio = range(patches // 4, patches // 4 + patches // 2)
    for p in audio:
        ids[0, G * p] = empty_text_id
        for c in range(C):
            ids[1 + c, G * p : G * p + G] = torch.randint(0, cfg.speech_zeroemb_idx[c], (G,), generator=g)
    return ids


@pytest.fixture(scope="module")
def other_lm() -> tuple[MimoAudioLM, list[torch.Tensor]]:
    """A random model in another shape: other delays, causal patch encoder, input_local_dim != local_dim."""
    raw = json.loads((MODEL_DIR / "config.json").read_text())
    raw.update(
        delay_pattern="0-2-2-3-4-4-6-7",
        input_local_dim=48,
        local_attn_heads=4,
        num_key_value_heads=1,
        head_dim=8,
        group_size=3,
    )
    raw.pop("input_full_attention")
    cfg = LMConfig.from_dict(raw)
    model = random_lm(cfg, empty_text_id=5, seed=1, std=0.1)
    prompts = [_random_prompt(cfg, n, 5, seed) for seed, n in enumerate((40, 23, 31))]
    _tilt_towards_speech(model, prompts[0], 0.6)
    return model, prompts


def _assert_same(a, b, tol=1e-5):
    assert torch.equal(a.ids, b.ids)
    assert a.stop_reason == b.stop_reason
    assert (a.text_logits - b.text_logits).abs().max().item() <= tol
    if a.local_logits is not None or b.local_logits is not None:
        fin = torch.isfinite(a.local_logits)
        assert torch.equal(fin, torch.isfinite(b.local_logits))
        assert (a.local_logits[fin] - b.local_logits[fin]).abs().max().item() <= tol


def _solo(model, prompt, opts, **kw):
    return Generator(model, max_batch=1, max_len=1024, **kw).generate([prompt], opts)[0]


# ---------------------------------------------------------------------- batching and caches
def test_batch_rows_equal_solo_runs(lm, prompts):
    """Different prompt lengths and finishing times, more prompts than slots (queueing, slot reuse)."""
    opts = [dataclasses.replace(GREEDY_OPTS, max_new_steps=n) for n in (6, 12, 9, 4, 11)]
    batched = Generator(lm, max_batch=3, max_len=1024).generate(prompts, opts)
    for prompt, o, got in zip(prompts, opts, batched, strict=True):
        want = _solo(lm, prompt, o)
        _assert_same(got, want)
        assert len(got.text_ids) == o.max_new_steps and got.stop_reason is StopReason.MAX_NEW_STEPS


def test_batch_equals_solo_other_shapes(other_lm):
    model, prompts = other_lm
    opts = [dataclasses.replace(GREEDY_OPTS, max_new_steps=n) for n in (8, 5, 10)]
    batched = Generator(model, max_batch=3, max_len=128).generate(prompts, opts)
    speech = 0
    for prompt, o, got in zip(prompts, opts, batched, strict=True):
        _assert_same(got, _solo(model, prompt, o))
        speech += sum(t == model.empty_text_id for t in got.text_ids)
    assert 0 < speech < sum(o.max_new_steps for o in opts)  # both kinds of patch were exercised


def test_chunked_prefill_matches_whole_prefill(lm, prompts):
    opts = dataclasses.replace(GREEDY_OPTS, max_new_steps=6)
    whole = _solo(lm, prompts[2], opts)
    chunked = Generator(lm, max_batch=1, max_len=1024, prefill_chunk=16).generate([prompts[2]], opts)[0]
    _assert_same(chunked, whole, tol=1e-4)


def test_static_shapes_match_dynamic(lm, prompts):
    opts = dataclasses.replace(GREEDY_OPTS, max_new_steps=6)
    dyn = Generator(lm, max_batch=3, max_len=256).generate(prompts[:3], opts)
    static = Generator(lm, max_batch=4, max_len=256, static_shapes=True).generate(prompts[:3], opts)
    for a, b in zip(dyn, static, strict=True):
        _assert_same(a, b)


def _check_against_teacher_forcing(model: MimoAudioLM, result) -> None:
    cfg = model.config
    with torch.inference_mode():
        out = model(result.ids[None])
    P0, T = result.prompt_patches, len(result.text_ids)
    tf_text = out.text_logits[0, P0 - 1 : P0 - 1 + T]
    assert (tf_text - result.text_logits).abs().max().item() <= 1e-4
    rows = []
    schedule = delay_schedule(cfg.delay_pattern, cfg.group_size)
    for i, t in enumerate(result.text_ids):
        if t != model.empty_text_id:
            continue
        pos = P0 - 1 + i  # the state that produced generated patch i
        for step, books in enumerate(schedule):
            for c in books:
                row = torch.full((cfg.max_speech_vocab,), float("-inf"))
                row[: cfg.speech_vocab_size[c]] = out.local_logits[c][0, pos, step - cfg.delay_pattern[c]]
                rows.append(row)
    assert rows, "no speech patch was generated"
    tf_local = torch.stack(rows)
    fin = torch.isfinite(tf_local)
    assert torch.equal(fin, torch.isfinite(result.local_logits))
    assert (tf_local[fin] - result.local_logits[fin]).abs().max().item() <= 1e-4


def test_incremental_decode_equals_full_recompute(lm, prompts):
    for prompt in prompts[:3]:
        _check_against_teacher_forcing(lm, _solo(lm, prompt, GREEDY_OPTS))


def test_incremental_decode_equals_full_recompute_other_shapes(other_lm):
    model, prompts = other_lm
    for prompt in prompts:
        _check_against_teacher_forcing(
            model, _solo(model, prompt, dataclasses.replace(GREEDY_OPTS, max_new_steps=8))
        )


# ---------------------------------------------------------------------- sampling
def test_sampling_reproducible_with_seed(lm, prompts):
    opts = GenerationOptions(text_sampler=SAMPLING, speech_sampler=SAMPLING, max_new_steps=8, seed=1234)
    a = _solo(lm, prompts[0], opts).ids
    b = _solo(lm, prompts[0], opts).ids
    assert torch.equal(a, b)
    others = [_solo(lm, prompts[0], dataclasses.replace(opts, seed=s)).ids for s in (1, 2, 3)]
    assert any(not torch.equal(a, o) for o in others)
    # in a batch, each request keeps its own generator: rows equal their solo runs
    batch = Generator(lm, max_batch=3, max_len=512).generate(
        [prompts[0], prompts[1], prompts[0]], [opts, dataclasses.replace(opts, seed=7), opts]
    )
    assert torch.equal(batch[0].ids, a) and torch.equal(batch[2].ids, a)
    assert torch.equal(batch[1].ids, _solo(lm, prompts[1], dataclasses.replace(opts, seed=7)).ids)
    assert batch[0].seed == 1234


def test_sampler_order_and_filters():
    from mimo_audio.lm.sampler import filter_logits, sample

    logits = torch.tensor([[1.0, 5.0, 3.0, 5.0, -2.0]])
    assert sample(logits, GREEDY).item() == 1  # first max
    assert sample(logits, GREEDY, removed=(1,)).item() == 3
    topk = filter_logits(logits, SamplerConfig(do_sample=True, top_k=2))
    assert torch.isinf(topk).tolist() == [[True, False, True, False, True]]
    topp = filter_logits(
        torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])), SamplerConfig(do_sample=True, top_p=0.8)
    )
    assert torch.isfinite(topp).tolist() == [[True, True, False, False]]
    # top-k before removal: the removed id held the only slot → fall back to the best allowed id
    cfg = SamplerConfig(do_sample=True, top_k=1)
    assert sample(logits, cfg, [torch.Generator().manual_seed(0)], removed=(1, 3)).item() == 2
    gen = torch.Generator().manual_seed(0)
    draws = [sample(logits, SamplerConfig(do_sample=True, top_k=3), [gen]).item() for _ in range(50)]
    assert set(draws) <= {1, 2, 3} and len(set(draws)) > 1
    with pytest.raises(MimoAudioError):
        SamplerConfig(do_sample=True, top_p=0.0)
    # the exponential race (pre-drawn noise, used by the patch decoder) samples the same distribution
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    rows = torch.log(probs).expand(20000, 4)
    noise = torch.empty(20000, 6).exponential_(generator=torch.Generator().manual_seed(1))
    got = sample(rows, SamplerConfig(do_sample=True), noise=noise)
    freq = torch.bincount(got, minlength=4).float() / got.numel()
    assert (freq - probs).abs().max().item() < 0.015
    topk = sample(rows, SamplerConfig(do_sample=True, top_k=2), noise=noise)
    assert set(topk.tolist()) == {0, 1}


# ---------------------------------------------------------------------- stop rules
def test_stop_token_and_min_new_steps(lm, prompts):
    ref = _solo(lm, prompts[1], dataclasses.replace(GREEDY_OPTS, max_new_steps=12))
    k, stop = next((i, t) for i, t in enumerate(ref.text_ids) if i > 0 and t != lm.empty_text_id)
    k = ref.text_ids.index(stop)
    got = _solo(lm, prompts[1], dataclasses.replace(GREEDY_OPTS, max_new_steps=12, stop_ids=(stop,)))
    assert got.stop_reason is StopReason.STOP_TOKEN and len(got.text_ids) == k + 1
    G = lm.config.group_size
    assert torch.equal(got.ids, ref.ids[:, : got.ids.shape[1]])
    last = got.ids[:, -G:]
    assert (last[0] == stop).all() and torch.equal(last[1:, 0], torch.tensor(lm.config.speech_zeroemb_idx))
    # the stop id is forbidden while fewer than min_new_steps patches exist
    first = ref.text_ids[0]
    held = _solo(lm, prompts[1], dataclasses.replace(GREEDY_OPTS, stop_ids=(first,), min_new_steps=3))
    assert first not in held.text_ids[:3]
    assert torch.allclose(held.text_logits[0], ref.text_logits[0])
    hit = [i for i, t in enumerate(held.text_ids) if t == first]
    assert held.stop_reason is (StopReason.STOP_TOKEN if hit else StopReason.MAX_NEW_STEPS)


def test_max_audio_seconds_and_max_length(lm, prompts):
    ref = _solo(lm, prompts[2], GREEDY_OPTS)
    speech_steps = [i for i, t in enumerate(ref.text_ids) if t == lm.empty_text_id]
    assert len(speech_steps) >= 2
    seconds = 2 * lm.config.group_size / 25.0
    got = _solo(lm, prompts[2], dataclasses.replace(GREEDY_OPTS, max_audio_seconds=seconds))
    assert got.stop_reason is StopReason.MAX_AUDIO and len(got.text_ids) == speech_steps[1] + 1
    P0 = prompts[2].shape[1] // lm.config.group_size
    capped = Generator(lm, max_batch=2, max_len=P0 + 3).generate([prompts[2]], GREEDY_OPTS)[0]
    assert capped.stop_reason is StopReason.MAX_LENGTH and len(capped.text_ids) == 3
    assert torch.equal(capped.ids, ref.ids[:, : capped.ids.shape[1]])


# ---------------------------------------------------------------------- add / step / cancel / stream
def test_step_api_cancel_and_results(lm, prompts):
    engine = Generator(lm, max_batch=2, max_len=512)
    a = engine.add(prompts[0], GREEDY_OPTS)
    b = engine.add(prompts[1], GREEDY_OPTS)
    c = engine.add(prompts[2], GREEDY_OPTS)
    events = engine.step()
    assert [e.request_id for e in events] == [a, b] and engine.num_waiting == 1
    for e in events:
        assert e.step == 0 and not e.finished
        assert (e.speech is None) == (e.text_id != lm.empty_text_id)
        if e.speech is not None:
            assert e.speech.shape == (lm.config.group_size, lm.config.audio_channels)
    partial = engine.cancel(a)
    assert partial.stop_reason is StopReason.CANCELLED and len(partial.text_ids) == 1
    assert engine.cancel(a) is None
    done = {}
    while engine.num_active or engine.num_waiting:
        for e in engine.step():
            if e.finished:
                done[e.request_id] = e.result
    _assert_same(done[b], _solo(lm, prompts[1], GREEDY_OPTS))
    _assert_same(done[c], _solo(lm, prompts[2], GREEDY_OPTS))
    assert engine.step() == []


def test_stream_matches_generate(lm, prompts):
    engine = Generator(lm, max_batch=1, max_len=512)
    events = list(engine.stream(prompts[0], GREEDY_OPTS))
    result = events[-1].result
    assert events[-1].finished and all(not e.finished for e in events[:-1])
    assert [e.text_id for e in events] == result.text_ids
    _assert_same(result, _solo(lm, prompts[0], GREEDY_OPTS))
    G = lm.config.group_size
    for e in events:
        if e.speech is not None:
            col = (result.prompt_patches + e.step) * G
            assert torch.equal(result.ids[1:, col : col + G], e.speech.T)
    stream = engine.stream(prompts[0], GREEDY_OPTS)
    next(stream)
    stream.close()  # closing early cancels: the engine is idle again
    assert engine.num_active == 0 and engine.num_waiting == 0
    assert torch.equal(result.generated_ids, result.ids[:, result.prompt_patches * G :])


def test_prompt_validation(lm, prompts):
    engine = Generator(lm, max_batch=1, max_len=64)
    G, C = lm.config.group_size, lm.config.audio_channels
    bad_speech = prompts[0].clone()
    bad_speech[1, 0] = 5000
    bad_text = prompts[0][:, :G].clone()
    bad_text[0, 0] = -1
    for bad in (
        torch.zeros(C, G, dtype=torch.long),
        torch.zeros(1 + C, G + 1, dtype=torch.long),
        torch.zeros(1 + C, G, dtype=torch.float32),
        torch.zeros(1 + C, 0, dtype=torch.long),
        torch.zeros(1 + C, G * 65, dtype=torch.long),
        bad_speech[:, : G * 8],
        bad_text,
    ):
        with pytest.raises(MimoAudioError):
            engine.add(bad)
    with pytest.raises(MimoAudioError):
        GenerationOptions(max_new_steps=0)
    engine.add(prompts[0][:, : G * 4])
    with pytest.raises(MimoAudioError):
        engine.generate([prompts[0][:, : G * 4]])


# ---------------------------------------------------------------------- loading
def _copy_model(tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(MODEL_DIR, dst)
    for f in dst.iterdir():
        f.chmod(0o644)
    return dst


def test_sharded_checkpoint_loads_identically(tmp_path, lm, prompts):
    dst = _copy_model(tmp_path)
    state = load_file(str(dst / "model.safetensors"))
    (dst / "model.safetensors").unlink()
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    weight_map = {}
    for name, ks in shards.items():
        save_file({k: state[k] for k in ks}, str(dst / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(ks, name))
    (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    sharded = load_lm(dst)
    for k, v in lm.state_dict().items():
        assert torch.equal(v, sharded.state_dict()[k]), k
    opts = dataclasses.replace(GREEDY_OPTS, max_new_steps=4)
    _assert_same(_solo(sharded, prompts[0], opts), _solo(lm, prompts[0], opts), tol=0)
    # our writer's shards (by size, as export and benchmarks/lm_memory.py write them) load the same
    for f in [*dst.glob("model-*.safetensors"), dst / "model.safetensors.index.json"]:
        f.unlink()
    total = sum(v.numel() * v.element_size() for v in state.values())
    save_weights(dst, state, max_shard_bytes=total // 3)
    assert len(list(dst.glob("model-0000?-of-0000[34].safetensors"))) in (3, 4)
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(state) and index["metadata"]["total_size"] == total
    resaved = load_lm(dst)
    for k, v in lm.state_dict().items():
        assert torch.equal(v, resaved.state_dict()[k]), k


def test_loading_errors(tmp_path):
    dst = _copy_model(tmp_path)
    weights = dst / "model.safetensors"
    state = load_file(str(weights))
    # unexpected keys are ignored (as the reference does)
    save_file({**state, "model.rotary_emb.inv_freq": torch.ones(8)}, str(weights))
    load_lm(dst)
    # missing keys fail, naming them
    save_file({k: v for k, v in state.items() if k != "lm_head.weight"}, str(weights))
    with pytest.raises(CheckpointError, match="missing.*lm_head.weight"):
        load_lm(dst)
    # truncated file
    save_file(state, str(weights))
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_lm(dst)
    # weights that do not match config.json
    save_file(state, str(weights))
    cfg = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**cfg, "intermediate_size": cfg["intermediate_size"] * 2}))
    with pytest.raises(CheckpointError, match="do not match"):
        load_lm(dst)
    with pytest.raises(CheckpointError):
        load_lm(tmp_path / "nowhere")


# ---------------------------------------------------------------------- int8
def test_int8_weight_only(lm, prompts):
    q = load_lm(MODEL_DIR, quantize="int8")
    assert q.lm_head.weight.dtype == torch.int8
    with torch.inference_mode():
        ref = lm(prompts[1][None], local_logits=False).text_logits
        got = q(prompts[1][None], local_logits=False).text_logits
    rel = ((got - ref).norm() / ref.norm()).item()
    assert rel < 0.05
    result = _solo(q, prompts[1], dataclasses.replace(GREEDY_OPTS, max_new_steps=4))
    assert len(result.text_ids) == 4
    with pytest.raises(CheckpointError):
        load_lm(MODEL_DIR, quantize="int4")


@pytest.mark.slow
@pytest.mark.parametrize("static", [False, True])
def test_compiled_decode_matches_eager(lm, prompts, static):
    """torch.compile of the decode step and patch-decoder stack (minutes on 2 CPU cores)."""
    opts = dataclasses.replace(GREEDY_OPTS, max_new_steps=5)
    eager = Generator(lm, max_batch=2, max_len=512).generate(prompts[:2], opts)
    compiled = Generator(load_lm(MODEL_DIR), max_batch=2, max_len=512, compile=True, static_shapes=static)
    for a, b in zip(eager, compiled.generate(prompts[:2], opts), strict=True):
        _assert_same(a, b, tol=1e-4)
