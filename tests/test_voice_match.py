"""Voice matching of few-shot voice conversion (mimo_audio.voice_match): the settings, the frame
matching against a brute-force reference, feature decoding, streaming, and the option through the
API, model folders, streamed requests and the CLI."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mimo_audio import AudioTokenizer, MimoAudio, MimoAudioError
from mimo_audio.api import FEWSHOT_PRESETS
from mimo_audio.serve import Job, Scheduler
from mimo_audio.tasks import model_presets
from mimo_audio.voice_match import VoiceMatch, VoicePool

from conftest import FEWSHOT, PARITY_DIR, clip_path, tensor_names

BIN = Path(sys.executable).parent / "mimo-audio"


@pytest.fixture(scope="module")
def tok() -> AudioTokenizer:
    return AudioTokenizer.from_pretrained(PARITY_DIR / "tokenizer")


@pytest.fixture(scope="module")
def codes(tok, expected_tensors) -> list[torch.Tensor]:
    """LM-style codes ``[8, N]`` of every fixture clip (the tokenizer's own encoding)."""
    clips = [n.rsplit(".", 1)[0] for n in tensor_names(".codes20")]
    return [expected_tensors[f"{c}.codes20"][:8] for c in clips]


# --------------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (False, None),
        (0, None),
        ("off", None),
        ("0", None),
        (True, VoiceMatch()),
        ("on", VoiceMatch()),
        (3, VoiceMatch(k=3)),
        ("8", VoiceMatch(k=8)),
        ({"k": 2, "content": 0.0}, VoiceMatch(k=2, content=0.0)),
        ('{"timbre": 0.5}', VoiceMatch(timbre=0.5)),
        (VoiceMatch(k=5), VoiceMatch(k=5)),
    ],
)
def test_parse(value, expected):
    assert VoiceMatch.parse(value) == expected


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("bogus", "on, off, a number of neighbours or a JSON object"),
        (65, "k must be an integer from 1 to 64"),
        (-1, "k must be an integer from 1 to 64"),
        ({"k": 1.5}, "k must be an integer"),
        ({"content": 1.5}, "content must be a number from 0 to 1"),
        ({"timbre": "x"}, "timbre must be a number from 0 to 1"),
        ({"timbre": True}, "timbre must be a number"),
        ({"k": 2, "q": 1}, "unknown: q"),
        ([1, 2], "voice_match must be on, off"),
        (0.5, "voice_match must be on, off"),
    ],
)
def test_parse_rejects(value, match):
    with pytest.raises(MimoAudioError, match=match):
        VoiceMatch.parse(value)


# --------------------------------------------------------------------------- matching
def _reference(tok, pool_codes, codes, m: VoiceMatch) -> torch.Tensor:
    """The matching frame by frame, written out: cosine neighbours among the pool's frames."""
    pool = torch.cat(pool_codes, dim=1)
    P, P0 = tok.dequantize(pool).double(), tok.dequantize(pool[:1]).double()
    X, X0 = tok.dequantize(codes).double(), tok.dequantize(codes[:1]).double()
    rows = []
    for x, x0 in zip(X, X0, strict=True):
        sims = torch.stack([torch.dot(x, p) / (x.norm() * p.norm()) for p in P])
        idx = sims.argsort(descending=True)[: m.k]
        n_all, n0 = P[idx].mean(0), P0[idx].mean(0)
        rows.append(x0 + m.content * (n0 - x0) + (x - x0) + m.timbre * ((n_all - n0) - (x - x0)))
    return torch.stack(rows).float()


@pytest.mark.parametrize(
    "m", [VoiceMatch(), VoiceMatch(k=1, content=1.0), VoiceMatch(k=3, content=0.0, timbre=0.5)]
)
def test_apply_matches_the_frame_by_frame_reference(tok, codes, m):
    pool = VoicePool(tok, codes[1:], m)
    got = pool.apply(codes[0])
    assert got.shape == (codes[0].shape[1], tok.config.d_model) and got.dtype == torch.float32
    assert torch.allclose(got, _reference(tok, codes[1:], codes[0], m), atol=1e-4)


def test_apply_limits(tok, codes):
    x = codes[0]
    plain = tok.dequantize(x).float()
    # moving nothing is the plain dequantisation
    assert torch.allclose(
        VoicePool(tok, codes[1:], VoiceMatch(content=0.0, timbre=0.0)).apply(x), plain, atol=1e-6
    )
    # all the way to one neighbour: every frame becomes a frame of the target voice
    full = VoicePool(tok, codes[1:], VoiceMatch(k=1, content=1.0, timbre=1.0))
    targets = tok.dequantize(torch.cat(codes[1:], dim=1)).float()
    got = full.apply(x)
    assert (got[:, None] - targets[None]).abs().amax(-1).min(1).values.max() < 1e-5
    # a query made of the pool's own frames is its own nearest neighbour
    assert torch.allclose(VoicePool(tok, [x], VoiceMatch(k=1)).apply(x), plain, atol=1e-5)
    # k beyond the pool's frames uses them all; an empty query gives no frames
    short = x[:, :3]
    assert torch.allclose(
        VoicePool(tok, [short], VoiceMatch(k=64, content=1.0)).apply(x),
        tok.dequantize(short).float().mean(0).expand(x.shape[1], -1),
        atol=1e-5,
    )
    assert VoicePool(tok, codes[1:], VoiceMatch()).apply(x[:, :0]).shape == (0, tok.config.d_model)


def test_pool_errors(tok, codes):
    with pytest.raises(MimoAudioError, match="needs examples with output audio"):
        VoicePool(tok, [], VoiceMatch())
    with pytest.raises(MimoAudioError, match="needs examples with output audio"):
        VoicePool(tok, [codes[0][:, :0]], VoiceMatch())
    with pytest.raises(MimoAudioError, match="4 codebooks, the examples have 8"):
        VoicePool(tok, codes[1:], VoiceMatch()).apply(codes[0][:4])


# --------------------------------------------------------------------------- decoding
def test_decode_features_equals_decode(tok, codes):
    c = codes[0]
    feats = tok.dequantize(c)
    assert torch.equal(tok.decode_features(feats), tok.decode(c))
    assert torch.equal(tok.decode_features_chunked(feats, 7), tok.decode_chunked(c, 7))
    assert tok.decode_features(feats[:0]).numel() == 0
    with pytest.raises(MimoAudioError, match="features must be"):
        tok.decode_features(feats[:, :3])
    with pytest.raises(MimoAudioError, match="chunk_frames"):
        tok.decode_features_chunked(feats, 0)


def test_stream_decoder_transform(tok, codes):
    """The streaming decoder decodes ``transform(codes)`` where it would dequantise: a neutral
    transform streams the plain audio; a single call streams the offline decode of the matched
    features; chunked streams cover every frame."""
    c = codes[0]
    neutral = VoicePool(tok, codes[1:], VoiceMatch(content=0.0, timbre=0.0)).apply
    plain = tok.stream_decoder(right_overlap=4)
    same = tok.stream_decoder(right_overlap=4, transform=neutral)
    for part in c.split(5, dim=1):
        assert torch.allclose(same.push(part), plain.push(part), atol=1e-5)
    assert torch.allclose(same.flush(), plain.flush(), atol=1e-5)

    pool = VoicePool(tok, codes[1:], VoiceMatch())
    dec = tok.stream_decoder(transform=pool.apply)
    assert torch.allclose(dec.push(c, last=True), tok.decode_features(pool.apply(c)), atol=1e-5)
    dec = tok.stream_decoder(right_overlap=4, chunk_frames=6, transform=pool.apply)
    pieces = [dec.push(p) for p in c.split(5, dim=1)] + [dec.flush()]
    assert torch.cat(pieces).numel() == c.shape[1] * tok.samples_per_frame
    assert not torch.allclose(torch.cat(pieces), torch.cat(_plain_stream(tok, c)), atol=1e-3)


def _plain_stream(tok, c):
    dec = tok.stream_decoder(right_overlap=4, chunk_frames=6)
    return [dec.push(p) for p in c.split(5, dim=1)] + [dec.flush()]


# --------------------------------------------------------------------------- the option
def _matched_audio(model, res, match: VoiceMatch) -> torch.Tensor:
    pool = VoicePool(model.audio_tokenizer, [model.audio_codes(clip_path("speech_c")).T], match)
    from mimo_audio.postprocess import split_generation

    _, codes = split_generation(
        res.ids[:, res.prompt_length :],
        model.text_tokenizer,
        model.config.speech_zeroemb_idx,
        model.config.group_size,
    )
    return pool.decode(codes)


def test_voice_match_changes_only_the_rendering(model):
    """voice_match leaves the generated ids alone and renders the audio from the matched features."""
    clip = clip_path("speech_b")
    plain = model.in_context(clip, seed=3, **FEWSHOT)
    matched = model.in_context(clip, seed=3, voice_match={"k": 2}, **FEWSHOT)
    assert torch.equal(plain.ids, matched.ids)
    assert matched.audio.shape == plain.audio.shape and not torch.equal(matched.audio, plain.audio)
    assert torch.allclose(matched.audio, _matched_audio(model, plain, VoiceMatch(k=2)), atol=1e-5)
    off = model.in_context(clip, seed=3, voice_match="off", **FEWSHOT)
    assert torch.equal(off.audio, plain.audio)
    # batched and best-of requests are matched too
    both = model.in_context([clip, clip], seed=3, voice_match=True, best_of=2, **FEWSHOT)
    assert all(r.audio.numel() for r in both)


def test_streamed_request_is_matched(model):
    clip = clip_path("speech_b")
    offline = model.in_context(clip, seed=4, voice_match=True, **FEWSHOT)
    chunks = list(model.in_context_stream(clip, seed=4, voice_match=True, **FEWSHOT))
    final = chunks[-1].result
    assert final is not None and torch.equal(final.ids, offline.ids)
    assert torch.equal(final.audio, offline.audio)
    streamed = torch.cat([c.audio for c in chunks if c.audio is not None])
    assert streamed.shape == offline.audio.shape
    plain = torch.cat(
        [c.audio for c in model.in_context_stream(clip, seed=4, **FEWSHOT) if c.audio is not None]
    )
    assert not torch.equal(streamed, plain)


def test_examples_are_encoded_once(model, monkeypatch):
    """Matching reuses the codes the prompt was built from: a request given example clips (not
    parsed examples, as the scheduler gets them) encodes each clip once."""
    seen = []
    real = model.audio_codes

    def counting(audio):
        seen.append(audio)
        return real(audio)

    monkeypatch.setattr(model, "audio_codes", counting)
    (a_in, a_out, text), clip = FEWSHOT["examples"][0], clip_path("speech_b")
    inputs = {"audio": clip, "examples": [{"input_audio": a_in, "output_audio": a_out,
              "output_transcription": text}], "instruction": FEWSHOT_PRESETS["vc"]}  # fmt: skip
    req = model.prepare("in_context_s2s", inputs, voice_match=True, max_new_steps=4)
    assert req.voice_pool is not None
    assert sorted(map(str, seen)) == sorted(map(str, [clip, a_in, a_out]))


def test_scheduled_request_is_matched(model):
    """The serving scheduler carries a prepared request's pool to both of its result paths."""
    clip = clip_path("speech_b")
    offline = model.in_context(clip, seed=5, voice_match=True, **FEWSHOT)
    examples, gen = FEWSHOT["examples"], {k: v for k, v in FEWSHOT.items() if k != "examples"}
    inputs = {"audio": clip, "examples": examples, "instruction": FEWSHOT_PRESETS["vc"]}
    job = {"task": "in_context_s2s", "inputs": inputs, "gen": {**gen, "seed": 5, "voice_match": True}}
    scheduler = Scheduler(model).start()

    async def scenario():
        whole = scheduler.submit(Job(**job))
        await whole.started()
        result = await whole.result()
        streamed = scheduler.submit(Job(**job, stream=True))
        await streamed.started()
        chunks = [c async for c in streamed.stream()]
        return result, chunks

    try:
        result, chunks = asyncio.run(asyncio.wait_for(scenario(), 60))
    finally:
        scheduler.stop()
    assert torch.equal(result.ids, offline.ids) and torch.equal(result.audio, offline.audio)
    assert torch.equal(chunks[-1].result.audio, offline.audio)
    assert torch.cat([c.audio for c in chunks if c.audio is not None]).shape == offline.audio.shape


def test_model_setting_applies_to_the_vc_instruction_only(model, tmp_path):
    """A model folder's voice_match is used for requests with the vc instruction; other
    instructions keep the query's voice unless the request asks for matching."""
    folder = tmp_path / "model"
    shutil.copytree(PARITY_DIR / "model", folder)
    (folder / "generation_config.json").write_text(
        json.dumps({"mimo_audio": {"task_samplers": {"in_context_s2s": {"voice_match": {"k": 2}}}}})
    )
    tuned = MimoAudio.from_pretrained(folder, PARITY_DIR / "tokenizer", device="cpu", progress=False)
    assert tuned.presets["in_context_s2s"].voice_match == VoiceMatch(k=2)
    clip = clip_path("speech_b")
    for instruction in ("vc", FEWSHOT_PRESETS["vc"]):
        res = tuned.in_context(clip, seed=3, instruction=instruction, **FEWSHOT)
        explicit = model.in_context(clip, seed=3, instruction=instruction, voice_match={"k": 2}, **FEWSHOT)
        assert torch.equal(res.ids, explicit.ids) and torch.equal(res.audio, explicit.audio)
        off = tuned.in_context(clip, seed=3, instruction=instruction, voice_match=False, **FEWSHOT)
        assert torch.equal(
            off.audio, model.in_context(clip, seed=3, instruction=instruction, **FEWSHOT).audio
        )
    den = tuned.in_context(clip, seed=3, instruction="denoise", **FEWSHOT)
    assert torch.equal(den.audio, model.in_context(clip, seed=3, instruction="denoise", **FEWSHOT).audio)
    forced = tuned.in_context(clip, seed=3, instruction="denoise", voice_match=True, **FEWSHOT)
    assert not torch.equal(forced.audio, den.audio)


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ({"in_context_s2s": {"voice_match": 3}}, "voice_match must be true, false or an object"),
        ({"in_context_s2s": {"voice_match": {"k": 0}}}, "k must be an integer from 1 to 64"),
        ({"tts": {"voice_match": True}}, "'text' and/or 'speech' objects$"),
    ],
)
def test_bad_generation_config(tmp_path, section, match):
    (tmp_path / "generation_config.json").write_text(json.dumps({"mimo_audio": {"task_samplers": section}}))
    with pytest.raises(MimoAudioError, match=match):
        model_presets(tmp_path)
    ok = {"in_context_s2s": {"voice_match": False}}
    (tmp_path / "generation_config.json").write_text(json.dumps({"mimo_audio": {"task_samplers": ok}}))
    assert model_presets(tmp_path)["in_context_s2s"].voice_match is None


def test_bad_request_values(model):
    with pytest.raises(MimoAudioError, match="voice_match applies to in_context_s2s only, not tts"):
        model.tts("Hi", voice_match=True, max_new_steps=4)
    with pytest.raises(MimoAudioError, match="k must be an integer"):
        model.in_context(clip_path("speech_b"), voice_match=99, **FEWSHOT)
    assert model.tts("Hi", voice_match=False, max_new_steps=2).text is not None  # off is fine anywhere


def test_cli_voice_match(tmp_path):
    ex = tmp_path / "ex"
    ex.mkdir()
    shutil.copy(clip_path("speech_a"), ex / "a_input.wav")
    shutil.copy(clip_path("speech_c"), ex / "a_output.wav")
    base = [BIN, "fewshot", clip_path("speech_b"), "--examples-dir", ex, "--model", PARITY_DIR / "model",
            "--tokenizer", PARITY_DIR / "tokenizer", "--max-new-steps", "6", "--quiet", "--seed", "1"]  # fmt: skip
    bad = subprocess.run(
        [*base, "--out", tmp_path / "bad.wav", "--voice-match", "{k"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "voice_match" in bad.stderr
    assert not (tmp_path / "bad.wav").exists()
    on = subprocess.run(
        [*base, "--out", tmp_path / "on.wav", "--voice-match", "2"], capture_output=True, text=True
    )
    off = subprocess.run(
        [*base, "--out", tmp_path / "off.wav", "--voice-match", "off"], capture_output=True, text=True
    )
    assert on.returncode == 0 and off.returncode == 0, (on.stderr, off.stderr)
    assert (tmp_path / "on.wav").read_bytes() != (tmp_path / "off.wav").read_bytes()
