"""The task API: one loaded model pair (LM + audio tokenizer), one method per MiMo-Audio task.

>>> from mimo_audio import MimoAudio
>>> model = MimoAudio.from_pretrained("MiMo-Audio-7B-Instruct", "MiMo-Audio-Tokenizer", device="cuda")
>>> model.asr("clip.wav").text
>>> model.tts("Hello there.").save("hello.wav")

Every task method takes one input or a list (batched generation), sampling overrides and a seed,
and returns :class:`TaskResult` (or a list). ``<task>_stream`` variants yield :class:`StreamChunk`
pieces of text and audio as they are produced. The CLI, HTTP server and web UI sit on this class.
"""

from __future__ import annotations

import logging
import os
import random
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .audio import AudioLike, write_audio
from .errors import MimoAudioError
from .lm import GenerationOptions, GenerationResult, Generator, SamplerConfig, StepEvent, StopReason, load_lm
from .lm.config import MAX_PATCHES, LMConfig
from .postprocess import IncrementalSplitter, split_generation
from .prompts import Example, Message, PromptBuilder, parse_messages
from .tasks import PRESETS, TASK_NAMES, TaskPreset, check_best_of, model_presets
from .text_tokenizer import TextTokenizer
from .tokenizer import AudioTokenizer
from .voice_match import VoiceMatch, VoicePool

log = logging.getLogger("mimo_audio")

FEWSHOT_PRESETS = {
    "vc": "Convert the timbre of the input speech to target timbre.",
    "emotion": "Convert the emotion of the input speech to target emotion.",
    "speed": "Convert the speaking rate of the input speech to target speaking rate.",
    "denoise": "Remove the background noise from the input speech.",
    "translate": "Translate the input speech into the target language.",
}

BEST_OF_STRIDE = 1_000_003  # seed step between the candidates of one best-of-N request

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class TaskResult:
    """What a task produced. ``audio`` is mono float32 ``[samples]`` at ``sample_rate`` (or None)."""

    text: str
    audio: torch.Tensor | None
    sample_rate: int
    ids: torch.Tensor  # [1 + C, G·T] prompt + generated ids
    prompt_length: int  # columns of ``ids`` that are the prompt
    stop_reason: str
    seed: int
    steps: int  # generated patches

    @property
    def duration(self) -> float:
        return 0.0 if self.audio is None else self.audio.numel() / self.sample_rate

    def save(self, path: str | os.PathLike) -> Path:
        """Write the audio atomically (format from the extension)."""
        if self.audio is None:
            raise MimoAudioError("this result holds no audio")
        return write_audio(path, self.audio, self.sample_rate)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "audio_seconds": round(self.duration, 3),
            "sample_rate": self.sample_rate,
            "stop_reason": self.stop_reason,
            "seed": self.seed,
            "steps": self.steps,
        }


@dataclass(frozen=True)
class StreamChunk:
    """A piece of a streamed task: new text and/or new audio; the last chunk carries the result."""

    text: str = ""
    audio: torch.Tensor | None = None
    result: TaskResult | None = None


def detect_variant(model_dir: Path, config: dict | None = None) -> str | None:
    """``"base"``, ``"instruct"`` or None (unknown: every task allowed).

    Read from an explicit ``mimo_audio_variant`` key in config.json, else from the folder name
    (the official folders are ``MiMo-Audio-7B-Base`` and ``MiMo-Audio-7B-Instruct``).
    """
    value = (config or {}).get("mimo_audio_variant")
    if value in ("base", "instruct"):
        return value
    name = model_dir.resolve().name.lower()
    if name.endswith("-base") or name.endswith("_base"):
        return "base"
    if name.endswith("-instruct") or name.endswith("_instruct"):
        return "instruct"
    return None


class _CodesCache:
    """Small LRU of LM codes per audio file (few-shot examples and voice prompts are reused)."""

    def __init__(self, size: int = 64) -> None:
        self.size, self.data = size, OrderedDict()

    def get(self, key, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        if key is None:
            return make()
        if key in self.data:
            self.data.move_to_end(key)
            return self.data[key]
        value = self.data[key] = make()
        if len(self.data) > self.size:
            self.data.popitem(last=False)
        return value


@dataclass(frozen=True)
class PreparedRequest:
    """A validated request: task name, prompt ids ``[1 + C, G·P]`` and engine options."""

    task: str
    prompt: torch.Tensor
    options: GenerationOptions
    voice_pool: VoicePool | None = None  # voice matching of the decoded speech (mimo_audio.voice_match)


# TTS length guard: a request without max_audio_seconds stops after this much audio, so a
# model that never ends its speech (a weak or small one) cannot run to MAX_PATCHES (22 min of audio).
# Natural speech needs ~0.07 s per character (English) to ~0.25 s (Mandarin); very slow speech ~0.6 s.
TTS_BASE_SECONDS = 10.0
TTS_SECONDS_PER_CHAR = 1.0


def tts_seconds_cap(text: str) -> float:
    """Default ``max_audio_seconds`` of a TTS request for ``text``: 10 s + 1 s per character."""
    return TTS_BASE_SECONDS + TTS_SECONDS_PER_CHAR * len(text.strip())


# ASR length guard: a request without max_new_steps stops after this many text tokens, so a model
# that never closes its transcript cannot run to MAX_PATCHES. Speech carries ~3-5 tokens/s (English
# words, Mandarin characters); the cap allows 25 per second of audio (4 per patch) plus a margin.
ASR_BASE_STEPS = 64
ASR_STEPS_PER_PATCH = 4


def asr_steps_cap(prompt_patches: int) -> int:
    """Default ``max_new_steps`` of an ASR request whose prompt holds ``prompt_patches`` patches."""
    return ASR_BASE_STEPS + ASR_STEPS_PER_PATCH * prompt_patches


STREAM_CHUNK_FRAMES = 20  # frames (0.8 s) per streaming decode; the first waits for the right overlap


class StreamState:
    """Turns one request's engine step events into :class:`StreamChunk` objects.

    Text is detokenised incrementally; speech patches go through the audio tokenizer's streaming
    decoder, which decodes every ``chunk_frames`` frames (0: every patch; each decode re-runs up to
    250 frames of context, so per-patch decoding costs several times more). The chunk for the
    finishing event carries the full :class:`TaskResult`.
    """

    def __init__(
        self,
        model: MimoAudio,
        task: str,
        chunk_frames: int = STREAM_CHUNK_FRAMES,
        voice_pool: VoicePool | None = None,
    ) -> None:
        self.model, self.task, self.voice_pool = model, task, voice_pool
        self.splitter = IncrementalSplitter(model.text_tokenizer, model.config.speech_zeroemb_idx)
        self.decoder = None
        if model.presets[task].speech_output:
            self.decoder = model.audio_tokenizer.stream_decoder(
                chunk_frames=chunk_frames, transform=None if voice_pool is None else voice_pool.apply
            )
        self.any_audio = False

    def feed(self, ev: StepEvent) -> StreamChunk | None:
        """Consume one step event; returns a chunk when there is new text/audio or the request ended."""
        text, codes = self.splitter.push(ev.text_id, ev.speech)
        audio = None
        if codes is not None and self.decoder is not None:
            audio = self.decoder.push(codes.to(self.model.audio_tokenizer.device))
            self.any_audio = True
        if ev.result is None:
            return StreamChunk(text, _cpu(audio)) if (text or (audio is not None and audio.numel())) else None
        text += self.splitter.finish()
        tail = self.decoder.flush() if self.decoder is not None else None
        if audio is not None:
            tail = audio if tail is None else torch.cat([audio.reshape(-1), tail.reshape(-1)])
        result = self.model.finish(ev.result, self.task, self.voice_pool)
        if self.decoder is not None and not self.any_audio:
            tail = result.audio  # no speech at all: the silence the offline path writes
        return StreamChunk(text, _cpu(tail), result)


class MimoAudio:
    """MiMo-Audio: the LM, its audio tokenizer and text tokenizer, and a batched generation engine."""

    def __init__(
        self,
        lm,
        audio_tokenizer: AudioTokenizer,
        text_tokenizer: TextTokenizer,
        *,
        variant: str | None = None,
        max_batch: int = 8,
        max_len: int = MAX_PATCHES,
        compile: bool = False,
        progress: bool = True,
        presets: Mapping[str, TaskPreset] | None = None,
    ) -> None:
        self.lm = lm
        self.config: LMConfig = lm.config
        self.audio_tokenizer = audio_tokenizer
        self.text_tokenizer = text_tokenizer
        self.variant = variant
        self.progress = progress
        # task presets, with the model folder's own samplers (tasks.model_presets) where it has some
        self.presets: dict[str, TaskPreset] = dict(presets or PRESETS)
        self.prompts = PromptBuilder(text_tokenizer, self.config.speech_zeroemb_idx, self.config.group_size)
        self.engine = Generator(lm, max_batch=max_batch, max_len=max_len, compile=compile)
        self._codes = _CodesCache()

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | os.PathLike | None = None,
        tokenizer_dir: str | os.PathLike | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = None,
        tokenizer_device: str | torch.device | None = None,
        tokenizer_dtype: torch.dtype | str | None = None,
        variant: str | None = None,
        quantize: str | None = None,
        max_batch: int = 8,
        max_len: int = MAX_PATCHES,
        compile: bool = False,
        progress: bool = True,
    ) -> MimoAudio:
        """Load an LM folder (``MiMo-Audio-7B-{Base,Instruct}``) and a tokenizer folder.

        ``device`` defaults to CUDA when available, else CPU; ``dtype`` to bfloat16 on CUDA and float32
        on CPU. ``tokenizer_device="cpu"`` offloads the audio tokenizer. ``quantize="int8"`` stores the
        LM's linear weights as int8. ``variant`` (``"base"``/``"instruct"``) restricts the tasks; it is
        detected from the folder when not given. With neither folder given, the installed default
        pair is loaded (:mod:`mimo_audio.defaults`: ``MIMO_AUDIO_DEFAULT_DIR``, else the package's).
        """
        from .checkpoint import read_config, resolve_dir
        from .defaults import resolve_model_pair

        model_dir, tokenizer_dir = resolve_model_pair(model_dir, tokenizer_dir)

        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = _dtype(dtype) or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        tokenizer_device = torch.device(tokenizer_device or device)
        tokenizer_dtype = _dtype(tokenizer_dtype) or dtype
        if variant not in (None, "base", "instruct"):
            raise MimoAudioError(f"unknown model variant {variant!r} (use 'base' or 'instruct')")
        model_path = resolve_dir(model_dir)
        text_tok = TextTokenizer.from_dir(model_path)
        lm = load_lm(model_path, device, dtype, quantize=quantize, empty_text_id=text_tok.id("<|empty|>"))
        audio_tok = AudioTokenizer.from_pretrained(
            tokenizer_dir, device=tokenizer_device, dtype=tokenizer_dtype
        )
        if audio_tok.num_quantizers < lm.config.audio_channels:
            raise MimoAudioError(
                f"the audio tokenizer has {audio_tok.num_quantizers} codebooks; the LM needs {lm.config.audio_channels}"
            )
        variant = variant or detect_variant(model_path, read_config(model_path))
        return cls(
            lm,
            audio_tok,
            text_tok,
            variant=variant,
            max_batch=max_batch,
            max_len=max_len,
            compile=compile,
            progress=progress,
            presets=model_presets(model_path),
        )

    @property
    def sample_rate(self) -> int:
        return self.audio_tokenizer.sample_rate

    # ------------------------------------------------------------------ inputs
    def audio_codes(self, audio: AudioLike | tuple, sample_rate: int | None = None) -> torch.Tensor:
        """LM codes ``[N, C]`` of an audio input (path, waveform, ``(waveform, rate)``, or codes ``[N, C]``)."""
        if isinstance(audio, tuple) and len(audio) == 2:
            audio, sample_rate = audio
        C, G = self.config.audio_channels, self.config.group_size
        if (
            isinstance(audio, torch.Tensor)
            and audio.dtype == torch.long
            and audio.dim() == 2
            and audio.shape[1] == C
        ):
            if audio.shape[0] % G:
                raise MimoAudioError(f"audio codes must hold a multiple of {G} frames")
            return audio
        key = None
        if isinstance(audio, (str, os.PathLike)):
            p = Path(audio)
            if p.is_file():
                st = p.stat()
                key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
        return self._codes.get(
            key,
            lambda: self.audio_tokenizer.encode_for_lm(audio, sample_rate, channels=C, group_size=G).cpu(),
        )

    def build_prompt(self, task: str, **inputs: Any) -> torch.Tensor:
        """Input ids ``[1 + C, G·T]`` for ``task`` (SPEC §9), with the field names of expected.json.

        Fields: ``audio``, ``text``, ``instruction``, ``prompt_speech``, ``question``, ``thinking``,
        ``system_prompt``, ``messages``, ``examples``, ``template``, ``read_text_only``, ``seed``
        (draws the template when none is given). Audio may be a path, a waveform or LM codes.
        """
        if task not in TASK_NAMES:
            raise MimoAudioError(f"unknown task {task!r}; choose from {', '.join(TASK_NAMES)}")
        allowed = {
            "asr": {"audio", "template", "seed"},
            "tts": {"text", "instruction", "prompt_speech", "template", "read_text_only", "seed"},
            "audio_understanding": {"audio", "question", "thinking"},
            "spoken_dialogue": {"audio", "text", "messages", "system_prompt", "prompt_speech"},
            "s2t_dialogue": {"audio", "messages", "thinking"},
            "text_dialogue": {"text", "messages", "thinking"},
            "in_context_s2s": {"instruction", "examples", "audio"},
            "continuation": {"audio"},
        }[task]
        unknown = {k for k, v in inputs.items() if v is not None} - allowed
        if unknown:
            raise MimoAudioError(f"task {task!r} takes no {', '.join(sorted(unknown))}")
        rng = random.Random(inputs["seed"]) if inputs.get("seed") is not None else None
        b = self.prompts
        get = inputs.get

        def need(key: str):
            if get(key) is None or (isinstance(get(key), str) and not get(key).strip()):
                raise MimoAudioError(f"task {task!r} needs {key!r}")
            return get(key)

        if task == "asr":
            return b.asr(self.audio_codes(need("audio")), get("template"), rng)
        if task == "tts":
            voice = get("prompt_speech")
            return b.tts(
                need("text"),
                get("instruction"),
                None if voice is None else self.audio_codes(voice),
                get("template"),
                get("read_text_only", True),
                rng,
            )
        if task == "audio_understanding":
            return b.audio_understanding(
                self.audio_codes(need("audio")), need("question"), bool(get("thinking"))
            )
        if task == "in_context_s2s":
            examples = [self._example(e) for e in need("examples")]
            return b.in_context_s2s(need("instruction"), examples, self.audio_codes(need("audio")))
        if task == "continuation":
            return b.continuation(self.audio_codes(need("audio")))
        # dialogues
        if get("messages") is not None:
            messages = parse_messages(get("messages"), self.audio_codes)
        elif task == "text_dialogue":
            messages = [Message("user", text=need("text"))]
        elif get("audio") is not None:
            messages = [Message("user", audio=self.audio_codes(get("audio")))]
        elif task == "spoken_dialogue" and get("text"):
            messages = [Message("user", text=get("text"))]
        else:
            raise MimoAudioError(f"task {task!r} needs 'audio' or 'messages'")
        voice = get("prompt_speech")
        return b.dialogue(
            messages,
            speech_output=task == "spoken_dialogue",
            thinking=bool(get("thinking")),
            system_prompt=get("system_prompt"),
            prompt_speech=None if voice is None else self.audio_codes(voice),
        )

    def _example(self, e: Any) -> Example:
        if isinstance(e, Example):
            return e
        if isinstance(e, dict) and "input_audio" in e and "output_audio" in e:
            return Example(
                self.audio_codes(e["input_audio"]),
                self.audio_codes(e["output_audio"]),
                e.get("output_transcription") or "",
            )
        if isinstance(e, (tuple, list)) and len(e) in (2, 3):
            return Example(
                self.audio_codes(e[0]), self.audio_codes(e[1]), (e[2] if len(e) == 3 else "") or ""
            )
        raise MimoAudioError(
            "an example is {'input_audio', 'output_audio', 'output_transcription'} or a pair"
        )

    # ------------------------------------------------------------------ generation
    def options(
        self,
        task: str | None = None,
        *,
        greedy: bool | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        speech_temperature: float | None = None,
        speech_top_k: int | None = None,
        speech_top_p: float | None = None,
        speech_greedy: bool | None = None,
        seed: int | None = None,
        max_new_steps: int | None = None,
        min_new_steps: int = 0,
        max_audio_seconds: float | None = None,
        stop_ids: Sequence[int] | None = None,
        record_logits: bool = False,
    ) -> GenerationOptions:
        """Generation options: the task's preset (SPEC §8.2/§8.3) with any overrides applied."""
        preset = self.presets.get(task) if task else None
        text = (
            preset.text_sampler
            if preset
            else SamplerConfig(do_sample=True, temperature=0.6, top_k=50, top_p=0.95)
        )
        speech = (
            preset.speech_sampler
            if preset
            else SamplerConfig(do_sample=True, temperature=0.9, top_k=50, top_p=0.95)
        )
        text = _override(text, greedy, temperature, top_k, top_p)
        speech = _override(speech, speech_greedy, speech_temperature, speech_top_k, speech_top_p)
        if stop_ids is None:
            stop_ids = (
                [self.text_tokenizer.id(t) for t in preset.stop_tokens]
                if preset
                else [self.text_tokenizer.eos_id]
            )
        return GenerationOptions(
            text_sampler=text,
            speech_sampler=speech,
            seed=seed,
            max_new_steps=max_new_steps if max_new_steps is not None else MAX_PATCHES,
            min_new_steps=min_new_steps,
            stop_ids=tuple(stop_ids),
            max_audio_seconds=max_audio_seconds,
            record_logits=record_logits,
        )

    def generate(
        self,
        ids: torch.Tensor | Sequence[torch.Tensor],
        *,
        max_new_steps: int | None = None,
        stop_ids: Sequence[int] | None = None,
        greedy: bool = True,
        speech_greedy: bool | None = None,
        return_results: bool = False,
        **overrides: Any,
    ) -> torch.Tensor | list[torch.Tensor] | GenerationResult | list[GenerationResult]:
        """Generate from raw prompt ids ``[1 + C, G·P]`` (or a list; a padded 3-D batch is not needed).

        Returns prompt + generated ids ``[1 + C, G·T]`` per prompt (the layout of ``generate.<task>.ids``);
        ``greedy`` applies to both heads unless ``speech_greedy`` says otherwise. With
        ``return_results`` the engine's :class:`GenerationResult` objects come back instead.
        """
        single = isinstance(ids, torch.Tensor) and ids.dim() == 2
        prompts = [ids] if single else list(ids)
        opts = self.options(
            None,
            greedy=greedy,
            speech_greedy=greedy if speech_greedy is None else speech_greedy,
            max_new_steps=max_new_steps,
            stop_ids=stop_ids if stop_ids is not None else [self.text_tokenizer.eos_id],
            **overrides,
        )
        results = self._run(prompts, [opts] * len(prompts), desc="generate")
        out = results if return_results else [r.ids for r in results]
        return out[0] if single else out

    def _run(
        self,
        prompts: list[torch.Tensor],
        options: list[GenerationOptions],
        desc: str,
        progress: bool | None = None,
    ) -> list[GenerationResult]:
        """Drive the engine over ``prompts`` with a progress bar (steps, seconds of audio)."""
        from tqdm import tqdm

        engine = self.engine
        if engine.num_active or engine.num_waiting:
            raise MimoAudioError("the engine is busy with other requests")
        order = [engine.add(p, o) for p, o in zip(prompts, options, strict=True)]
        results: dict[int, GenerationResult] = {}
        frames = 0
        show = self.progress if progress is None else progress
        bar = tqdm(desc=desc, unit="step", disable=not show, leave=False, dynamic_ncols=True)
        try:
            while len(results) < len(order):
                events = engine.step()
                for ev in events:
                    frames += 0 if ev.speech is None else ev.speech.shape[0]
                    if ev.result is not None:
                        results[ev.request_id] = ev.result
                bar.update(1)
                bar.set_postfix_str(f"{frames / self.audio_tokenizer.frame_rate:.1f}s audio", refresh=False)
        except BaseException:
            for rid in order:
                if rid not in results:
                    engine.cancel(rid)
            raise
        finally:
            bar.close()
        return [results[i] for i in order]

    def finish(self, res: GenerationResult, task: str, voice_pool: VoicePool | None = None) -> TaskResult:
        """Post-process an engine result (SPEC §8.4): text, and audio decoded for speech tasks
        (through ``voice_pool``'s matching when given: :attr:`PreparedRequest.voice_pool`)."""
        return self._finish(res, self.presets[task], self.presets[task].speech_output, voice_pool)

    def _finish(
        self, res: GenerationResult, preset: TaskPreset, want_audio: bool, voice_pool: VoicePool | None = None
    ) -> TaskResult:
        G = self.config.group_size
        prompt_cols = res.prompt_patches * G
        text, codes = split_generation(
            res.ids[:, prompt_cols:], self.text_tokenizer, self.config.speech_zeroemb_idx, G
        )
        audio = None
        if preset is self.presets["asr"] and res.stop_reason == StopReason.MAX_NEW_STEPS:
            log.warning("the model did not end its transcript; cut at %d tokens", len(res.text_ids))
        if want_audio:
            if res.stop_reason == StopReason.MAX_AUDIO:
                log.warning(
                    "the model did not end its speech; cut at %.1f s (raise max_audio_seconds / --max-seconds)",
                    codes.shape[1] / self.audio_tokenizer.frame_rate,
                )
            if codes.shape[1] == 0:
                audio = torch.zeros(self.sample_rate)  # the reference writes 1 s of silence
            elif voice_pool is not None:
                audio = voice_pool.decode(codes)
            else:
                audio = self._decode(codes)
        return TaskResult(
            text,
            audio,
            self.sample_rate,
            res.ids,
            prompt_cols,
            str(res.stop_reason),
            res.seed,
            len(res.text_ids),
        )

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[C, N]`` → float32 waveform ``[samples]`` on the CPU (the pipeline's chunked decode)."""
        return self.audio_tokenizer.decode_chunked(codes.to(self.audio_tokenizer.device)).float().cpu()

    def _check_variant(self, task: str) -> TaskPreset:
        preset = self.presets[task]
        if self.variant is not None and self.variant != preset.variant:
            raise MimoAudioError(
                f"task {task!r} needs the {preset.variant.capitalize()} model; this is the {self.variant.capitalize()} model"
            )
        return preset

    def prepare(self, task: str, inputs: dict[str, Any], **gen: Any) -> PreparedRequest:
        """Validate and build one request: its prompt ids and generation options (no generation yet).

        A scheduler (e.g. the HTTP server) adds ``prepared.prompt`` / ``prepared.options`` to
        :attr:`engine`, feeds the engine's step events to :meth:`stream_state` or passes the final
        result to :meth:`finish`. One request is one candidate: ``best_of`` other than 1 is refused
        here (it needs every candidate's whole output: :meth:`run_batch`).
        """
        self._check_variant(task)  # ``gen`` is this call's own dict (**gen): popped from freely
        if "best_of" in gen and check_best_of(task, gen.pop("best_of")) != 1:
            raise MimoAudioError("best_of needs whole outputs: it is not available for streamed requests")
        match = self._voice_match(task, inputs, gen.pop("voice_match", None))
        if match is not None:  # the examples' codes serve the prompt and the pool: encode them once
            inputs = {**inputs, "examples": [self._example(e) for e in inputs.get("examples") or ()]}
        if task == "tts" and gen.get("max_audio_seconds") is None:
            gen["max_audio_seconds"] = tts_seconds_cap(inputs.get("text") or "")
        prompt = self.build_prompt(task, **inputs)
        if task == "asr" and gen.get("max_new_steps") is None:
            gen["max_new_steps"] = asr_steps_cap(prompt.shape[-1] // self.config.group_size)
        options = self.options(task, **gen)
        pool = None
        if match is not None:
            pool = VoicePool(self.audio_tokenizer, [e.output_audio.T for e in inputs["examples"]], match)
        return PreparedRequest(task, prompt, options, pool)

    def _voice_match(self, task: str, inputs: dict[str, Any], value: Any) -> VoiceMatch | None:
        """The voice matching of one request: ``value`` when given (``None``: not given), else the
        model's ``in_context_s2s`` setting for requests with the ``vc`` instruction (other few-shot
        tasks keep the query's voice, which matching toward the examples would replace)."""
        match = VoiceMatch.parse(value)
        if task != "in_context_s2s":
            if match is not None:
                raise MimoAudioError(f"voice_match applies to in_context_s2s only, not {task}")
            return None
        if value is None and inputs.get("instruction") == FEWSHOT_PRESETS["vc"]:
            return self.presets[task].voice_match
        return match

    def stream_state(
        self, task: str, chunk_frames: int = STREAM_CHUNK_FRAMES, voice_pool: VoicePool | None = None
    ) -> StreamState:
        """Incremental post-processing for one request of ``task`` (text pieces, streamed audio
        decoded every ``chunk_frames`` frames, through ``voice_pool``'s matching when given)."""
        return StreamState(self, task, chunk_frames, voice_pool)

    def run_task(
        self, task: str, inputs: dict[str, Any] | Sequence[dict[str, Any]], **gen: Any
    ) -> TaskResult | list[TaskResult]:
        """Build prompts for one input dict (or a list: batched), generate, post-process."""
        single = isinstance(inputs, dict)
        batch = [inputs] if single else list(inputs)
        seed = gen.pop("seed", None)
        seeds = [None if seed is None else seed + i for i in range(len(batch))]
        out = self.run_batch(task, batch, seeds, **gen)
        return out[0] if single else out

    def run_batch(
        self,
        task: str,
        inputs: Sequence[dict[str, Any]],
        seeds: Sequence[int | None],
        *,
        best_of: int | None = None,
        progress: bool | None = None,
        **gen: Any,
    ) -> list[TaskResult]:
        """Generate for each input dict with its own seed (None: drawn) and post-process.

        ``best_of`` (``in_context_s2s`` only; default the model's preset, 1 unless its
        ``generation_config.json`` says otherwise) generates that many candidates per input, seeds
        ``seed + j · BEST_OF_STRIDE``, and keeps the one that follows the examples best
        (:func:`mimo_audio.rerank.pick_best`); candidate 0 is what ``best_of=1`` returns.
        ``voice_match`` (in ``gen``; ``in_context_s2s`` only: on/off, ``k`` or ``{k, content, timbre}``)
        renders the speech nearer the examples' output voice (:mod:`mimo_audio.voice_match`); not
        given, the model's setting applies to requests with the ``vc`` instruction.
        """
        preset = self._check_variant(task)
        if len(inputs) != len(seeds):
            raise MimoAudioError(f"{len(inputs)} inputs but {len(seeds)} seeds")
        if not inputs:
            return []
        n = check_best_of(task, preset.best_of if best_of is None else best_of)
        reqs = [self.prepare(task, inp, seed=s, **gen) for inp, s in zip(inputs, seeds, strict=True)]
        if n > 1:
            bases = [s if s is not None else int(torch.randint(2**31, ())) for s in seeds]
            options = [
                replace(r.options, seed=(b + j * BEST_OF_STRIDE) % 2**31)
                for r, b in zip(reqs, bases, strict=True)
                for j in range(n)
            ]
            prompts = [r.prompt for r in reqs for _ in range(n)]
        else:
            options, prompts = [r.options for r in reqs], [r.prompt for r in reqs]
        pools = [r.voice_pool for r in reqs for _ in range(n)]
        done = self._run(prompts, options, desc=task, progress=progress)
        results = [self.finish(r, task, p) for r, p in zip(done, pools, strict=True)]
        if n == 1:
            return results
        return [self._pick(inp, results[i * n : (i + 1) * n]) for i, inp in enumerate(inputs)]

    def _pick(self, inputs: dict[str, Any], candidates: list[TaskResult]) -> TaskResult:
        """The candidate (of one in-context request) that follows its examples best, judged on the
        codec's rendering of the query and examples (what the LM saw)."""
        from .rerank import pick_best

        def wav(codes: torch.Tensor):  # LM codes [N, C] → waveform
            return self._decode(codes.T).numpy()

        examples = [self._example(e) for e in inputs["examples"]]
        pairs = [(wav(e.input_audio), wav(e.output_audio)) for e in examples]
        clips = [c.audio.numpy() for c in candidates]
        best, scores = pick_best(clips, wav(self.audio_codes(inputs["audio"])), pairs, self.sample_rate)
        log.debug(
            "best of %d: candidate %d (scores %s)", len(candidates), best, [round(x, 2) for x in scores]
        )
        return candidates[best]

    def stream_task(self, task: str, inputs: dict[str, Any], **gen: Any) -> Iterator[StreamChunk]:
        """Stream one task: text pieces as decoded, audio through the tokenizer's streaming decoder."""
        req = self.prepare(task, inputs, **gen)
        state = self.stream_state(task, voice_pool=req.voice_pool)
        for ev in self.engine.stream(req.prompt, req.options):
            chunk = state.feed(ev)
            if chunk is not None:
                yield chunk

    # ------------------------------------------------------------------ tasks
    def asr(self, audio: AudioLike | Sequence[AudioLike], *, template: str | None = None, **gen: Any):
        """Speech recognition → :class:`TaskResult` with ``text``."""
        return self.run_task(
            "asr", _each(audio, lambda a: {"audio": a, "template": template, "seed": gen.get("seed")}), **gen
        )

    def tts(
        self,
        text: str | Sequence[str],
        *,
        instruction: str | None = None,
        voice: AudioLike | None = None,
        natural_instruction: bool = False,
        template: str | None = None,
        **gen: Any,
    ):
        """Text to speech; ``instruction`` describes the style, ``voice`` is a prompt clip to imitate.

        ``natural_instruction=True`` reads ``text`` as a free-form request with the style embedded.
        """
        return self.run_task(
            "tts",
            _each(
                text, lambda t: self._tts_inputs(t, instruction, voice, natural_instruction, template, gen)
            ),
            **gen,
        )

    def _tts_inputs(self, text, instruction, voice, natural, template, gen) -> dict[str, Any]:
        if not isinstance(text, str) or not text.strip():
            raise MimoAudioError("tts needs non-empty text")
        if voice is not None and not (instruction or natural):
            log.warning("a voice prompt is only used with an instruction (as in the reference); ignoring it")
        return {
            "text": text,
            "instruction": instruction,
            "prompt_speech": voice if (instruction or natural) else None,
            "read_text_only": not natural,
            "template": template,
            "seed": gen.get("seed"),
        }

    def continue_speech(self, audio: AudioLike | Sequence[AudioLike], seconds: float = 10.0, **gen: Any):
        """Continue a speech prompt for up to ``seconds`` of new audio (Base model)."""
        if not seconds > 0:
            raise MimoAudioError(f"seconds must be > 0, got {seconds}")
        gen.setdefault("max_audio_seconds", seconds)
        return self.run_task("continuation", _each(audio, lambda a: {"audio": a}), **gen)

    def in_context(
        self,
        audio: AudioLike | Sequence[AudioLike],
        examples: Sequence[Any],
        instruction: str = FEWSHOT_PRESETS["vc"],
        **gen: Any,
    ):
        """Few-shot speech-to-speech (Base model): voice/emotion/speed conversion, denoising, translation.

        ``examples``: ``{"input_audio", "output_audio", "output_transcription"}`` dicts or
        ``(input, output[, transcription])`` tuples. ``instruction`` may be a preset name
        (``vc``, ``emotion``, ``speed``, ``denoise``, ``translate``) or any text.
        """
        if not examples:
            raise MimoAudioError("in-context learning needs at least one example pair")
        instruction = FEWSHOT_PRESETS.get(instruction, instruction)
        parsed = [self._example(e) for e in examples]
        return self.run_task(
            "in_context_s2s",
            _each(audio, lambda a: {"audio": a, "examples": parsed, "instruction": instruction}),
            **gen,
        )

    def understand(
        self, audio: AudioLike | Sequence[AudioLike], question: str, *, thinking: bool = False, **gen: Any
    ):
        """Answer ``question`` about the audio; ``thinking`` lets the model reason first."""
        return self.run_task(
            "audio_understanding",
            _each(audio, lambda a: {"audio": a, "question": question, "thinking": thinking}),
            **gen,
        )

    def chat(
        self,
        messages: Sequence[Any] | Sequence[Sequence[Any]],
        *,
        speech_output: bool | None = None,
        thinking: bool = False,
        system_prompt: str | None = None,
        voice: AudioLike | None = None,
        **gen: Any,
    ):
        """Dialogue over ``[{"role", "content"}, ...]`` (content: text, audio, or ``{"text", "audio"}``).

        ``speech_output`` (default: when the last user turn is audio) answers in speech; otherwise the
        answer is text (speech→text or text dialogue). A list of conversations is batched.
        """
        batch = bool(messages) and isinstance(messages[0], (list, tuple))
        convs = list(messages) if batch else [messages]
        tasks, inputs = [], []
        for conv in convs:
            if not conv:
                raise MimoAudioError("a conversation needs at least one message")
            last = conv[-1]
            content = last.get("content") if isinstance(last, dict) else getattr(last, "audio", None)
            audio_in = not isinstance(content, str) and not (
                isinstance(content, dict) and "audio" not in content
            )
            speaks = audio_in if speech_output is None else speech_output
            any_audio = any(
                not isinstance(m.get("content") if isinstance(m, dict) else m.text, str) for m in conv
            )
            task = "spoken_dialogue" if speaks else ("s2t_dialogue" if any_audio else "text_dialogue")
            fields: dict[str, Any] = {"messages": conv}
            if task == "spoken_dialogue":
                fields.update(system_prompt=system_prompt, prompt_speech=voice)
            else:
                fields.update(thinking=thinking)
            tasks.append(task)
            inputs.append(fields)
        if len(set(tasks)) > 1:
            out = [self.run_task(t, i, **gen) for t, i in zip(tasks, inputs, strict=True)]
        else:
            out = self.run_task(tasks[0], inputs, **gen)
        return out if batch else out[0]

    # streaming variants ---------------------------------------------------------------------
    def asr_stream(
        self, audio: AudioLike, *, template: str | None = None, **gen: Any
    ) -> Iterator[StreamChunk]:
        return self.stream_task("asr", {"audio": audio, "template": template, "seed": gen.get("seed")}, **gen)

    def tts_stream(
        self, text: str, *, instruction=None, voice=None, natural_instruction=False, template=None, **gen
    ):
        return self.stream_task(
            "tts", self._tts_inputs(text, instruction, voice, natural_instruction, template, gen), **gen
        )

    def continue_speech_stream(
        self, audio: AudioLike, seconds: float = 10.0, **gen: Any
    ) -> Iterator[StreamChunk]:
        gen.setdefault("max_audio_seconds", seconds)
        return self.stream_task("continuation", {"audio": audio}, **gen)

    def in_context_stream(self, audio, examples, instruction: str = FEWSHOT_PRESETS["vc"], **gen):
        parsed = [self._example(e) for e in examples]
        instruction = FEWSHOT_PRESETS.get(instruction, instruction)
        return self.stream_task(
            "in_context_s2s", {"audio": audio, "examples": parsed, "instruction": instruction}, **gen
        )

    def understand_stream(self, audio, question: str, *, thinking: bool = False, **gen):
        return self.stream_task(
            "audio_understanding", {"audio": audio, "question": question, "thinking": thinking}, **gen
        )

    def chat_stream(
        self, messages, *, speech_output=None, thinking=False, system_prompt=None, voice=None, **gen
    ):
        last = messages[-1]["content"] if messages else None
        speaks = (not isinstance(last, str)) if speech_output is None else speech_output
        if speaks:
            inputs = {"messages": messages, "system_prompt": system_prompt, "prompt_speech": voice}
            return self.stream_task("spoken_dialogue", inputs, **gen)
        any_audio = any(not isinstance(m["content"], str) for m in messages)
        return self.stream_task(
            "s2t_dialogue" if any_audio else "text_dialogue",
            {"messages": messages, "thinking": thinking},
            **gen,
        )


def _each(value: Any, make: Callable[[Any], dict[str, Any]]) -> dict[str, Any] | list[dict[str, Any]]:
    """One input dict, or a list of them when ``value`` is a list of inputs (a batch)."""
    if isinstance(value, list):
        return [make(v) for v in value]
    return make(value)


def _override(cfg: SamplerConfig, greedy, temperature, top_k, top_p) -> SamplerConfig:
    changes: dict[str, Any] = {}
    if greedy is not None:
        changes["do_sample"] = not greedy
    if temperature is not None:
        changes["temperature"] = temperature
        changes.setdefault("do_sample", True)
    if top_k is not None:
        changes["top_k"] = top_k
    if top_p is not None:
        changes["top_p"] = top_p
    return replace(cfg, **changes) if changes else cfg


def _dtype(value: torch.dtype | str | None) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        return value
    if value not in DTYPES:
        raise MimoAudioError(f"unknown dtype {value!r}; choose from {', '.join(DTYPES)}")
    return DTYPES[value]


def _cpu(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else x.float().cpu()


__all__ = [
    "FEWSHOT_PRESETS",
    "MimoAudio",
    "PreparedRequest",
    "StopReason",
    "StreamChunk",
    "StreamState",
    "TaskResult",
]
