"""The generation engine: continuous batching over a static KV cache (SPEC §8.1).

:class:`Generator` owns the caches and the per-request state; the model stays stateless. Requests are
added at any time (:meth:`Generator.add`) and admitted into a free batch slot at the next
:meth:`Generator.step`, where their prompt is prefilled alone into their slot (so a row's prefill is
numerically what it would be solo). Each step then produces one patch for every active request:

1. sample a text id per request from its pending text logits (its own sampler and ``torch.Generator``);
2. run the patch decoder, batched, on the rows whose text id is ``<|empty|>`` → ``[G, C]`` codes each;
3. append the patch, check the stop rules, emit a :class:`StepEvent` per request;
4. free finished slots (the highest active slot moves into the hole, so active rows stay ``0..n-1``);
5. run the backbone on the new patch of every remaining request at its own position (one decode call,
   key mask over the cache) → next text logits and patch-decoder input.

With ``static_shapes=True`` step 5 always runs ``max_batch`` rows over all ``max_len`` cache positions
(CUDA graphs); otherwise it runs the ``n`` active rows over the longest active prefix (cheaper on CPU).
``compile=True`` wraps the backbone decode step and the patch-decoder stack in ``torch.compile``.
"""

from __future__ import annotations

import enum
import itertools
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from ..errors import MimoAudioError
from .config import FRAME_RATE, MAX_PATCHES
from .kv_cache import DecodeView, KVCache, PrefillView
from .linears import unpack_linears
from .model import MimoAudioLM
from .patch_decoder import PatchDecoder
from .sampler import DEFAULT_SPEECH_SAMPLER, DEFAULT_TEXT_SAMPLER, SamplerConfig, sample, sample_rows


class StopReason(enum.StrEnum):
    STOP_TOKEN = "stop_token"  # a stop id was sampled (its patch, with empty speech, is included)
    MAX_NEW_STEPS = "max_new_steps"
    MAX_LENGTH = "max_length"  # prompt + generated reached 8192 patches or the engine's max_len
    MAX_AUDIO = "max_audio"  # speech patches reached max_audio_seconds
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class GenerationOptions:
    """Per-request settings. Samplers default to the reference's "any other task" row (SPEC §8.2)."""

    text_sampler: SamplerConfig = DEFAULT_TEXT_SAMPLER
    speech_sampler: SamplerConfig = DEFAULT_SPEECH_SAMPLER
    seed: int | None = None  # None → drawn from torch's global RNG (reported in the result)
    max_new_steps: int = MAX_PATCHES  # generated patches (the reference's max_new_tokens)
    min_new_steps: int = 0  # stop ids are forbidden while fewer patches than this were generated
    stop_ids: tuple[int, ...] = ()  # text ids that end generation
    max_audio_seconds: float | None = None  # stop once speech patches × G / 25 Hz reach this
    record_logits: bool = False  # keep per-step text and patch-decoder logits (parity tests, scoring)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop_ids", tuple(int(i) for i in self.stop_ids))
        if self.max_new_steps < 1:
            raise MimoAudioError(f"max_new_steps must be >= 1, got {self.max_new_steps}")
        if self.min_new_steps < 0:
            raise MimoAudioError(f"min_new_steps must be >= 0, got {self.min_new_steps}")
        if self.max_audio_seconds is not None and not self.max_audio_seconds > 0:
            raise MimoAudioError(f"max_audio_seconds must be > 0, got {self.max_audio_seconds}")


@dataclass(frozen=True)
class StepEvent:
    """One generated patch of one request."""

    request_id: int
    step: int  # 0-based index of this patch among the generated ones
    text_id: int
    speech: torch.Tensor | None  # [G, C] int64 (CPU), frame-aligned codes; None for a text patch
    finished: bool
    stop_reason: StopReason | None
    result: GenerationResult | None = None  # set on the finishing event


@dataclass
class GenerationResult:
    """A finished request. ``ids`` has the layout of the prompt: ``[1 + C, G·(P0 + T)]`` int64 (CPU)."""

    request_id: int
    ids: torch.Tensor
    prompt_patches: int
    text_ids: list[int]  # the T generated text ids (stop token included when it stopped on one)
    stop_reason: StopReason
    seed: int
    text_logits: torch.Tensor | None = None  # [T, vocab] float32 when record_logits
    local_logits: torch.Tensor | None = None  # [rows, max speech vocab] float32, -inf padded, sampling order

    @property
    def generated_ids(self) -> torch.Tensor:
        """The generated columns ``[1 + C, G·T]``."""
        group = self.ids.shape[1] // self.total_patches
        return self.ids[:, self.prompt_patches * group :]

    @property
    def total_patches(self) -> int:
        return self.prompt_patches + len(self.text_ids)


@dataclass
class _Request:
    id: int
    prompt: torch.Tensor  # [1+C, G·P0] int64 CPU
    options: GenerationOptions
    seed: int
    generator: torch.Generator
    prompt_patches: int
    length: int = 0  # patches held in the backbone cache (= position of the next fed patch)
    text_ids: list[int] = field(default_factory=list)
    patches: list[torch.Tensor] = field(default_factory=list)  # [1+C, G] each
    speech_patches: int = 0
    text_logits: list[torch.Tensor] = field(default_factory=list)
    local_logits: list[torch.Tensor] = field(default_factory=list)
    stop_reason: StopReason | None = None

    def result(self) -> GenerationResult:
        rec = self.options.record_logits
        return GenerationResult(
            request_id=self.id,
            ids=torch.cat([self.prompt, *self.patches], dim=1),
            prompt_patches=self.prompt_patches,
            text_ids=list(self.text_ids),
            stop_reason=self.stop_reason,
            seed=self.seed,
            text_logits=torch.stack(self.text_logits) if rec and self.text_logits else None,
            local_logits=torch.cat(self.local_logits) if rec and self.local_logits else None,
        )


class Generator:
    """Batched MiMo-Audio generation over preallocated caches.

    ``max_batch`` concurrent requests, each at most ``max_len`` patches long (prompt + generated; the
    reference's 8192-patch cap also applies). ``prefill_chunk`` bounds prefill activation memory.
    """

    def __init__(
        self,
        model: MimoAudioLM,
        max_batch: int = 16,
        max_len: int = MAX_PATCHES,
        *,
        prefill_chunk: int = 2048,
        static_shapes: bool = False,
        compile: bool = False,
    ) -> None:
        if max_batch < 1 or max_len < 2:
            raise MimoAudioError("max_batch must be >= 1 and max_len >= 2")
        cfg = model.config
        self.model, self.config = model, cfg
        self.max_batch, self.max_len = max_batch, max_len
        self.prefill_chunk, self.static_shapes = prefill_chunk, static_shapes
        self.device, self.dtype = model.device, model.dtype
        self.group_size, self.channels = cfg.group_size, cfg.audio_channels
        self.empty_text_id = model.empty_text_id
        self.empty_codes = torch.tensor(cfg.speech_zeroemb_idx)  # [C] CPU
        stack = cfg.backbone
        self.cache = KVCache(
            stack.n_layers,
            max_batch,
            stack.n_kv_heads,
            max_len,
            stack.head_dim,
            dtype=self.dtype,
            device=self.device,
        )
        self.patch_decoder = PatchDecoder(model, max_batch, static_shapes=static_shapes)
        self._logits = torch.zeros(max_batch, cfg.vocab_size, dtype=self.dtype, device=self.device)
        self._local_in = torch.zeros(max_batch, cfg.local_dim, dtype=self.dtype, device=self.device)
        self._active: list[_Request] = []  # index = batch slot
        self._waiting: deque[_Request] = deque()
        self._ids = itertools.count()
        self._decode = self._decode_backbone
        if compile:
            unpack_linears(model)  # inductor packs CPU weights itself (freezing)
            mode = "reduce-overhead" if static_shapes and self.device.type == "cuda" else None  # CUDA graphs
            options = {"freezing": True} if self.device.type == "cpu" else None
            self._decode = torch.compile(
                self._decode_backbone, dynamic=not static_shapes, mode=mode, options=options
            )
            self.patch_decoder.compile(mode, options)

    # ------------------------------------------------------------------ public API
    @property
    def num_active(self) -> int:
        return len(self._active)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the engine's caches and buffers (not counting the model)."""
        extra = (
            self._logits.numel() * self._logits.element_size()
            + self._local_in.numel() * self._local_in.element_size()
        )
        return self.cache.nbytes + self.patch_decoder.nbytes + extra

    def add(self, prompt_ids: torch.Tensor, options: GenerationOptions | None = None) -> int:
        """Queue a prompt ``[1 + C, G·P0]`` (int); returns its request id. Admitted at the next :meth:`step`."""
        options = options or GenerationOptions()
        prompt = self._check_prompt(prompt_ids)
        seed = options.seed if options.seed is not None else int(torch.randint(0, 2**62, ()).item())
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed)
        req = _Request(next(self._ids), prompt, options, seed, gen, prompt.shape[1] // self.group_size)
        self._waiting.append(req)
        return req.id

    def cancel(self, request_id: int) -> GenerationResult | None:
        """Stop a waiting or active request; returns its partial result (None if unknown/finished)."""
        for req in self._waiting:
            if req.id == request_id:
                self._waiting.remove(req)
                req.stop_reason = StopReason.CANCELLED
                return req.result()
        for slot, req in enumerate(self._active):
            if req.id == request_id:
                req.stop_reason = StopReason.CANCELLED
                self._release([slot])
                return req.result()
        return None

    @torch.inference_mode()
    def step(self) -> list[StepEvent]:
        """Admit waiting requests, then generate one patch for every active request."""
        self._admit()
        n = len(self._active)
        if n == 0:
            return []
        reqs = self._active
        # 1. text ids
        logits = self._logits[:n]
        for i, r in enumerate(reqs):
            if r.options.record_logits:
                r.text_logits.append(logits[i].to("cpu", torch.float32, copy=True))
        removed = [r.options.stop_ids if len(r.text_ids) < r.options.min_new_steps else () for r in reqs]
        text = sample_rows(
            logits, [r.options.text_sampler for r in reqs], [r.generator for r in reqs], removed
        ).tolist()
        # 2. speech patches for the rows that chose <|empty|>
        speech_rows = [i for i, t in enumerate(text) if t == self.empty_text_id]
        codes = torch.empty(0, self.group_size, self.channels, dtype=torch.long)
        if speech_rows:
            codes = self._decode_speech(speech_rows).cpu()
        # 3. append, stop rules, events
        events, finished = [], []
        speech_of = dict(zip(speech_rows, codes, strict=True))
        next_patch = {}
        for i, r in enumerate(reqs):
            patch_codes = speech_of.get(i)
            self._append(r, text[i], patch_codes)
            done = r.stop_reason is not None
            if done:
                finished.append(i)
            else:
                next_patch[r.id] = (text[i], patch_codes)
            result = r.result() if done else None
            events.append(
                StepEvent(r.id, len(r.text_ids) - 1, text[i], patch_codes, done, r.stop_reason, result)
            )
        # 4. free finished slots
        if finished:
            self._release(finished)
        # 5. backbone on the new patches
        if self._active:
            self._feed([next_patch[r.id] for r in self._active])
        return events

    def generate(
        self,
        prompts: Sequence[torch.Tensor],
        options: GenerationOptions | Sequence[GenerationOptions] | None = None,
    ) -> list[GenerationResult]:
        """Run prompts to completion (batched up to ``max_batch`` at a time); results in prompt order."""
        self._require_idle()
        opts = list(options) if isinstance(options, Sequence) else [options] * len(prompts)
        if len(opts) != len(prompts):
            raise MimoAudioError(f"{len(prompts)} prompts but {len(opts)} option sets")
        order = [self.add(p, o) for p, o in zip(prompts, opts, strict=True)]
        results: dict[int, GenerationResult] = {}
        while len(results) < len(order):
            for ev in self.step():
                if ev.result is not None:
                    results[ev.request_id] = ev.result
        return [results[i] for i in order]

    def stream(self, prompt: torch.Tensor, options: GenerationOptions | None = None) -> Iterator[StepEvent]:
        """Yield one :class:`StepEvent` per generated patch; the last one carries the result.

        Closing the iterator early cancels the request.
        """
        self._require_idle()
        rid = self.add(prompt, options)
        done = False
        try:
            while not done:
                for ev in self.step():
                    done = ev.finished
                    yield ev
        finally:
            if not done:
                self.cancel(rid)

    # ------------------------------------------------------------------ internals
    def _require_idle(self) -> None:
        if self._active or self._waiting:
            raise MimoAudioError("generate()/stream() need an idle engine; use add()/step() to mix requests")

    def _check_prompt(self, prompt_ids: torch.Tensor) -> torch.Tensor:
        G, C = self.group_size, self.channels
        if not isinstance(prompt_ids, torch.Tensor) or prompt_ids.dim() != 2:
            raise MimoAudioError(f"prompt ids must be a 2-D tensor [{1 + C}, {G}·P]")
        if prompt_ids.is_floating_point() or prompt_ids.is_complex():
            raise MimoAudioError("prompt ids must be integers")
        rows, cols = prompt_ids.shape
        if rows != 1 + C or cols == 0 or cols % G:
            raise MimoAudioError(
                f"prompt ids must be [{1 + C}, {G}·P] with P >= 1, got {tuple(prompt_ids.shape)}"
            )
        if cols // G > self.max_len:
            raise MimoAudioError(
                f"prompt has {cols // G} patches but the engine holds at most {self.max_len}"
            )
        prompt = prompt_ids.detach().to("cpu", torch.long)
        text = prompt[0, ::G]
        if bool(((text < 0) | (text >= self.config.vocab_size)).any()):
            raise MimoAudioError(f"prompt text ids must lie in [0, {self.config.vocab_size})")
        vocab = torch.tensor(self.config.speech_vocab_size)[:, None]
        if bool(((prompt[1:] < 0) | (prompt[1:] >= vocab)).any()):
            raise MimoAudioError("prompt speech ids must lie in [0, speech_vocab_size) of their codebook")
        return prompt

    def _admit(self) -> None:
        while self._waiting and len(self._active) < self.max_batch:
            req = self._waiting.popleft()
            slot = len(self._active)
            self._active.append(req)
            self._prefill(req, slot)

    def _prefill(self, req: _Request, slot: int) -> None:
        model = self.model
        text, speech = model.split_ids(req.prompt[None].to(self.device))
        x = model.embed(text, speech)  # [1, P0, hidden]
        P0 = x.shape[1]
        for start in range(0, P0, self.prefill_chunk):
            end = min(P0, start + self.prefill_chunk)
            view = PrefillView(self.cache, slot, start, end - start)
            positions = torch.arange(start, end, device=self.device)
            h = model.model(x[:, start:end], positions, cache=view)
        logits, local_in = model.heads(h[:, -1])
        self._logits[slot], self._local_in[slot] = logits[0], local_in[0]
        req.length = P0

    def _decode_speech(self, rows: list[int]) -> torch.Tensor:
        reqs = [self._active[i] for i in rows]
        idx = torch.tensor(rows, device=self.device)
        cfgs = [r.options.speech_sampler for r in reqs]
        gens = [r.generator for r in reqs]
        groups: dict[SamplerConfig, list[int]] = {}
        for j, cfg in enumerate(cfgs):
            groups.setdefault(cfg, []).append(j)
        group_idx = {cfg: torch.tensor(js, device=self.device) for cfg, js in groups.items()}
        empty = self.config.speech_zeroemb_idx
        # One block of Exp(1) noise per sampling row and patch, drawn with the row's own generator:
        # draw k of the patch (sampling order) uses noise[:, k] (exponential race, see sampler.sample).
        draws = self.group_size * self.channels
        noise = {
            cfg: torch.stack(
                [
                    torch.empty(draws, self.config.max_speech_vocab, device=self.device).exponential_(
                        generator=gens[j]
                    )
                    for j in js
                ]
            )
            for cfg, js in groups.items()
            if cfg.do_sample
        }
        counter = itertools.count()

        def sample_fn(c: int, logits: torch.Tensor) -> torch.Tensor:
            k = next(counter)
            if len(groups) == 1:
                cfg = cfgs[0]
                return sample(logits, cfg, gens, (empty[c],), noise[cfg][:, k] if cfg in noise else None)
            out = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
            for cfg, js in groups.items():
                idx = group_idx[cfg]
                eps = noise[cfg][:, k] if cfg in noise else None
                out[idx] = sample(logits[idx], cfg, [gens[j] for j in js], (empty[c],), eps)
            return out

        recording = [j for j, r in enumerate(reqs) if r.options.record_logits]
        width = self.config.max_speech_vocab

        def record_fn(c: int, logits: torch.Tensor) -> None:
            for j in recording:
                row = torch.full((1, width), float("-inf"))
                row[0, : logits.shape[1]] = logits[j].float().cpu()
                reqs[j].local_logits.append(row)

        return self.patch_decoder(self._local_in[idx], sample_fn, record_fn if recording else None)

    def _append(self, r: _Request, text_id: int, codes: torch.Tensor | None) -> None:
        G = self.group_size
        col = torch.empty(1 + self.channels, G, dtype=torch.long)
        col[0] = text_id
        col[1:] = codes.T if codes is not None else self.empty_codes[:, None]
        r.patches.append(col)
        r.text_ids.append(text_id)
        r.speech_patches += codes is not None
        o, steps = r.options, len(r.text_ids)
        if text_id in o.stop_ids and steps >= o.min_new_steps:
            r.stop_reason = StopReason.STOP_TOKEN
        elif steps >= o.max_new_steps:
            r.stop_reason = StopReason.MAX_NEW_STEPS
        elif r.prompt_patches + steps >= min(MAX_PATCHES, self.max_len):
            r.stop_reason = StopReason.MAX_LENGTH
        elif o.max_audio_seconds is not None and r.speech_patches * G / FRAME_RATE >= o.max_audio_seconds:
            r.stop_reason = StopReason.MAX_AUDIO

    def _release(self, slots: list[int]) -> None:
        """Drop the requests in ``slots``; move the highest remaining ones into the holes."""
        gone = set(slots)
        n = len(self._active)
        keep = n - len(gone)
        movers = [s for s in range(keep, n) if s not in gone]
        holes = sorted(s for s in gone if s < keep)
        for src, dst in zip(movers, holes, strict=True):
            req = self._active[src]
            self.cache.move(src, dst, req.length)
            self._logits[dst], self._local_in[dst] = self._logits[src], self._local_in[src]
            self._active[dst] = req
        del self._active[keep:]

    def _feed(self, patches: list[tuple[int, torch.Tensor | None]]) -> None:
        """Run the backbone on one new patch per active slot (same order as ``self._active``)."""
        n = len(patches)
        rows = self.max_batch if self.static_shapes else n
        text = torch.full((rows, 1), self.empty_text_id, dtype=torch.long)
        speech = self.empty_codes.expand(rows, 1, self.group_size, self.channels).clone()
        for i, (t, codes) in enumerate(patches):
            text[i, 0] = t
            if codes is not None:
                speech[i, 0] = codes
        if self.static_shapes:  # idle rows: a text patch at position 0 of a free slot
            text[n:, 0] = 0
        positions = torch.zeros(rows, dtype=torch.long)
        positions[:n] = torch.tensor([r.length for r in self._active])
        kv_len = self.max_len if self.static_shapes else int(positions.max()) + 1
        x = self.model.embed(text.to(self.device), speech.to(self.device))  # [rows, 1, hidden]
        logits, local_in = self._decode(x, positions.to(self.device), kv_len)
        self._logits[:n], self._local_in[:n] = logits[:n], local_in[:n]
        for r in self._active:
            r.length += 1

    def _decode_backbone(self, x: torch.Tensor, positions: torch.Tensor, kv_len: int):
        """``x [n, 1, hidden]`` at ``positions [n]`` → text logits ``[n, vocab]``, ``local_in [n, local_dim]``."""
        view = DecodeView(self.cache, positions, kv_len)
        if x.shape[0] == 1 and not self.static_shapes:
            view.attn_mask = None  # the single row attends to its whole prefix
        h = self.model.model(x, positions[:, None], cache=view)[:, 0]
        return self.model.heads(h)
