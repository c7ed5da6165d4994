"""The MiMo-Audio LM (SPEC §7): backbone, patch encoder, patch decoder and heads, plus :func:`load_lm`.

Sequences use the checkpoint layout ``ids [B, 1 + C, G·P]`` (channel 0 text, channels 1..C codebooks;
column ``G·p + j`` is frame ``j`` of patch ``p``; only column ``G·p`` of the text channel is read).
:meth:`MimoAudioLM.forward` is the teacher-forced whole-sequence pass (training, scoring, and the
reference the incremental engine is tested against); generation lives in :mod:`.generator`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import load_into, load_weights, resolve_dir
from ..errors import CheckpointError
from ..text_tokenizer import TextTokenizer
from .backbone import Qwen2Stack
from .config import LMConfig
from .linears import pack_linears, quantize_state_dict, use_int8_linears
from .patch_decoder import teacher_forced_logits
from .patch_encoder import embed_patches


@dataclass
class LMOutput:
    """Teacher-forced outputs for ``ids [B, 1+C, G·P]``.

    * ``text_logits`` ``[B, P, vocab]``: position ``p`` scores the text id of patch ``p + 1``.
    * ``local_in`` ``[B, P, local_dim]``: ``hidden_states_downcast`` of each backbone state.
    * ``local_logits``: ``C`` tensors ``[B, P - 1, G, V_c]`` (or None): position ``p``'s patch decoder,
      teacher-forced with the codes of patch ``p + 1``, scoring frame ``j`` of codebook ``c`` at ``[:, p, j]``.
      Only meaningful where patch ``p + 1`` is a speech patch (mask the loss elsewhere).
    """

    text_logits: torch.Tensor
    local_in: torch.Tensor
    local_logits: list[torch.Tensor] | None


class MimoAudioLM(nn.Module):
    """Module tree and parameter names follow the checkpoint (SPEC §7.5)."""

    def __init__(self, config: LMConfig, empty_text_id: int) -> None:
        super().__init__()
        self.config = config
        self.empty_text_id = int(empty_text_id)
        hidden, local_dim, in_dim = config.hidden_size, config.local_dim, config.input_local_dim
        self.model = Qwen2Stack(config.backbone, vocab_size=config.vocab_size)
        self.lm_head = nn.Linear(hidden, config.vocab_size, bias=False)
        self.input_local_transformer = Qwen2Stack(config.input_local)
        self.local_transformer = Qwen2Stack(config.local)
        self.local_transformer_lm_heads = nn.ModuleList(
            nn.Linear(local_dim, v, bias=False) for v in config.speech_vocab_size
        )
        self.speech_embeddings = nn.ModuleList(nn.Embedding(v, in_dim) for v in config.speech_vocab_size)
        self.speech_group_downcast = nn.Linear(config.group_size * in_dim, hidden, bias=False)
        self.hidden_states_downcast = nn.Linear(hidden, local_dim, bias=False)
        self.speech_embeddings_to_local = (
            nn.Linear(in_dim, local_dim, bias=False) if in_dim != local_dim else None
        )
        self._empty_ids: dict[torch.device, torch.Tensor] = {}

    # ------------------------------------------------------------------ helpers
    @property
    def dtype(self) -> torch.dtype:
        return self.model.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    def empty_ids(self, device: torch.device) -> torch.Tensor:
        """Per-codebook empty ids ``[C]`` int64 on ``device``."""
        if device not in self._empty_ids:
            self._empty_ids[device] = torch.tensor(self.config.speech_zeroemb_idx, device=device)
        return self._empty_ids[device]

    def split_ids(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``ids [B, 1+C, G·P]`` → text ids ``[B, P]`` and speech codes ``[B, P, G, C]``."""
        B, rows, cols = ids.shape
        G, C = self.config.group_size, self.config.audio_channels
        if rows != 1 + C or cols % G:
            raise ValueError(f"ids must be [B, {1 + C}, {G}·P], got {tuple(ids.shape)}")
        ids = ids.long()
        text = ids[:, 0, ::G]
        speech = ids[:, 1:].reshape(B, C, cols // G, G).permute(0, 2, 3, 1)
        return text, speech

    def embed(self, text_ids: torch.Tensor, speech: torch.Tensor) -> torch.Tensor:
        """Backbone input embeddings ``[B, P, hidden]`` (SPEC §7.2)."""
        return embed_patches(self, text_ids, speech)

    def heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone states ``[..., hidden]`` → text logits ``[..., vocab]`` and ``local_in`` ``[..., local_dim]``."""
        return self.lm_head(h), self.hidden_states_downcast(h)

    def optimize_for_inference(self) -> MimoAudioLM:
        """Fuse q/k/v and gate/up projections and, on CPU, pack Linear weights for oneDNN (in place).

        One-way: parameter names no longer match the checkpoint and autograd is not supported
        afterwards; load with ``optimize=False`` to train or to save weights.
        """
        for stack in (self.model, self.input_local_transformer, self.local_transformer):
            stack.fuse_projections()
        pack_linears(self)
        return self

    # ------------------------------------------------------------------ teacher-forced pass
    def forward(self, ids: torch.Tensor, *, local_logits: bool = True) -> LMOutput:
        """Whole sequences ``ids [B, 1+C, G·P]`` (right-padded rows are fine: attention is causal).

        Returns text logits at every patch and, when ``local_logits``, the patch decoder's logits for
        every next patch given its true codes — the per-step quantities generation computes, so
        ``text_logits[:, P0-1+i]`` equals generation step ``i``'s text logits for a generated sequence.
        """
        text, speech = self.split_ids(ids)
        h = self.model(self.embed(text, speech))  # [B, P, hidden]
        text_logits, local_in = self.heads(h)
        out = LMOutput(text_logits, local_in, None)
        if local_logits and text.shape[1] > 1:
            B, P = text.shape
            flat_in = local_in[:, :-1].reshape(B * (P - 1), -1)
            flat_target = speech[:, 1:].reshape(B * (P - 1), *speech.shape[2:])
            logits = teacher_forced_logits(self, flat_in, flat_target)
            out.local_logits = [x.reshape(B, P - 1, *x.shape[1:]) for x in logits]
        return out


def load_lm(
    folder: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    *,
    quantize: str | None = None,
    optimize: bool = True,
    empty_text_id: int | None = None,
) -> MimoAudioLM:
    """Load a MiMo-Audio LM folder (``config.json`` + single or sharded safetensors + ``tokenizer.json``).

    ``dtype`` defaults to bfloat16 on CUDA and float32 elsewhere. ``quantize="int8"`` stores every
    Linear weight as per-output-channel int8 (weight-only; see :mod:`.quant`). The ``<|empty|>`` id is
    read from the folder's text tokenizer unless ``empty_text_id`` is given. Missing or mis-shaped
    weights raise a one-line :class:`CheckpointError`; unexpected ones are ignored (as the reference does).
    ``optimize`` applies :meth:`MimoAudioLM.optimize_for_inference` (turn it off to train or re-save).
    """
    folder = resolve_dir(folder)
    device = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if quantize not in (None, "int8"):
        raise CheckpointError(f"unknown quantization {quantize!r} (supported: int8)")
    config = LMConfig.from_dir(folder)
    if empty_text_id is None:
        empty_text_id = TextTokenizer.from_dir(folder).id("<|empty|>")
    with torch.device("meta"):
        model = MimoAudioLM(config, empty_text_id)
        if quantize == "int8":
            use_int8_linears(model)
    state = load_weights(folder)
    tied = config.tie_word_embeddings and "lm_head.weight" not in state
    if quantize == "int8":
        if tied:
            state["lm_head.weight"] = state["model.embed_tokens.weight"]
            tied = False
        state = quantize_state_dict(model, state)
    optional = ("lm_head.weight",) if tied else ()
    load_into(
        model,
        state,
        source=str(folder),
        dtype=dtype,
        device=device,
        ignore_unexpected=True,
        optional=optional,
    )
    if tied:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.eval().requires_grad_(False)
    return model.optimize_for_inference() if optimize else model


def random_lm(
    config: LMConfig,
    empty_text_id: int,
    *,
    seed: int = 0,
    std: float = 0.02,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> MimoAudioLM:
    """A model with random weights (Qwen2-style init: N(0, std) matrices, zero biases, unit norms).

    For benchmarks and tests that need other sizes than a checkpoint provides.
    Parameters are allocated directly in ``dtype`` (built on the meta device, then filled one tensor at a
    time), so the official 7B shapes in bfloat16 need ≈ 16 GB, not the 32 GB of a float32 copy.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        model = MimoAudioLM(config, empty_text_id)
    model = model.to(dtype).to_empty(device=device)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=gen).mul_(std))
    return model.eval().requires_grad_(False)
