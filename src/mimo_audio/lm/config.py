"""LM configuration: the MiMo-Audio ``config.json`` (a Qwen2 config plus speech keys), SPEC §1.2.

:class:`LMConfig` mirrors the checkpoint keys; :class:`StackConfig` describes one Qwen2 stack, and the
three stacks of the model (backbone, patch encoder ``input_local``, patch decoder ``local``) are derived
from the main config the way the reference derives them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checkpoint import read_config
from ..errors import CheckpointError

MAX_PATCHES = 8192  # the reference's built-in stopper: total patches (prompt + generated)
FRAME_RATE = 25.0  # audio-tokenizer frames per second (a patch holds ``group_size`` frames)
ACTIVATIONS = ("silu", "gelu", "gelu_pytorch_tanh", "relu")


@dataclass(frozen=True)
class StackConfig:
    """One Qwen2 decoder stack (no embedding table): sizes, norm, RoPE and attention kind."""

    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    act: str = "silu"
    causal: bool = True

    def __post_init__(self) -> None:
        if self.n_heads % self.n_kv_heads:
            raise CheckpointError(
                f"{self.n_heads} attention heads are not a multiple of {self.n_kv_heads} KV heads"
            )
        if self.head_dim % 2:
            raise CheckpointError(f"head_dim must be even for RoPE, got {self.head_dim}")
        if self.act not in ACTIVATIONS:
            raise CheckpointError(
                f"unsupported hidden_act {self.act!r} (supported: {', '.join(ACTIVATIONS)})"
            )


def parse_channels(value: Any, channels: int, key: str) -> tuple[int, ...]:
    """A dash-string (``"1025-1025-129-…"``) → ints; anything else → ``int(value)`` × ``channels``."""
    try:
        if isinstance(value, str) and "-" in value:
            out = tuple(int(v) for v in value.split("-"))
        elif isinstance(value, list | tuple):
            out = tuple(int(v) for v in value)
        else:
            out = (int(value),) * channels
    except (TypeError, ValueError):
        raise CheckpointError(
            f"config.json: {key}={value!r} is not a dash-separated list of integers"
        ) from None
    if len(out) != channels:
        raise CheckpointError(f"config.json: {key} has {len(out)} entries but audio_channels is {channels}")
    return out


@dataclass(frozen=True)
class LMConfig:
    """MiMo-Audio LM config. Defaults are the class defaults of the reference (Qwen2 ones for the backbone)."""

    hidden_size: int = 4096
    intermediate_size: int = 22016
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None  # None → num_attention_heads (Qwen2 rule)
    head_dim: int = 128  # read from config.json; NOT hidden/heads when absent (MiMo-Audio class default)
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_position_embeddings: int = 32768
    vocab_size: int = 151936
    tie_word_embeddings: bool = False
    speech_vocab_size: tuple[int, ...] = (1025, 1025, 129, 129, 129, 129, 129, 129)
    speech_zeroemb_idx: tuple[int, ...] = (1024, 1024, 128, 128, 128, 128, 128, 128)
    delay_pattern: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7)
    group_size: int = 4
    audio_channels: int = 8
    local_dim: int = 1024
    local_layers: int = 16
    local_attn_heads: int = 64
    local_ffn_dim: int = 4096
    input_local_layers: int = 6
    input_local_dim: int | None = None  # None → local_dim
    input_full_attention: bool | None = None  # true → bidirectional patch encoder; false/None → causal
    extra: dict = field(default_factory=dict, compare=False, repr=False)  # unused keys, kept for reference

    def __post_init__(self) -> None:
        C = self.audio_channels
        for key in ("speech_vocab_size", "speech_zeroemb_idx", "delay_pattern"):
            object.__setattr__(self, key, parse_channels(getattr(self, key), C, key))
        if self.num_key_value_heads is None:
            object.__setattr__(self, "num_key_value_heads", self.num_attention_heads)
        if self.input_local_dim is None:
            object.__setattr__(self, "input_local_dim", self.local_dim)
        if any(d < 0 for d in self.delay_pattern):
            raise CheckpointError(f"config.json: negative delay in delay_pattern {self.delay_pattern}")
        bad = [c for c in range(C) if not 0 <= self.speech_zeroemb_idx[c] < self.speech_vocab_size[c]]
        if bad:
            raise CheckpointError(
                f"config.json: speech_zeroemb_idx outside speech_vocab_size for codebooks {bad}"
            )
        if self.group_size < 1 or C < 1:
            raise CheckpointError("config.json: group_size and audio_channels must be positive")
        for dim, heads, name in (
            (self.local_dim, self.local_attn_heads, "local_dim"),
            (self.input_local_dim, self.local_attn_heads, "input_local_dim"),
        ):
            if dim % heads:
                raise CheckpointError(
                    f"config.json: {name}={dim} is not divisible by local_attn_heads={heads}"
                )

    # ------------------------------------------------------------------ parsing
    @classmethod
    def from_dict(cls, cfg: dict) -> LMConfig:
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in cfg.items() if k in names and v is not None}
        extra = {k: v for k, v in cfg.items() if k not in names}
        rope_scaling = cfg.get("rope_scaling")
        if rope_scaling and (rope_scaling.get("rope_type") or rope_scaling.get("type")) not in (
            None,
            "default",
        ):
            raise CheckpointError(f"config.json: rope_scaling {rope_scaling} is not supported")
        if "input_full_attention" in cfg:
            kwargs["input_full_attention"] = cfg["input_full_attention"]
        try:
            return cls(**kwargs, extra=extra)
        except TypeError as e:
            raise CheckpointError(f"config.json: {e}") from None

    @classmethod
    def from_dir(cls, folder: str | Path) -> LMConfig:
        return cls.from_dict(read_config(folder))

    # ------------------------------------------------------------------ derived
    @property
    def backbone(self) -> StackConfig:
        return StackConfig(
            dim=self.hidden_size,
            n_layers=self.num_hidden_layers,
            n_heads=self.num_attention_heads,
            n_kv_heads=self.num_key_value_heads,
            head_dim=self.head_dim,
            ffn_dim=self.intermediate_size,
            norm_eps=self.rms_norm_eps,
            rope_theta=self.rope_theta,
            act=self.hidden_act,
            causal=True,
        )

    @property
    def local(self) -> StackConfig:
        """Patch decoder: ``local_*`` sizes, KV heads = heads, head_dim always derived."""
        return StackConfig(
            dim=self.local_dim,
            n_layers=self.local_layers,
            n_heads=self.local_attn_heads,
            n_kv_heads=self.local_attn_heads,
            head_dim=self.local_dim // self.local_attn_heads,
            ffn_dim=self.local_ffn_dim,
            norm_eps=self.rms_norm_eps,
            rope_theta=self.rope_theta,
            act=self.hidden_act,
            causal=True,
        )

    @property
    def input_local(self) -> StackConfig:
        """Patch encoder: ``input_local_dim`` wide, ``local_attn_heads`` heads, FFN 4 × width."""
        dim = self.input_local_dim
        return StackConfig(
            dim=dim,
            n_layers=self.input_local_layers,
            n_heads=self.local_attn_heads,
            n_kv_heads=self.local_attn_heads,
            head_dim=dim // self.local_attn_heads,
            ffn_dim=4 * dim,
            norm_eps=self.rms_norm_eps,
            rope_theta=self.rope_theta,
            act=self.hidden_act,
            causal=self.input_full_attention is not True,
        )

    @property
    def local_steps(self) -> int:
        """Patch-decoder steps per patch: ``group_size + max(delay_pattern)``."""
        return self.group_size + max(self.delay_pattern)

    @property
    def max_speech_vocab(self) -> int:
        return max(self.speech_vocab_size)
