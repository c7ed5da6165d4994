"""LM training sequences: records → ids with the inference prompt builders → packed rows and targets.

Each task renders its prompt with :class:`~mimo_audio.prompts.PromptBuilder` exactly as inference
does, then appends the response the model must produce, ending with the token generation stops on
(record fields in brackets are optional):

* ``asr``: ``audio``, ``text``, [``template``] → text + ``<|im_end|>``.
* ``tts``: ``text``, ``audio``, [``instruction``, ``prompt_speech``, ``template``, ``read_text_only``,
  ``transcript``, ``thinking``, ``word_starts``] → the text+speech stream, ending with ``<|eostm|>``.
  With ``aligned_tts`` and a record's ``word_starts`` (``data synth --word-times``) the stream is
  word-aligned (:meth:`~mimo_audio.prompts.PromptBuilder.aligned_stream`) instead of 5-token /
  5-patch chunks.
* ``audio_understanding``: ``audio``, ``question``, ``answer``, [``thinking``] → answer + ``<|im_end|>``.
* ``chat`` (SFT): ``messages`` (the last one from the assistant), [``speech_output``, ``system_prompt``,
  ``prompt_speech``, ``thinking``] → reply text + ``<|im_end|>``, or the reply stream.
* ``in_context_s2s``: ``instruction``, ``examples``, ``audio``, ``output_audio``,
  [``output_transcription``] → the output stream.
* ``continuation``: ``audio`` → ``<|sosp|>`` + speech + ``<|eosp|>``, all predicted.
* ``interleaved``: ``segments`` of ``{"text"}``, ``{"audio"}`` or ``{"text", "audio"}`` (a stream) → all predicted.
* ``text``: ``text`` → its tokens + eos, all predicted.

``thinking`` is true or the thought text: the prompt then ends with ``<think>\\n``. Assumption where
the reference is silent (instruct TTS, thinking answers): the response after a ``<think>\\n`` prompt is
``<thought>\\n</think>\\n`` followed by the answer (for TTS: the full stream starting with ``<|sostm|>``).

Targets (SPEC §7, report eq. 14–15): position ``p`` predicts patch ``p + 1``: its text id, and — when
it is a speech patch — its ``[G, C]`` codes through the patch decoder. The patch decoder's targets
are kept in the *delayed* layout ``[G + max(delay), C]``: step ``t``, codebook ``c`` holds frame
``t − delay[c]`` (:data:`IGNORE` outside ``delay[c] ≤ t < delay[c] + G``), which is exactly the token
the generation loop samples for codebook ``c`` at step ``t``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..audio import atomic_write
from ..prompts import Example, PromptBuilder, normalize_tts_text, parse_messages
from ..text_tokenizer import TextTokenizer
from .data import CodeResolver, DataError, sample_rng, source_files, walk_audio

log = logging.getLogger("mimo_audio.train")

IGNORE = -100


@dataclass
class LMExample:
    """One sequence ``ids [1 + C, G·P]`` and which patches are predicted (``target [P]`` bool)."""

    ids: torch.Tensor
    target: torch.Tensor

    @property
    def patches(self) -> int:
        return self.target.shape[0]


# ---------------------------------------------------------------------------- delayed targets
def delay_targets(frames: torch.Tensor, delays: Sequence[int]) -> torch.Tensor:
    """Frame-aligned codes ``[..., G, C]`` → delayed patch ``[..., G + max(delays), C]``.

    ``out[..., t, c] = frames[..., t − delays[c], c]`` inside codebook ``c``'s window, :data:`IGNORE`
    outside it (the report's empty slots, never predicted).
    """
    G, C = frames.shape[-2:]
    out = frames.new_full((*frames.shape[:-2], G + max(delays), C), IGNORE)
    for c, d in enumerate(delays):
        out[..., d : d + G, c] = frames[..., c]
    return out


def undelay_targets(delayed: torch.Tensor, delays: Sequence[int], group_size: int) -> torch.Tensor:
    """Inverse of :func:`delay_targets`: ``[..., G + max(delays), C]`` → ``[..., G, C]``."""
    return torch.stack([delayed[..., d : d + group_size, c] for c, d in enumerate(delays)], dim=-1)


def example_targets(
    ex: LMExample, empty_text_id: int, empty_ids: Sequence[int], delays: Sequence[int], group_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Text targets ``[P]`` and delayed speech targets ``[P, G + max(delays), C]`` of one example."""
    G, C = group_size, len(empty_ids)
    P = ex.patches
    text = ex.ids[0, ::G]  # [P]
    speech = ex.ids[1:].reshape(C, P, G).permute(1, 2, 0)  # [P, G, C]
    nxt = ex.target[1:]
    text_t = torch.full((P,), IGNORE, dtype=torch.long)
    text_t[:-1] = torch.where(nxt, text[1:], IGNORE)
    frames = torch.full((P, G, C), IGNORE, dtype=torch.long)
    is_speech = nxt & (text[1:] == empty_text_id)
    frames[:-1][is_speech] = speech[1:][is_speech]
    empty = torch.tensor(list(empty_ids))
    frames = torch.where(frames == empty, IGNORE, frames)  # no-audio markers are never predicted
    return text_t, delay_targets(frames, delays)


# ---------------------------------------------------------------------------- sequence formats
def _thought(thinking) -> str | None:
    """A record's ``thinking`` (true or the thought text) → the thought before ``</think>``, or None."""
    if not thinking:
        return None
    return thinking if isinstance(thinking, str) else ""


class SequenceBuilder:
    """Records (audio fields already LM codes ``[N, C]``) → :class:`LMExample` (see the module table)."""

    def __init__(
        self,
        prompts: PromptBuilder,
        tokenizer: TextTokenizer,
        loss_on: str = "response",
        aligned_tts: bool = False,
    ) -> None:
        self.b, self.tok, self.loss_on, self.aligned_tts = prompts, tokenizer, loss_on, aligned_tts
        self.G = prompts.group_size
        self.tasks: dict[str, Callable[[dict, random.Random], LMExample]] = {
            "asr": self.asr,
            "tts": self.tts,
            "audio_understanding": self.audio_understanding,
            "chat": self.chat,
            "in_context_s2s": self.in_context_s2s,
            "continuation": self.continuation,
            "interleaved": self.interleaved,
            "text": self.text,
        }

    def build(self, record: dict, rng: random.Random) -> LMExample:
        task = record.get("task")
        if task not in self.tasks:
            raise DataError(f"unknown task {task!r} (known: {', '.join(self.tasks)})")
        try:
            return self.tasks[task](record, rng)
        except KeyError as e:
            raise DataError(f"a {task!r} record needs the field {e.args[0]!r}") from None

    # ----- helpers
    def _split(self, prompt: torch.Tensor, response: torch.Tensor) -> LMExample:
        ids = torch.cat([prompt, response], dim=1)
        P0, P = prompt.shape[1] // self.G, ids.shape[1] // self.G
        target = torch.arange(P) >= P0
        if self.loss_on == "all":
            target = torch.arange(P) >= 1
        return LMExample(ids, target)

    def _whole(self, ids: torch.Tensor) -> LMExample:
        return LMExample(ids, torch.arange(ids.shape[1] // self.G) >= 1)

    def _text_reply(self, text: str, thought: str | None = None) -> torch.Tensor:
        parts = []
        if thought is not None:
            parts.append(self.b.text(f"{thought}\n</think>\n"))
        parts += [self.b.text(text), self.b.text("<|im_end|>")]
        return torch.cat(parts, dim=1)

    def _stream_reply(self, text: str, codes: torch.Tensor) -> torch.Tensor:
        """The stream after a prompt that already ends with ``<|sostm|>``."""
        return self.b.stream(text, codes)[:, self.G :]

    # ----- tasks
    def asr(self, r: dict, rng: random.Random) -> LMExample:
        prompt = self.b.asr(r["audio"], template=r.get("template"), rng=rng)
        return self._split(prompt, self._text_reply(r["text"]))

    def tts(self, r: dict, rng: random.Random) -> LMExample:
        read_text_only = r.get("read_text_only", True)
        prompt = self.b.tts(
            r["text"],
            instruction=r.get("instruction"),
            prompt_speech=r.get("prompt_speech"),
            template=r.get("template"),
            read_text_only=read_text_only,
            rng=rng,
        )
        spoken = r.get("transcript") or normalize_tts_text(r["text"])
        if self.aligned_tts and r.get("word_starts") and not r.get("transcript"):
            stream = self.b.aligned_stream(spoken, r["audio"], r["word_starts"])
        else:
            stream = self.b.stream(spoken, r["audio"])
        if read_text_only and not r.get("instruction"):
            return self._split(prompt, stream[:, self.G :])  # the prompt ends with <|sostm|>
        thought = self.b.text(f"{_thought(r.get('thinking')) or ''}\n</think>\n")
        return self._split(prompt, torch.cat([thought, stream], dim=1))

    def audio_understanding(self, r: dict, rng: random.Random) -> LMExample:
        thinking = r.get("thinking")
        prompt = self.b.audio_understanding(r["audio"], r["question"], thinking=bool(thinking))
        return self._split(prompt, self._text_reply(r["answer"], _thought(thinking)))

    def chat(self, r: dict, rng: random.Random) -> LMExample:
        messages = parse_messages(r["messages"], lambda a: a)
        if len(messages) < 2 or messages[-1].role != "assistant":
            raise DataError("a chat record needs at least a user turn and a final assistant turn")
        reply = messages[-1]
        speech_output = r.get("speech_output", reply.audio is not None)
        thinking = r.get("thinking")
        prompt = self.b.dialogue(
            messages[:-1],
            speech_output=speech_output,
            thinking=bool(thinking),
            system_prompt=r.get("system_prompt"),
            prompt_speech=r.get("prompt_speech"),
        )
        if speech_output:
            if reply.audio is None:
                raise DataError("a speech-output chat record needs audio in its final assistant turn")
            return self._split(prompt, self._stream_reply(reply.text or "", reply.audio))
        return self._split(prompt, self._text_reply(reply.text or "", _thought(thinking)))

    def in_context_s2s(self, r: dict, rng: random.Random) -> LMExample:
        examples = [
            Example(e["input_audio"], e["output_audio"], e.get("output_transcription") or "")
            for e in r["examples"]
        ]
        prompt = self.b.in_context_s2s(r["instruction"], examples, r["audio"])
        return self._split(prompt, self._stream_reply(r.get("output_transcription") or "", r["output_audio"]))

    def continuation(self, r: dict, rng: random.Random) -> LMExample:
        ids = torch.cat([self.b.continuation(r["audio"]), self.b.text("<|eosp|>")], dim=1)
        return self._whole(ids)

    def interleaved(self, r: dict, rng: random.Random) -> LMExample:
        parts = []
        for seg in r["segments"]:
            text, audio = seg.get("text"), seg.get("audio")
            if text is not None and audio is not None:
                parts.append(self.b.stream(text, audio))
            elif audio is not None:
                parts.append(self.b.audio(audio))
            elif text:
                parts.append(self.b.text(text))
        if not parts:
            raise DataError("an interleaved record needs at least one non-empty segment")
        return self._whole(torch.cat(parts, dim=1))

    def text(self, r: dict, rng: random.Random) -> LMExample:
        return self._whole(torch.cat([self.b.text(r["text"]), self.b.text(self.tok.eos_token)], dim=1))


# ---------------------------------------------------------------------------- dataset + batches
def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file object: numpy would add ".npy" to a name
        np.save(fh, array)


class LMDataset:
    """Examples of a record source, built deterministically per index (template draws included)."""

    def __init__(
        self,
        source,
        builder: SequenceBuilder,
        resolver: CodeResolver,
        *,
        seed: int,
        empty_text_id: int,
        empty_ids: Sequence[int],
        delays: Sequence[int],
        cache_dir: str | Path | None = None,
        speech_noise: float = 0.0,
        cache_examples: bool = False,
    ) -> None:
        self.source, self.builder, self.resolver, self.seed = source, builder, resolver, seed
        self.speech_noise = speech_noise
        # built examples by index (a pure function of the index, so keeping them changes nothing)
        self._examples: dict[int, LMExample] | None = {} if cache_examples else None
        self.empty_text_id, self.empty_ids, self.delays = empty_text_id, tuple(empty_ids), tuple(delays)
        self.G = builder.G
        self.lengths = self._lengths(Path(cache_dir) if cache_dir is not None else None)

    def _lengths(self, cache_dir: Path | None) -> list[int]:
        """Every example's length in patches. Building each example to learn it takes minutes on a
        large corpus, so with ``cache_dir`` the lengths are kept in ``lengths-<key>.npy`` there, keyed
        by the source files (path, size, mtime), the seed and the sequence layout; a cached file is
        used only when a spot check of examples rebuilt now agrees with it."""
        n = len(self.source)
        path = None
        if cache_dir is not None:
            key = {
                "files": source_files(self.source),
                "seed": self.seed,
                "G": self.G,
                "loss_on": self.builder.loss_on,
                "aligned_tts": self.builder.aligned_tts,
                "vocab": self.builder.tok.vocab_size,
                "empty": [self.empty_text_id, *self.empty_ids],
            }
            digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
            path = cache_dir / f"lengths-{digest}.npy"
            try:
                cached = np.load(path) if path.is_file() else None
            except (OSError, ValueError):
                cached = None
            if cached is not None and cached.shape == (n,):
                check = np.linspace(0, n - 1, num=min(n, 16), dtype=int)  # distinct indices, first and last
                if all(self.example(int(i)).patches == int(cached[i]) for i in check):
                    return cached.astype(int).tolist()
                log.warning(f"{path}: cached lengths do not match the data; building them again")
        lengths = [self.example(i).patches for i in range(n)]
        if path is not None:
            try:
                atomic_write(path, lambda tmp: _save_npy(tmp, np.asarray(lengths, dtype=np.int64)))
            except OSError as e:
                log.warning(f"{path}: lengths not cached ({e})")
        return lengths

    def __len__(self) -> int:
        return len(self.lengths)

    def example(self, i: int) -> LMExample:
        if self._examples is not None:
            ex = self._examples.get(i)
            if ex is None:
                ex = self._examples[i] = self._build(i)
            return ex
        return self._build(i)

    def _build(self, i: int) -> LMExample:
        record, base = self.source.get(i)
        record = walk_audio(record, lambda v, base=base: self.resolver(v, Path(base)))
        try:
            return self.builder.build(record, sample_rng(self.seed, i))
        except DataError as e:
            raise DataError(f"record {i}: {e}") from None

    def _noisy_input(self, ex: LMExample, index: int) -> torch.Tensor:
        """``ex.ids`` with, at probability ``speech_noise``, each predicted speech patch's *input*
        codes replaced by those of another predicted speech patch of the same example (its targets
        stay true). Generation feeds back its own imperfect speech; a model that has seen wrong
        speech history with the right text must lean on the text (a cheap stand-in for scheduled
        sampling). Deterministic per example index."""
        if self.speech_noise <= 0:
            return ex.ids
        G = self.G
        speech = (ex.ids[0, ::G] == self.empty_text_id) & ex.target  # [P]
        where = speech.nonzero().squeeze(-1)
        if where.numel() < 2:
            return ex.ids
        gen = torch.Generator().manual_seed(sample_rng(self.seed, index, 1).getrandbits(63))
        hit = where[torch.rand(where.numel(), generator=gen) < self.speech_noise]
        if hit.numel() == 0:
            return ex.ids
        donors = where[torch.randint(where.numel(), (hit.numel(),), generator=gen)]
        ids = ex.ids.clone()
        cols = (hit[:, None] * G + torch.arange(G)).reshape(-1)
        src = (donors[:, None] * G + torch.arange(G)).reshape(-1)
        ids[1:, cols] = ex.ids[1:, src]
        return ids

    def collate(self, rows: Sequence[Sequence[int]], length: int) -> dict[str, torch.Tensor]:
        """Rows of example indices → a batch padded to ``length`` patches.

        Returns ``ids [B, 1+C, G·L]``, ``positions [B, L]`` (restart per example), ``doc [B, L]``
        (example number in its row, −1 on padding), ``text_targets [B, L]`` and ``speech_targets
        [B, L, G + max(delay), C]``. An example that would overflow the row is truncated.
        """
        G, C = self.G, len(self.empty_ids)
        T = G + max(self.delays)
        B = len(rows)
        ids = torch.full((B, 1 + C, G * length), IGNORE, dtype=torch.long)
        ids[:, 0, ::G] = self.builder.tok.eos_id
        ids[:, 1:] = torch.tensor(self.empty_ids)[None, :, None]
        positions = torch.zeros(B, length, dtype=torch.long)
        doc = torch.full((B, length), -1, dtype=torch.long)
        text_t = torch.full((B, length), IGNORE, dtype=torch.long)
        speech_t = torch.full((B, length, T, C), IGNORE, dtype=torch.long)
        for b, row in enumerate(rows):
            used = 0
            for n, i in enumerate(row):
                ex = self.example(i)
                P = min(ex.patches, length - used)
                if P <= 0:
                    break
                ex = LMExample(ex.ids[:, : G * P], ex.target[:P])
                tt, st = example_targets(ex, self.empty_text_id, self.empty_ids, self.delays, G)
                ids[b, :, G * used : G * (used + P)] = self._noisy_input(ex, i)
                positions[b, used : used + P] = torch.arange(P)
                doc[b, used : used + P] = n
                text_t[b, used : used + P] = tt
                speech_t[b, used : used + P] = st
                used += P
        return {
            "ids": ids,
            "positions": positions,
            "doc": doc,
            "text_targets": text_t,
            "speech_targets": speech_t,
        }
