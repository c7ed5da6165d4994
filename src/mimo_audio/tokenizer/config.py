"""Configuration of the audio tokenizer, parsed from a checkpoint's ``config.json``.

Field names are the on-disk keys (``model_type`` ``mimo_audio_tokenizer``); defaults are the class
defaults used when a key is absent. Derived sizes (head dims, per-layer codebook sizes, samples per
code frame) are filled in ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import CheckpointError

ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu")
LN_TYPES = ("LayerNorm", "RMSNorm")


def _window(value: Any, key: str) -> tuple[int, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise CheckpointError(f"tokenizer config: {key} must be a [left, right] pair, got {value!r}")
    return int(value[0]), int(value[1])


def _codebook_sizes(value: Any, num_quantizers: int) -> tuple[int, ...]:
    """A bare int is used for every layer; a short list is extended with its last value."""
    if isinstance(value, int):
        sizes = [value] * num_quantizers
    elif isinstance(value, (list, tuple)) and value and all(isinstance(v, int) for v in value):
        sizes = list(value)[:num_quantizers]
        sizes += [sizes[-1]] * (num_quantizers - len(sizes))
    else:
        raise CheckpointError(
            f"tokenizer config: codebook_size must be an int or a list of ints, got {value!r}"
        )
    if any(s <= 0 for s in sizes):
        raise CheckpointError(f"tokenizer config: codebook sizes must be positive, got {value!r}")
    return tuple(sizes)


@dataclass
class TokenizerConfig:
    """Every size of the audio tokenizer (SPEC §1.1). Use :meth:`from_dict` for a ``config.json``."""

    sampling_rate: int = 24000
    hop_length: int = 240
    nfft: int = 1024
    window_size: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float | None = None
    d_model: int = 768
    kernel_size: int = 3
    stride_size: int = 2
    avg_pooler: int = 1
    scale_embedding: bool = True
    activation_function: str = "gelu"
    encoder_layers: int = 8
    encoder_attention_heads: int = 12
    encoder_ffn_dim: int = 3072
    encoder_skip_layer_id: int | None = None
    encoder_causal: bool = False
    encoder_attn_window_size: tuple[int, int] = (-1, -1)
    decoder_layers: int = 8
    decoder_attention_heads: int = 12
    decoder_ffn_dim: int = 3072
    decoder_kernel_size: int = 3
    decoder_stride_size: int = 2
    decoder_causal: bool = True
    decoder_attn_window_size: tuple[int, int] = (-1, -1)
    vocoder_dim: int = 512
    vocoder_intermediate_dim: int = 4096
    vocoder_num_layers: int = 30
    vocoder_attention_heads: int = 4
    vocoder_attn_window_size: tuple[int, int] = (40, 10)
    vocoder_padding: str = "same"
    num_quantizers: int = 12
    codebook_size: int | list[int] = field(default_factory=lambda: [1024])
    threshold_ema_dead_code: int = 10
    position_embedding_type: str = "rope"
    rope_theta: float = 10000.0
    rope_type: str = "default"
    ln_type: str = "LayerNorm"
    max_audio_seconds: int = 1800

    # Derived in __post_init__.
    codebook_sizes: tuple[int, ...] = field(init=False)
    mel_fmax: float = field(init=False)
    samples_per_frame: int = field(init=False)
    frame_rate: float = field(init=False)

    def __post_init__(self) -> None:
        for key in ("encoder_attn_window_size", "decoder_attn_window_size", "vocoder_attn_window_size"):
            setattr(self, key, _window(getattr(self, key), key))
        positive = (
            "sampling_rate hop_length nfft window_size n_mels d_model kernel_size stride_size avg_pooler "
            "encoder_layers encoder_attention_heads encoder_ffn_dim decoder_layers decoder_attention_heads "
            "decoder_ffn_dim decoder_kernel_size decoder_stride_size vocoder_dim vocoder_intermediate_dim "
            "vocoder_num_layers vocoder_attention_heads num_quantizers"
        ).split()
        for key in positive:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise CheckpointError(f"tokenizer config: {key} must be a positive integer, got {value!r}")
        for width, heads, name in (
            (self.d_model, self.encoder_attention_heads, "encoder"),
            (self.d_model, self.decoder_attention_heads, "decoder"),
            (self.vocoder_dim, self.vocoder_attention_heads, "vocoder"),
        ):
            if width % heads or (width // heads) % 2:
                raise CheckpointError(
                    f"tokenizer config: {name} width {width} is not an even head dim times {heads} heads"
                )
        if self.window_size > self.nfft:
            raise CheckpointError(f"tokenizer config: window_size {self.window_size} > nfft {self.nfft}")
        if self.nfft < self.hop_length:
            raise CheckpointError(f"tokenizer config: nfft {self.nfft} < hop_length {self.hop_length}")
        if self.activation_function not in ACTIVATIONS:
            raise CheckpointError(
                f"tokenizer config: activation_function {self.activation_function!r} is not one of {ACTIVATIONS}"
            )
        if self.ln_type not in LN_TYPES:
            raise CheckpointError(f"tokenizer config: ln_type {self.ln_type!r} is not one of {LN_TYPES}")
        if self.position_embedding_type != "rope" or self.rope_type != "default":
            raise CheckpointError(
                "tokenizer config: only position_embedding_type 'rope' with rope_type 'default' is supported"
            )
        if self.vocoder_padding != "same":
            raise CheckpointError(
                f"tokenizer config: vocoder_padding {self.vocoder_padding!r} is not supported (only 'same')"
            )
        if (
            self.encoder_skip_layer_id is not None
            and not 1 <= self.encoder_skip_layer_id <= self.encoder_layers
        ):
            raise CheckpointError(
                f"tokenizer config: encoder_skip_layer_id {self.encoder_skip_layer_id} is outside "
                f"1..{self.encoder_layers}"
            )
        self.codebook_sizes = _codebook_sizes(self.codebook_size, self.num_quantizers)
        self.mel_fmax = float(self.sampling_rate / 2 if self.fmax is None else self.fmax)
        self.samples_per_frame = self.avg_pooler * self.stride_size * self.hop_length
        self.frame_rate = self.sampling_rate / self.samples_per_frame

    @property
    def encoder_head_dim(self) -> int:
        return self.d_model // self.encoder_attention_heads

    @property
    def decoder_head_dim(self) -> int:
        return self.d_model // self.decoder_attention_heads

    @property
    def vocoder_head_dim(self) -> int:
        return self.vocoder_dim // self.vocoder_attention_heads

    @property
    def n_freqs(self) -> int:
        """One-sided STFT bins (``nfft // 2 + 1``)."""
        return self.nfft // 2 + 1

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> TokenizerConfig:
        """Build from a parsed ``config.json``; unknown keys (``architectures``, ``torch_dtype``…) are ignored."""
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        kwargs = {k: v for k, v in cfg.items() if k in names}
        try:
            return cls(**kwargs)
        except CheckpointError:
            raise
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"tokenizer config: {e}".splitlines()[0]) from None

    def to_dict(self) -> dict[str, Any]:
        """The on-disk keys (derived fields left out)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
