"""Training recipes: YAML files parsed into dataclasses (one per section), validated on load.

A recipe names its ``kind`` (``tokenizer`` or ``lm``); unknown keys are errors (a typo must not
silently fall back to a default). Relative paths inside a recipe are resolved against the recipe's
folder. Every field is documented in docs/TRAINING.md; ``recipes/`` holds worked examples.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MimoAudioError

LM_LOSS_WEIGHTS = "100-12-8-6-4-2-2-1-1"  # text, then RVQ codebooks 0..7 (technical report)


class ConfigError(MimoAudioError):
    """A recipe that cannot be used (unknown key, wrong type, inconsistent sizes)."""


# ---------------------------------------------------------------------------- shared sections
@dataclass
class ModelSection:
    """Where the weights come from.

    ``init``: a checkpoint folder in the official format (``config.json`` + safetensors; for the LM
    also the text tokenizer files). ``config``: a ``config.json`` for a randomly initialised model
    (used when ``init`` is empty). ``text_tokenizer``: folder with ``tokenizer.json`` (LM default:
    ``init``). ``seed``: random-init seed. ``warm_start`` (tokenizer stage 1): a training checkpoint
    (full or packed) of a model with another ``config``; every tensor whose name and shape match is
    copied into the new model (tokenizer and A2T decoder), the others keep their initialisation, and
    codebooks that changed size are re-initialised by k-means on the first batch. The run itself
    starts at step 0 with a fresh schedule.
    """

    init: str | None = None
    config: str | None = None
    text_tokenizer: str | None = None
    seed: int = 0
    warm_start: str | None = None


@dataclass
class OptimSection:
    """AdamW with warm-up then ``cosine`` / ``constant`` / ``linear`` decay.

    ``lr`` is one float or a mapping from parameter group to learning rate; a group whose rate is
    ``null`` or 0 is frozen. ``warmup_steps`` (when set) overrides ``warmup_ratio`` × ``max_steps``.
    """

    lr: float | dict[str, float | None] = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    warmup_ratio: float = 0.01
    warmup_steps: int | None = None
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0

    def __post_init__(self) -> None:
        if self.schedule not in ("cosine", "constant", "linear"):
            raise ConfigError(f"optim.schedule must be cosine, constant or linear, got {self.schedule!r}")
        if not 0 <= self.warmup_ratio <= 1:
            raise ConfigError(f"optim.warmup_ratio must be in [0, 1], got {self.warmup_ratio}")


@dataclass
class DistributedSection:
    """How the processes started by ``torchrun`` share the work (one process: all of it).

    ``strategy``: ``auto`` (DDP when several processes, else none), ``none``, ``ddp`` or ``fsdp``
    (FSDP2 ``fully_shard`` per transformer block plus the root). ``device``: ``auto`` (CUDA when
    available), ``cpu`` or ``cuda``; backend gloo on CPU, nccl on CUDA. ``mixed_precision``:
    ``none``, ``bf16`` or ``fp16`` (autocast; FSDP casts parameters instead, gradients reduced in fp32).
    """

    strategy: str = "auto"
    device: str = "auto"
    mixed_precision: str = "none"
    grad_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.strategy not in ("auto", "none", "ddp", "fsdp"):
            raise ConfigError(f"distributed.strategy must be auto, none, ddp or fsdp, got {self.strategy!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"distributed.device must be auto, cpu or cuda, got {self.device!r}")
        if self.mixed_precision not in ("none", "bf16", "fp16"):
            raise ConfigError(
                f"distributed.mixed_precision must be none, bf16 or fp16, got {self.mixed_precision!r}"
            )


@dataclass
class RunSection:
    """Output folder, length of the run, logging, evaluation and checkpoint cadence.

    ``max_steps`` optimizer steps; metrics every ``log_every`` steps to ``metrics.csv`` (and
    TensorBoard when installed and ``tensorboard``); evaluation every ``eval_every`` steps (0: only at
    the end) on ``eval_batches`` batches; a checkpoint every ``save_every`` steps and at the end,
    keeping the ``keep_last`` newest. ``deterministic`` turns on deterministic kernels; ``threads``
    sets torch's intra-op CPU threads (default: torch's choice).
    """

    out_dir: str = "runs/default"
    seed: int = 0
    max_steps: int = 1000
    log_every: int = 10
    eval_every: int = 0
    eval_batches: int = 8
    save_every: int = 500
    keep_last: int = 3
    deterministic: bool = False
    tensorboard: bool = True
    threads: int | None = None

    def __post_init__(self) -> None:
        for key in ("max_steps", "log_every", "save_every", "keep_last"):
            if getattr(self, key) < 1:
                raise ConfigError(f"run.{key} must be >= 1, got {getattr(self, key)}")


# ---------------------------------------------------------------------------- LM
@dataclass
class LMDataSection:
    """LM data: manifests (JSONL) or code-shard folders; sequences packed to ``context_length`` patches.

    ``batch_rows`` rows (packed sequences) per optimizer step over all processes, ``micro_rows`` per
    forward pass and process (the rest is gradient accumulation). ``loss_on``: ``response`` (only
    the answer of prompt-style tasks is predicted) or ``all`` (every patch after the first).
    ``audio_tokenizer``: encode audio on the fly when a record names an audio file (slow; prefer
    ``mimo-audio data encode``). ``pack``: several examples per row (attention and positions are
    reset per example) or one example per row. ``tts_alignment``: TTS records with ``word_starts``
    become word-aligned streams (each word's tokens where its speech starts) rather than 5-token /
    5-patch chunks (:mod:`mimo_audio.train.lm_data`). ``speech_input_noise``: the probability that a
    predicted speech patch's *input* codes are those of another speech patch of the same example
    (targets unchanged), so the model learns to follow the text when its speech history is wrong.
    ``cache_examples``: keep every built training example in memory, so epochs after the first skip
    reading and building them (about 3x the loader's rows/s; a few hundred MB per 100 000 examples).
    """

    train: list[str] = field(default_factory=list)
    eval: list[str] = field(default_factory=list)
    context_length: int = 8192
    batch_rows: int = 8
    micro_rows: int = 1
    pack: bool = True
    shuffle: bool = True
    loss_on: str = "response"
    audio_tokenizer: str | None = None
    tts_alignment: bool = False
    speech_input_noise: float = 0.0
    cache_examples: bool = False

    def __post_init__(self) -> None:
        if self.loss_on not in ("response", "all"):
            raise ConfigError(f"data.loss_on must be response or all, got {self.loss_on!r}")
        if not 0 <= self.speech_input_noise < 1:
            raise ConfigError(f"data.speech_input_noise must be in [0, 1), got {self.speech_input_noise}")
        if self.context_length < 2 or self.batch_rows < 1 or self.micro_rows < 1:
            raise ConfigError("data.context_length must be >= 2 and batch_rows, micro_rows >= 1")


@dataclass
class LMLossSection:
    """Weights of the text loss and the per-codebook losses (dash string or list, text first).

    The total is ``Σ w_i · L_i / Σ w_i`` with ``L_i`` the mean cross-entropy of each term over the
    global batch. All-zero codebook weights (stage 1) skip the patch decoder entirely.
    """

    weights: str | list[float] = LM_LOSS_WEIGHTS

    def parsed(self, channels: int) -> tuple[float, ...]:
        value = self.weights
        parts = value.split("-") if isinstance(value, str) else list(value)
        try:
            out = tuple(float(v) for v in parts)
        except (TypeError, ValueError):
            raise ConfigError(f"loss.weights={value!r} is not a list of numbers") from None
        if len(out) != 1 + channels:
            raise ConfigError(f"loss.weights needs {1 + channels} values (text + {channels} codebooks)")
        if any(w < 0 for w in out) or not any(out):
            raise ConfigError(f"loss.weights must be non-negative and not all zero, got {value!r}")
        return out


@dataclass
class LoRASection:
    """Low-rank adapters on the backbone's linear layers (``rank`` 0: off, full fine-tuning)."""

    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class LMTrainConfig:
    """A complete LM recipe. LR groups: ``patch_encoder``, ``backbone``, ``patch_decoder``."""

    kind: str = "lm"
    model: ModelSection = field(default_factory=ModelSection)
    data: LMDataSection = field(default_factory=LMDataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LMLossSection = field(default_factory=LMLossSection)
    lora: LoRASection = field(default_factory=LoRASection)
    distributed: DistributedSection = field(default_factory=DistributedSection)
    run: RunSection = field(default_factory=RunSection)


# ---------------------------------------------------------------------------- tokenizer
@dataclass
class TokenizerDataSection:
    """Tokenizer data: JSONL manifests with ``audio`` paths (and ``text`` for the A2T loss).

    Clips are cut into ``segment_seconds`` crops (random offset per epoch; shorter clips are
    zero-padded and masked). A clip's transcript feeds the A2T loss only when the crop holds the
    whole clip. ``batch_size`` clips per step over all processes, ``micro_batch_size`` per forward pass.
    """

    train: list[str] = field(default_factory=list)
    eval: list[str] = field(default_factory=list)
    segment_seconds: float = 6.0
    batch_size: int = 8
    micro_batch_size: int = 8
    shuffle: bool = True

    def __post_init__(self) -> None:
        if self.segment_seconds <= 0 or self.batch_size < 1 or self.micro_batch_size < 1:
            raise ConfigError("data.segment_seconds, batch_size and micro_batch_size must be positive")


@dataclass
class QuantizerSection:
    """EMA codebooks: ``decay``, Laplace ``eps``, k-means init (``kmeans_iters``) for codebooks not
    yet initialised — on the first ``kmeans_init_batches`` training batches' encoder features;
    ``reinit_codebooks`` also re-fits warm-started ones — and dead-code replacement below
    ``threshold_ema_dead_code`` (default: the model config's). The threshold is an EMA of uses per
    batch: the official 2 suits batches of ~10⁵ frames, not a CPU batch of ~10³ (warned)."""

    decay: float = 0.99
    eps: float = 1e-5
    kmeans_init: bool = True
    kmeans_iters: int = 50
    kmeans_init_batches: int = 1
    reinit_codebooks: bool = False
    threshold_ema_dead_code: float | None = None

    def __post_init__(self) -> None:
        if self.kmeans_init_batches < 1 or self.kmeans_iters < 1:
            raise ConfigError("quantizer.kmeans_init_batches and kmeans_iters must be at least 1")


@dataclass
class A2TSection:
    """The small text decoder of the stage-1 audio-to-text loss (trained from scratch alongside)."""

    text_tokenizer: str | None = None
    dim: int = 512
    layers: int = 4
    heads: int = 8
    ffn_dim: int = 2048
    max_text_tokens: int = 256


@dataclass
class DiscriminatorSection:
    """Stage 2 discriminators: multi-period (``periods``) and multi-scale STFT (``stft_ffts``)."""

    periods: list[int] = field(default_factory=lambda: [2, 3, 5, 7, 11])
    mpd_channels: int = 32
    mpd_max_channels: int = 512
    stft_ffts: list[int] = field(default_factory=lambda: [2048, 1024, 512])
    stft_channels: int = 32
    lr: float = 1e-4
    betas: tuple[float, float] = (0.8, 0.99)


@dataclass
class TokenizerLossSection:
    """Stage 1: ``a2t``/``recon``/``commit`` = 10/1/1. Stage 2: ``recon``/``adv``/``fm`` = 1/1/2."""

    a2t: float = 10.0
    recon: float = 1.0
    commit: float = 1.0
    adv: float = 1.0
    fm: float = 2.0
    mel_scales: list[int] = field(default_factory=lambda: [5, 6, 7])


@dataclass
class TokenizerTrainConfig:
    """A complete tokenizer recipe. LR groups: ``encoder``, ``decoder`` (incl. vocoder), ``a2t``.

    ``decode_codebooks``: codebooks fed to the decoder (default all; the LM uses 8).
    """

    kind: str = "tokenizer"
    stage: int = 1
    model: ModelSection = field(default_factory=ModelSection)
    data: TokenizerDataSection = field(default_factory=TokenizerDataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: TokenizerLossSection = field(default_factory=TokenizerLossSection)
    quantizer: QuantizerSection = field(default_factory=QuantizerSection)
    a2t: A2TSection = field(default_factory=A2TSection)
    discriminator: DiscriminatorSection = field(default_factory=DiscriminatorSection)
    decode_codebooks: int | None = None
    distributed: DistributedSection = field(default_factory=DistributedSection)
    run: RunSection = field(default_factory=RunSection)

    def __post_init__(self) -> None:
        if self.stage not in (1, 2):
            raise ConfigError(f"stage must be 1 or 2, got {self.stage}")


# ---------------------------------------------------------------------------- parsing
PATH_FIELDS = {
    ("model", "init"),
    ("model", "config"),
    ("model", "text_tokenizer"),
    ("model", "warm_start"),
    ("data", "train"),
    ("data", "eval"),
    ("data", "audio_tokenizer"),
    ("a2t", "text_tokenizer"),
    ("run", "out_dir"),
}


def _check(value: Any, hint: Any, where: str) -> Any:
    """Coerce ``value`` to the annotation ``hint`` (ints to floats, lists to tuples) or raise."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} does not match {hint}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _build(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            value = [value] if isinstance(value, str) else value
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (arg,) = typing.get_args(hint)
        return [_check(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_check(v, a, where) for v, a in zip(value, args, strict=True))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _, val_hint = typing.get_args(hint)
        return {str(k): _check(v, val_hint, f"{where}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads "3e-5" as a string
        except ValueError:
            pass
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and isinstance(value, hint):
        return value
    raise ConfigError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def _build(cls: type, data: dict, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where or 'recipe'}: unknown key(s) {', '.join(unknown)}")
    kwargs = {k: _check(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where or 'recipe'}: {e}") from None


def _resolve_paths(config: Any, base: Path) -> None:
    for section, key in PATH_FIELDS:
        sec = getattr(config, section, None)
        if sec is None or not hasattr(sec, key):
            continue
        value = getattr(sec, key)
        if isinstance(value, list):
            setattr(sec, key, [_resolve(v, base) for v in value])
        elif value is not None:
            setattr(sec, key, _resolve(value, base))


def _resolve(value: str, base: Path) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def config_from_dict(data: dict, base_dir: str | Path | None = None) -> LMTrainConfig | TokenizerTrainConfig:
    """Build a recipe from a parsed mapping; relative paths resolve against ``base_dir`` (default: cwd)."""
    if not isinstance(data, dict):
        raise ConfigError("a recipe must be a mapping at the top level")
    kind = data.get("kind")
    classes = {"lm": LMTrainConfig, "tokenizer": TokenizerTrainConfig}
    if kind not in classes:
        raise ConfigError(f"recipe kind must be 'lm' or 'tokenizer', got {kind!r}")
    config = _build(classes[kind], data, "")
    _resolve_paths(config, Path(base_dir or ".").resolve())
    return config


def load_config(path: str | Path, overrides: dict | None = None) -> LMTrainConfig | TokenizerTrainConfig:
    """Read a YAML recipe. ``overrides`` (nested mapping) is merged on top before validation."""
    try:
        import yaml
    except ImportError:
        raise ConfigError("reading recipes needs PyYAML: pip install 'mimo-audio[train]'") from None
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if overrides:
        data = merge(data, overrides)
    return config_from_dict(data, path.parent)


def merge(base: dict, extra: dict) -> dict:
    """Recursive dict merge into a new dict (``extra`` wins; lists and scalars are replaced; neither
    input is shared with or changed through the result)."""
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = (
            merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
        )
    return out


def config_to_dict(config: Any) -> dict:
    """Plain nested dict (tuples as lists) — what checkpoints store as ``recipe``."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(config))
