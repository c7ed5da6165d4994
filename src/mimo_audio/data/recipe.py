"""The ``data prepare`` recipe: YAML sections per stage, merged over the shipped defaults, validated.

Every key is checked (an unknown key or stage is a one-line :class:`MimoAudioError`). Sections:
``run`` (Ray resources, batching), ``models`` (the MiMo folders the ``mimo`` backends share),
``ingest`` / ``vad`` / ``segment`` (the per-input stages, always run first), ``stages`` (the ordered
per-segment stages) and one section per such stage. In a stage section, ``min_<score>`` /
``max_<score>`` keys are thresholds on the scores that stage computes; a segment outside one is
dropped with reason ``<score>``. See docs/DATA.md for every key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MimoAudioError
from ..train.config import merge
from .filters import SamplingConfig, Threshold, parse_thresholds
from .ingest import IngestConfig
from .language import LanguageConfig
from .speakers import SegmentConfig
from .vad import VadConfig

DEFAULT_RECIPE = Path(__file__).resolve().parents[3] / "recipes" / "data_prepare.yaml"

RUN = {
    "num_cpus": 2,
    "workers": 1,
    "batch_files": 4,
    "threads": 1,
    "gpus_per_worker": 0,
    "object_store_mb": 256,
}
MODELS = {
    "model": None, "tokenizer": None, "device": "cpu", "dtype": "float32",
    "batch_size": 8, "max_new_steps": 64, "seed": 0,
}  # fmt: skip
# stage → (option keys with defaults, scores it computes, stages that must run before it)
STAGES: dict[str, tuple[dict[str, Any], tuple[str, ...], tuple[str, ...]]] = {
    "signal": ({}, ("snr_db", "clipping"), ()),
    "transcribe": ({"backend": "mimo"}, ("asr_confidence",), ()),
    "language": ({"keep": ["zh", "en"], "min_confidence": 0.95, "candidates": None}, ("lang_confidence",), ("transcribe",)),
    "agreement": ({"backend": "pocketsphinx", "languages": ["en"]}, ("agreement",), ("transcribe", "language")),
    "quality": ({}, ("transcript_quality", "chars_per_second"), ("transcribe",)),
    "blocklist": ({"builtin": True, "file": None}, (), ("transcribe",)),
    "caption": ({"backend": "mimo", "question": None}, (), ()),
    "sample": ({"repeat": 3, "high_quality": {}}, (), ()),
    "tokenize": ({"tokenizer": None, "codebooks": 8, "group_size": 4, "batch_size": 8}, (), ()),
}  # fmt: skip
TOP = {"run", "models", "ingest", "vad", "segment", "stages", *STAGES}
DEFAULT_STAGES = [
    "signal", "transcribe", "language", "agreement", "quality", "blocklist", "caption", "sample", "tokenize",
]  # fmt: skip


@dataclass
class Recipe:
    """A validated recipe. ``sections[stage]`` holds the options of each listed stage and
    ``thresholds[stage]`` its score thresholds."""

    run: dict[str, Any]
    models: dict[str, Any]
    ingest: IngestConfig
    vad: VadConfig
    segment: SegmentConfig
    stages: list[str]
    sections: dict[str, dict[str, Any]]
    thresholds: dict[str, dict[str, Threshold]]
    raw: dict[str, Any]

    def digest(self) -> str:
        """Hash of everything that changes the outputs (``run`` excluded): a done marker with another
        digest is redone."""
        body = {k: v for k, v in self.raw.items() if k != "run"}
        return hashlib.sha1(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def check_resources(self) -> None:
        """Backend names, and the model folders the chosen backends and ``tokenize`` need, before any
        worker starts."""
        from .caption import BACKENDS as CAPTIONERS
        from .transcribe import BACKENDS as RECOGNISERS

        chosen = {
            s: self.sections[s]["backend"] for s in ("transcribe", "agreement", "caption") if s in self.stages
        }
        for stage, backend in chosen.items():
            known = CAPTIONERS if stage == "caption" else RECOGNISERS
            if backend not in known:
                raise MimoAudioError(
                    f"recipe: unknown {stage}.backend {backend!r} (choose from {', '.join(known)})"
                )
        folders = {}
        if "mimo" in chosen.values():
            if not self.models["model"] or not self.models["tokenizer"]:
                raise MimoAudioError(
                    "the mimo backends need models.model and models.tokenizer (--model, --tokenizer)"
                )
            folders.update(model=self.models["model"], tokenizer=self.models["tokenizer"])
        if "tokenize" in self.stages:
            tok = self.sections["tokenize"]["tokenizer"] or self.models["tokenizer"]
            if not tok:
                raise MimoAudioError(
                    "the tokenize stage needs tokenize.tokenizer or models.tokenizer (--tokenizer)"
                )
            folders["tokenize.tokenizer"] = tok
        for what, folder in folders.items():
            if not Path(str(folder)).is_dir():
                raise MimoAudioError(f"{what} folder not found: {folder}")

    @property
    def language(self) -> LanguageConfig:
        sec = self.sections["language"]
        cands = sec["candidates"]
        return LanguageConfig(
            tuple(sec["keep"] or ()),
            float(sec["min_confidence"]),
            tuple(cands or ()),
        )

    @property
    def sampling(self) -> SamplingConfig:
        sec = self.sections["sample"]
        return SamplingConfig(
            int(sec["repeat"]), parse_thresholds(sec["high_quality"] or {}, "sample.high_quality")
        )


def read_yaml(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise MimoAudioError(f"recipe not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise MimoAudioError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise MimoAudioError(f"{path}: a recipe must be a mapping of sections")
    return data


def _section(raw: dict, name: str) -> dict:
    sec = raw.get(name) or {}
    if not isinstance(sec, dict):
        raise MimoAudioError(f"recipe: section {name!r} must be a mapping")
    return sec


def _fields(cls, sec: dict, name: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    for k, v in sec.items():
        if k not in known:
            raise MimoAudioError(f"recipe: unknown key {name}.{k} (known: {', '.join(known)})")
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise MimoAudioError(f"recipe: {name}.{k} must be a number, got {v!r}")
    return cls(**{k: type(known[k].default)(v) for k, v in sec.items()})


def _options(sec: dict, defaults: dict, name: str) -> dict:
    for k in sec:
        if k not in defaults:
            raise MimoAudioError(f"recipe: unknown key {name}.{k} (known: {', '.join(defaults) or 'none'})")
    return {**defaults, **sec}


def build(raw: dict) -> Recipe:
    """Validate a merged recipe mapping."""
    for k in raw:
        if k not in TOP:
            raise MimoAudioError(f"recipe: unknown section {k!r}")
    stages = raw.get("stages") or []
    if not isinstance(stages, list) or not all(isinstance(s, str) for s in stages):
        raise MimoAudioError("recipe: 'stages' must be a list of stage names")
    sections: dict[str, dict[str, Any]] = {}
    thresholds: dict[str, dict[str, Threshold]] = {}
    for i, stage in enumerate(stages):
        if stage not in STAGES:
            raise MimoAudioError(f"recipe: unknown stage {stage!r} (known: {', '.join(STAGES)})")
        if stage in stages[:i]:
            raise MimoAudioError(f"recipe: stage {stage!r} is listed twice")
        defaults, scores, needs = STAGES[stage]
        for need in needs:
            if need not in stages[:i]:
                raise MimoAudioError(f"recipe: stage {stage!r} needs {need!r} before it")
    for stage, (defaults, scores, _) in STAGES.items():
        sec = _section(raw, stage)
        limits = {k: v for k, v in sec.items() if k.split("_", 1)[0] in ("min", "max") and k not in defaults}
        thresholds[stage] = parse_thresholds(limits, stage)
        for score in thresholds[stage]:
            if score not in scores:
                raise MimoAudioError(
                    f"recipe: stage {stage!r} computes no score {score!r} (it has: {', '.join(scores) or 'none'})"
                )
        sections[stage] = _options({k: v for k, v in sec.items() if k not in limits}, defaults, stage)
    recipe = Recipe(
        run=_options(_section(raw, "run"), RUN, "run"),
        models=_options(_section(raw, "models"), MODELS, "models"),
        ingest=_fields(IngestConfig, _section(raw, "ingest"), "ingest"),
        vad=_fields(VadConfig, _section(raw, "vad"), "vad"),
        segment=_fields(SegmentConfig, _section(raw, "segment"), "segment"),
        stages=list(stages),
        sections=sections,
        thresholds=thresholds,
        raw=raw,
    )
    if recipe.segment.max_seconds <= 2 * recipe.segment.min_seconds:
        raise MimoAudioError("recipe: segment.max_seconds must exceed twice segment.min_seconds")
    recipe.sampling  # noqa: B018 - validates sample.high_quality
    return recipe


def load_recipe(path: str | Path | None = None, overrides: dict | None = None) -> Recipe:
    """The shipped defaults (recipes/data_prepare.yaml in a source checkout, else the same values
    built in), merged with ``path`` (a YAML file) and ``overrides``, validated."""
    raw = read_yaml(DEFAULT_RECIPE) if DEFAULT_RECIPE.is_file() else {"stages": DEFAULT_STAGES}
    if path is not None:
        raw = merge(raw, read_yaml(Path(path)))
    if overrides:
        raw = merge(raw, overrides)
    return build(raw)
