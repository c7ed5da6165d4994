"""Per-task generation presets: samplers (SPEC §8.2), stop tokens (§8.3), model variant, output kind."""

from __future__ import annotations

from dataclasses import dataclass

from .lm.sampler import SamplerConfig

GREEDY = SamplerConfig(do_sample=False)
SPEECH = SamplerConfig(do_sample=True, temperature=0.9, top_p=0.95)


@dataclass(frozen=True)
class TaskPreset:
    """How a task generates: samplers, stop tokens (by string), variant, and whether it speaks."""

    text_sampler: SamplerConfig
    speech_sampler: SamplerConfig
    stop_tokens: tuple[str, ...]
    variant: str  # "instruct" or "base"
    speech_output: bool


_TEXT_STOPS = ("<|endoftext|>", "<|im_end|>")
_SPEECH_STOPS = ("<|endoftext|>", "<|eostm|>", "<|im_end|>")

PRESETS: dict[str, TaskPreset] = {
    "asr": TaskPreset(GREEDY, SPEECH, _TEXT_STOPS, "instruct", False),
    "tts": TaskPreset(
        SamplerConfig(do_sample=True, temperature=0.6, top_k=0, top_p=1.0),
        SPEECH,
        _SPEECH_STOPS,
        "instruct",
        True,
    ),
    "audio_understanding": TaskPreset(
        SamplerConfig(do_sample=True, temperature=0.3, top_k=0, top_p=0.95),
        SPEECH,
        _TEXT_STOPS,
        "instruct",
        False,
    ),
    "spoken_dialogue": TaskPreset(
        SamplerConfig(do_sample=True, temperature=0.6, top_k=0, top_p=0.95),
        SPEECH,
        _SPEECH_STOPS,
        "instruct",
        True,
    ),
    "s2t_dialogue": TaskPreset(
        SamplerConfig(do_sample=True, temperature=0.6, top_k=0, top_p=0.95),
        SPEECH,
        _TEXT_STOPS,
        "instruct",
        False,
    ),
    "text_dialogue": TaskPreset(
        SamplerConfig(do_sample=True, temperature=0.4, top_k=0, top_p=0.95),
        SPEECH,
        _TEXT_STOPS,
        "instruct",
        False,
    ),
    "in_context_s2s": TaskPreset(GREEDY, SPEECH, ("<|endoftext|>", "<|eostm|>"), "base", True),
    # No reference builder exists for continuation; the reference's default samplers are used, and the
    # speech stream may end with <|eosp|> (our assumption) besides the usual end tokens.
    "continuation": TaskPreset(
        SamplerConfig(do_sample=True, temperature=0.6, top_k=50, top_p=0.95),
        SamplerConfig(do_sample=True, temperature=0.9, top_k=50, top_p=0.95),
        ("<|endoftext|>", "<|eosp|>", "<|eostm|>"),
        "base",
        True,
    ),
}

TASK_NAMES = tuple(PRESETS)
