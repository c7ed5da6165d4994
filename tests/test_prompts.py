"""Prompt parity: every ``prompt.<name>`` in expected.json rebuilt from its recorded inputs.

Audio enters as the fixture's own ``<clip>.lm_codes`` here, isolating the builders from the audio
tokenizer; tests/test_api.py rebuilds the same prompts from the wav files through the public API.
"""

from __future__ import annotations

import random

import pytest
import torch

from mimo_audio.checkpoint import read_config
from mimo_audio.prompts import (
    ASR_TEMPLATES,
    TTS_TEMPLATES,
    Example,
    Message,
    PromptBuilder,
    normalize_tts_text,
    parse_messages,
)
from mimo_audio.text_tokenizer import TextTokenizer

from conftest import EXPECTED, PARITY_DIR


@pytest.fixture(scope="module")
def builder() -> PromptBuilder:
    cfg = read_config(PARITY_DIR / "model")
    empty = [int(x) for x in str(cfg["speech_zeroemb_idx"]).split("-")]
    if len(empty) == 1:
        empty = empty * cfg.get("audio_channels", 8)
    return PromptBuilder(TextTokenizer.from_dir(PARITY_DIR / "model"), empty, cfg.get("group_size", 4))


def build(builder: PromptBuilder, spec: dict, codes) -> torch.Tensor:
    task = spec["task"]
    opt = lambda key: codes(spec[key]) if spec.get(key) else None  # noqa: E731
    if task == "asr":
        return builder.asr(codes(spec["audio"]), spec.get("template"))
    if task == "tts":
        return builder.tts(spec["text"], spec.get("instruction"), opt("prompt_speech"), spec.get("template"))
    if task == "audio_understanding":
        return builder.audio_understanding(
            codes(spec["audio"]), spec["question"], spec.get("thinking", False)
        )
    if task in ("spoken_dialogue", "s2t_dialogue", "text_dialogue"):
        if "messages" in spec:
            msgs = _parse_clip_messages(EXPECTED["messages"][spec["messages"]], codes)
        elif task == "text_dialogue":
            msgs = [Message("user", text=spec["text"])]
        else:
            msgs = [Message("user", audio=codes(spec["audio"]))]
        return builder.dialogue(
            msgs,
            speech_output=task == "spoken_dialogue",
            thinking=spec.get("thinking", False),
            system_prompt=spec.get("system_prompt"),
            prompt_speech=opt("prompt_speech"),
        )
    if task == "in_context_s2s":
        examples = [
            Example(codes(e["input_audio"]), codes(e["output_audio"]), e.get("output_transcription") or "")
            for e in spec["examples"]
        ]
        return builder.in_context_s2s(spec["instruction"], examples, codes(spec["audio"]))
    raise AssertionError(f"unknown task {task}")


class _Clip:
    """A clip name inside a message (audio, not text)."""

    def __init__(self, name: str) -> None:
        self.name = name


def _clip_or_text(content):
    if isinstance(content, dict):
        return {k: (_Clip(v) if k == "audio" else v) for k, v in content.items()}
    return _Clip(content) if content in EXPECTED["clips"] else content


def _parse_clip_messages(raw, codes):
    msgs = [{"role": m["role"], "content": _clip_or_text(m["content"])} for m in raw]
    return parse_messages(msgs, lambda clip: codes(clip.name))


@pytest.mark.parametrize("name", sorted(EXPECTED["prompts"]))
def test_prompt_parity(builder, expected_tensors, name):
    spec = EXPECTED["prompts"][name]
    got = build(builder, spec, lambda clip: expected_tensors[f"{clip}.lm_codes"])
    want = expected_tensors[f"prompt.{name}"].long()
    assert got.dtype == torch.long
    assert got.shape == want.shape
    assert torch.equal(got, want)


def test_prompt_layout(builder, expected_tensors):
    codes = expected_tensors[f"{next(iter(EXPECTED['clips']))}.lm_codes"]
    ids = builder.audio(codes)
    g = builder.group_size
    assert ids.shape == (1 + builder.channels, codes.shape[0] + 2 * g)
    assert (ids[0].view(-1, g)[:, 1:] == -100).all()
    assert ids[0, 0] == builder.ids["<|sosp|>"] and ids[0, -g] == builder.ids["<|eosp|>"]
    assert torch.equal(ids[1:, g:-g].T, codes)
    assert (ids[1:, :g] == builder.empty_ids[:, None]).all()


def test_stream_chunking(builder, expected_tensors):
    codes = expected_tensors[f"{next(iter(EXPECTED['clips']))}.lm_codes"][:48]  # 12 patches
    text = "one two three four five six seven"
    tokens = builder.tok.encode(text)
    ids = builder.stream(text, codes)
    g = builder.group_size
    text_col = ids[0, ::g].tolist()
    empty = builder.ids["<|empty|>"]
    assert text_col[0] == builder.ids["<|sostm|>"] and text_col[-1] == builder.ids["<|eostm|>"]
    body = text_col[1:-1]
    assert [t for t in body if t != empty] == tokens + [builder.ids["<|eot|>"]]
    assert body.count(empty) == codes.shape[0] // g
    # first chunk: 5 text tokens then 5 speech patches
    assert body[:5] == tokens[:5] and body[5:10] == [empty] * 5
    # empty text: a lone <|eot|> chunk
    assert builder.stream("", None)[0, ::g].tolist() == [
        builder.ids[t] for t in ("<|sostm|>", "<|eot|>", "<|eostm|>")
    ]


def test_template_choice_is_seedable(builder, expected_tensors):
    codes = expected_tensors[f"{next(iter(EXPECTED['clips']))}.lm_codes"]
    a = builder.asr(codes, rng=random.Random(3))
    b = builder.asr(codes, rng=random.Random(3))
    assert torch.equal(a, b)
    chosen = random.Random(3).choice(ASR_TEMPLATES)
    assert torch.equal(a, builder.asr(codes, template=chosen))
    zh = builder.tts("北京欢迎你", rng=random.Random(0))
    assert torch.equal(zh, builder.tts("北京欢迎你", template=random.Random(0).choice(TTS_TEMPLATES["zh"])))


def test_tts_text_normalisation():
    assert normalize_tts_text("HELLO WORLD") == "Hello world"
    assert normalize_tts_text("hello world") == "Hello world"
    assert normalize_tts_text("Hello World") == "Hello World"
    assert normalize_tts_text("北京欢迎你") == "北京欢迎你"


def test_bad_prompt_inputs(builder, expected_tensors):
    from mimo_audio.errors import MimoAudioError

    codes = expected_tensors[f"{next(iter(EXPECTED['clips']))}.lm_codes"]
    with pytest.raises(MimoAudioError, match="multiple of"):
        builder.audio(codes[:-1])
    with pytest.raises(MimoAudioError, match=r"\[frames"):
        builder.audio(codes[:, :3])
    with pytest.raises(MimoAudioError, match="last message"):
        builder.dialogue([Message("assistant", text="hi")], speech_output=False)
    with pytest.raises(MimoAudioError, match="role"):
        builder.dialogue([Message("robot", text="hi"), Message("user", text="x")], speech_output=False)
    with pytest.raises(MimoAudioError, match="role"):
        parse_messages([{"content": "x"}], lambda c: c)
