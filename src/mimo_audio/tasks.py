"""Per-task generation presets: samplers (SPEC §8.2), stop tokens (§8.3), model variant, output kind."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

from .errors import MimoAudioError
from .lm.sampler import SamplerConfig
from .voice_match import VoiceMatch

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
    best_of: int = 1  # in_context_s2s: candidates generated per request, the best kept (mimo_audio.rerank)
    # in_context_s2s: voice matching of voice-conversion outputs to the examples (mimo_audio.voice_match)
    voice_match: VoiceMatch | None = None


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

# A model folder may tune the samplers for its own size in its generation_config.json (the official
# folders do not): {"mimo_audio": {"task_samplers": {"tts": {"text": {"do_sample": false},
# "speech": {"do_sample": false}}}}}. Fields not given keep the preset's value; explicit options of
# a request still win over both. ``in_context_s2s`` may also set ``"best_of": N`` (1..MAX_BEST_OF):
# N candidates per request, the one that follows the examples best is kept (mimo_audio.rerank); and
# ``"voice_match": {"k": 4, "content": 0.4, "timbre": 1.0}`` (or true): voice-conversion outputs
# rendered nearer the examples' voice (mimo_audio.voice_match).
GENERATION_CONFIG = "generation_config.json"
_SAMPLER_TYPES = {"do_sample": (bool,), "temperature": (int, float), "top_k": (int,), "top_p": (int, float)}
assert set(_SAMPLER_TYPES) == {f.name for f in fields(SamplerConfig)}
BEST_OF_TASKS = ("in_context_s2s",)
MAX_BEST_OF = 16


def check_best_of(task: str, value: object) -> int:
    """``value`` as a valid ``best_of`` for ``task``, else a one-line :class:`MimoAudioError`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BEST_OF:
        raise MimoAudioError(f"best_of must be an integer from 1 to {MAX_BEST_OF}, got {value!r}")
    if value > 1 and task not in BEST_OF_TASKS:
        raise MimoAudioError(f"best_of applies to {', '.join(BEST_OF_TASKS)} only, not {task}")
    return value


def model_presets(model_dir: str | os.PathLike) -> dict[str, TaskPreset]:
    """The task presets for the model in ``model_dir``: :data:`PRESETS` with the samplers of its
    ``generation_config.json`` (``mimo_audio.task_samplers``) applied. Raises
    :class:`MimoAudioError` on a malformed section."""
    path = Path(model_dir) / GENERATION_CONFIG
    if not path.is_file():
        return dict(PRESETS)
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MimoAudioError(f"{path}: not valid JSON ({e})") from None
    section = cfg.get("mimo_audio", {}) if isinstance(cfg, dict) else {}
    samplers = section.get("task_samplers", {}) if isinstance(section, dict) else None
    if not isinstance(samplers, dict):
        raise MimoAudioError(f"{path}: mimo_audio.task_samplers must be an object")
    presets = dict(PRESETS)
    for task, heads in samplers.items():
        if task not in PRESETS:
            raise MimoAudioError(
                f"{path}: unknown task {task!r} in task_samplers (known: {', '.join(PRESETS)})"
            )
        extras = ("best_of", "voice_match") if task in BEST_OF_TASKS else ()
        if not isinstance(heads, dict) or not set(heads) <= {"text", "speech", *extras}:
            extra = f" or {' / '.join(map(repr, extras))}" if extras else ""
            raise MimoAudioError(f"{path}: task_samplers.{task} takes 'text' and/or 'speech' objects{extra}")
        changes = {}
        heads = dict(heads)
        if "best_of" in heads:
            try:
                changes["best_of"] = check_best_of(task, heads.pop("best_of"))
            except MimoAudioError as e:
                raise MimoAudioError(f"{path}: task_samplers.{task}: {e}") from None
        if "voice_match" in heads:
            value = heads.pop("voice_match")
            if value is not None and not isinstance(value, (bool, dict)):
                raise MimoAudioError(
                    f"{path}: task_samplers.{task}.voice_match must be true, false or an object, got {value!r}"
                )
            try:
                changes["voice_match"] = VoiceMatch.parse(value)
            except MimoAudioError as e:
                raise MimoAudioError(f"{path}: task_samplers.{task}: {e}") from None
        for head, values in heads.items():
            if not isinstance(values, dict) or not set(values) <= set(_SAMPLER_TYPES):
                raise MimoAudioError(
                    f"{path}: task_samplers.{task}.{head} takes {', '.join(sorted(_SAMPLER_TYPES))}"
                )
            for k, v in values.items():
                if not isinstance(v, _SAMPLER_TYPES[k]) or (k != "do_sample" and isinstance(v, bool)):
                    raise MimoAudioError(f"{path}: task_samplers.{task}.{head}.{k}: bad value {v!r}")
            try:  # the ranges are SamplerConfig's own checks
                changes[f"{head}_sampler"] = replace(getattr(presets[task], f"{head}_sampler"), **values)
            except MimoAudioError as e:
                raise MimoAudioError(f"{path}: task_samplers.{task}.{head}: {e}") from None
        presets[task] = replace(presets[task], **changes)
    return presets
