"""The task API on the parity checkpoints: prompts from wav files, greedy generation parity, batching,
streaming, variants and bad input."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mimo_audio import MimoAudio, MimoAudioError
from mimo_audio.lm.sampler import SamplerConfig
from mimo_audio.tasks import PRESETS, model_presets

from conftest import EXPECTED, PARITY_DIR, clip_path

GENERATE = EXPECTED["generate"]


def _resolve(value):
    """Clip names in expected.json inputs → paths (audio); everything else unchanged."""
    if isinstance(value, str) and value in EXPECTED["clips"]:
        return clip_path(value)
    if isinstance(value, dict):
        return {k: _resolve(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v) for v in value]
    return value


def prompt_inputs(spec: dict) -> dict:
    inputs = {k: v for k, v in spec.items() if k != "task"}
    if isinstance(inputs.get("messages"), str):
        inputs["messages"] = EXPECTED["messages"][inputs["messages"]]
    return _resolve(inputs)


@pytest.mark.parametrize("name", sorted(EXPECTED["prompts"]))
def test_build_prompt_from_clips(model, expected_tensors, name):
    spec = EXPECTED["prompts"][name]
    got = model.build_prompt(spec["task"], **prompt_inputs(spec))
    assert torch.equal(got, expected_tensors[f"prompt.{name}"].long())


@pytest.mark.parametrize("name", sorted(GENERATE))
def test_generate_parity_through_api(model, expected_tensors, name):
    g = GENERATE[name]
    prompt = expected_tensors[f"prompt.{g['prompt']}"].long()
    res = model.generate(
        prompt,
        max_new_steps=g["max_new_tokens"],
        stop_ids=g["stop_token_ids"],
        greedy=True,
        return_results=True,
        record_logits=True,
    )
    assert torch.equal(res.ids, expected_tensors[f"generate.{name}.ids"])
    torch.testing.assert_close(
        res.text_logits, expected_tensors[f"generate.{name}.text_logits"], atol=1e-4, rtol=0
    )
    out = model._finish(res, PRESETS[g["task"]], want_audio=True)
    want = expected_tensors[f"generate.{name}.wav"]
    assert out.audio.shape == want.shape
    assert (out.audio - want).abs().max() <= 1e-4
    if name in EXPECTED.get("texts", {}):
        assert out.text == EXPECTED["texts"][name]


def test_plain_ids_return(model, expected_tensors):
    g = GENERATE[next(iter(GENERATE))]
    prompt = expected_tensors[f"prompt.{g['prompt']}"].long()
    ids = model.generate(prompt, max_new_steps=3, stop_ids=g["stop_token_ids"])
    assert torch.equal(ids[:, : prompt.shape[1]], prompt)
    assert ids.shape[1] - prompt.shape[1] <= 3 * model.config.group_size
    both = model.generate([prompt, prompt], max_new_steps=3, stop_ids=g["stop_token_ids"])
    assert all(torch.equal(b, ids) for b in both)


GREEDY = {"greedy": True, "speech_greedy": True}


def test_asr_batch_equals_solo(model):
    clips = [clip_path(c) for c in list(EXPECTED["clips"])[:3]]
    batch = model.asr(clips, template="Transcribe this voice recording", max_new_steps=6, **GREEDY)
    assert isinstance(batch, list) and len(batch) == 3
    for clip, res in zip(clips, batch, strict=True):
        solo = model.asr(clip, template="Transcribe this voice recording", max_new_steps=6, **GREEDY)
        assert torch.equal(solo.ids, res.ids)
        assert solo.text == res.text
        assert res.audio is None


def test_tts_batch_equals_solo_and_audio(model):
    texts = ["Hello there.", "A longer sentence to read aloud."]
    batch = model.tts(texts, template="Read this content out loud", max_new_steps=8, **GREEDY)
    for text, res in zip(texts, batch, strict=True):
        solo = model.tts(text, template="Read this content out loud", max_new_steps=8, **GREEDY)
        assert torch.equal(solo.ids, res.ids)
        assert torch.equal(solo.audio, res.audio)
        assert res.sample_rate == 24000 and res.audio.dtype == torch.float32 and res.audio.numel() % 960 == 0


def test_tts_length_guard(model, monkeypatch, caplog):
    """A TTS request without max_audio_seconds stops at the text-length cap, with a warning."""
    import mimo_audio.api as api

    assert api.tts_seconds_cap("  Hello  ") == api.TTS_BASE_SECONDS + 5 * api.TTS_SECONDS_PER_CHAR
    monkeypatch.setattr(api, "TTS_BASE_SECONDS", 0.0)
    monkeypatch.setattr(api, "TTS_SECONDS_PER_CHAR", 0.1)  # "Hello there." → 1.2 s
    kw = {"template": "Read this content out loud", "stop_ids": [], "max_new_steps": 40, **GREEDY}
    with caplog.at_level("WARNING", logger="mimo_audio"):
        res = model.tts("Hello there.", **kw)
    assert res.stop_reason == "max_audio"
    # speech patches are counted as generated; the codebook delay drops a few trailing frames
    assert 0.7 <= res.audio.numel() / res.sample_rate < 1.2 + 4 / 25 + 1e-6
    assert "did not end its speech" in caplog.text
    longer = model.tts("Hello there.", max_audio_seconds=2.0, **kw)  # an explicit limit wins
    assert longer.stop_reason == "max_audio" and longer.audio.numel() > res.audio.numel() + 12_000


def test_asr_length_guard(model, monkeypatch, caplog):
    """An ASR request without max_new_steps stops at the audio-length cap, with a warning."""
    import mimo_audio.api as api

    assert api.asr_steps_cap(10) == api.ASR_BASE_STEPS + 10 * api.ASR_STEPS_PER_PATCH
    monkeypatch.setattr(api, "ASR_BASE_STEPS", 3)
    monkeypatch.setattr(api, "ASR_STEPS_PER_PATCH", 0)
    kw = {"template": "Please transcribe this audio", "stop_ids": [], **GREEDY}
    with caplog.at_level("WARNING", logger="mimo_audio"):
        res = model.asr(clip_path("speech_a"), **kw)
    assert res.stop_reason == "max_new_steps" and res.steps == 3
    assert "did not end its transcript" in caplog.text
    longer = model.asr(clip_path("speech_a"), max_new_steps=5, **kw)  # an explicit limit wins
    assert longer.stop_reason == "max_new_steps" and longer.steps == 5


def test_sampling_is_seeded(model):
    a = model.tts("Seeded run.", template="Read this content out loud", max_new_steps=6, seed=7)
    b = model.tts("Seeded run.", template="Read this content out loud", max_new_steps=6, seed=7)
    assert torch.equal(a.ids, b.ids) and a.seed == 7


def test_stream_matches_offline(model):
    clip = clip_path("speech_b")
    kwargs = {
        "examples": [(clip_path("speech_a"), clip_path("speech_c"), "text")],
        "max_new_steps": 12,
        **GREEDY,
    }
    offline = model.in_context(clip, **kwargs)
    chunks = list(model.in_context_stream(clip, **kwargs))
    final = chunks[-1].result
    assert final is not None and torch.equal(final.ids, offline.ids)
    assert "".join(c.text for c in chunks) == offline.text
    streamed = torch.cat([c.audio for c in chunks if c.audio is not None])
    assert streamed.shape == offline.audio.shape
    # Same codes through the tokenizer's own streaming decoder, fed the way the stream fed it.
    G = model.config.group_size
    from mimo_audio.postprocess import split_generation

    _, codes = split_generation(
        offline.ids[:, offline.prompt_length :], model.text_tokenizer, model.config.speech_zeroemb_idx, G
    )
    dec = model.audio_tokenizer.stream_decoder()
    pieces = [dec.push(codes[:, i : i + G]) for i in range(0, codes.shape[1], G)] + [dec.flush()]
    assert torch.equal(streamed, torch.cat([p.float() for p in pieces]))


def test_chat_routes_by_content(model):
    text = model.chat([{"role": "user", "content": "Hi!"}], max_new_steps=4)
    assert text.audio is None and text.ids[0, : text.prompt_length].tolist()
    spoken = model.chat([{"role": "user", "content": clip_path("speech_b")}], max_new_steps=4, **GREEDY)
    assert spoken.audio is not None
    s2t = model.chat(
        [{"role": "user", "content": clip_path("speech_b")}], speech_output=False, max_new_steps=4
    )
    assert s2t.audio is None


def test_variant_detection(tmp_path: Path):
    base = tmp_path / "MiMo-Audio-7B-Base"
    shutil.copytree(PARITY_DIR / "model", base)
    m = MimoAudio.from_pretrained(base, PARITY_DIR / "tokenizer", progress=False)
    assert m.variant == "base"
    with pytest.raises(MimoAudioError, match="Instruct model"):
        m.asr(clip_path("speech_a"))
    res = m.continue_speech(clip_path("speech_a"), seconds=0.32, **GREEDY)
    assert res.duration <= 0.32 + 1e-9


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m.build_prompt("sing"), "unknown task"),
        (lambda m: m.build_prompt("asr"), "needs 'audio'"),
        (lambda m: m.build_prompt("asr", audio="x.wav", question="q"), "takes no question"),
        (lambda m: m.tts("   "), "non-empty text"),
        (lambda m: m.asr("/nonexistent.wav"), "no such file"),
        (lambda m: m.asr(torch.zeros(0)), "empty"),
        (lambda m: m.in_context(clip_path("speech_a"), examples=[]), "at least one example"),
        (lambda m: m.tts("Hi", temperature=-1.0), "temperature"),
        (lambda m: m.tts("Hi", top_p=2.0), "top_p"),
        (lambda m: m.tts("Hi", max_new_steps=0), "max_new_steps"),
        (lambda m: m.tts("word " * 9000), "patches"),
        (lambda m: m.continue_speech(clip_path("speech_a"), seconds=0), "seconds"),
    ],
)
def test_bad_input(model, call, match):
    with pytest.raises(MimoAudioError, match=match):
        call(model)
    assert model.engine.num_active == 0 and model.engine.num_waiting == 0


def test_sampler_override_keeps_preset():
    from mimo_audio.api import _override

    base = PRESETS["tts"].text_sampler
    assert _override(base, None, None, None, None) is base
    assert _override(base, True, None, None, None) == SamplerConfig(
        do_sample=False, temperature=0.6, top_p=1.0
    )


def _with_generation_config(tmp_path: Path, cfg) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(PARITY_DIR / "model", folder)
    text = cfg if isinstance(cfg, str) else json.dumps(cfg)
    (folder / "generation_config.json").write_text(text, encoding="utf-8")
    return folder


def test_model_folder_tunes_its_samplers(tmp_path: Path):
    """A model's generation_config.json (mimo_audio.task_samplers) replaces a task's samplers;
    other tasks and the request's own options are unaffected, and the official folders change nothing."""
    assert model_presets(PARITY_DIR / "model") == PRESETS  # HF keys only: the presets as they are
    folder = _with_generation_config(
        tmp_path,
        {"eos_token_id": 0, "mimo_audio": {"task_samplers": {"tts": {"speech": {"do_sample": False}, "text": {"temperature": 0.3}}}}},
    )  # fmt: skip
    m = MimoAudio.from_pretrained(folder, PARITY_DIR / "tokenizer", device="cpu", progress=False)
    opts = m.options("tts")
    assert opts.speech_sampler == SamplerConfig(do_sample=False, temperature=0.9, top_p=0.95)
    assert opts.text_sampler == replace(PRESETS["tts"].text_sampler, temperature=0.3)
    assert m.options("spoken_dialogue").speech_sampler == PRESETS["spoken_dialogue"].speech_sampler
    assert m.options("tts", speech_greedy=False, speech_temperature=0.5).speech_sampler.do_sample
    # requests take them: prepare() (the CLI, the API and the server's scheduler) and tts()
    assert not m.prepare("tts", {"text": "Hi"}).options.speech_sampler.do_sample
    assert m.tts("Hi", max_new_steps=4, seed=0).steps == 4


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ("{not json", "not valid JSON"),
        ({"mimo_audio": {"task_samplers": []}}, "must be an object"),
        ({"mimo_audio": {"task_samplers": {"sing": {}}}}, "unknown task 'sing'"),
        ({"mimo_audio": {"task_samplers": {"tts": {"voice": {}}}}}, "'text' and/or 'speech'"),
        ({"mimo_audio": {"task_samplers": {"tts": {"text": {"temp": 1}}}}}, "takes do_sample"),
        ({"mimo_audio": {"task_samplers": {"tts": {"text": {"do_sample": "no"}}}}}, "bad value 'no'"),
        ({"mimo_audio": {"task_samplers": {"tts": {"text": {"temperature": 0}}}}}, "temperature must be > 0"),
    ],
)  # fmt: skip
def test_bad_generation_config(tmp_path: Path, cfg, match):
    folder = _with_generation_config(tmp_path, cfg)
    with pytest.raises(MimoAudioError, match=match) as e:
        model_presets(folder)
    assert "\n" not in str(e.value)
