"""The Gradio demo: one tab per task, with the CLI's sampling options.

Tabs: TTS (plain, instruct, natural instruction, voice prompt), voice conversion from few-shot
examples, speech continuation, ASR, audio understanding and spoken chat (microphone or upload).
Speech is played while it is generated when ffmpeg is installed (Gradio encodes streamed audio
with it); otherwise it plays once complete. The model is used by one request at a time (a lock):
the demo is for trying the model, ``mimo-audio serve`` is for many users.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from .. import MimoAudio, MimoAudioError  # noqa: E402

FEWSHOT = ("vc", "emotion", "speed", "denoise", "translate")
SYSTEM_PROMPT = "You are MiMo-Audio, a friendly AI assistant and your response needs to be concise."
EXAMPLE_PAIRS = 3
_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
_MONO = ["ui-monospace", "monospace"]


def _clip(value: Any) -> tuple[np.ndarray, int] | None:
    """Gradio numpy audio ``(rate, samples[, channels])`` → ``(float32 samples, rate)`` or None."""
    if value is None:
        return None
    rate, data = value
    data = np.asarray(data)
    if np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float32) / float(-np.iinfo(data.dtype).min)
    data = data.astype(np.float32)
    if data.ndim == 2:
        data = data.mean(axis=1)
    return data, int(rate)


def _pcm(wav) -> np.ndarray:
    return (np.clip(wav.reshape(-1).numpy(), -1.0, 1.0) * 32767).astype(np.int16)


class Demo:
    """Task callbacks over one model, serialised by a lock."""

    def __init__(
        self, model: MimoAudio, max_new_steps: int | None = None, stream: bool | None = None
    ) -> None:
        self.model = model
        self.max_new_steps = max_new_steps
        self.stream = shutil.which("ffmpeg") is not None if stream is None else stream
        self.lock = threading.Lock()

    def gen(
        self, seed, greedy, temperature, top_k, top_p, speech_temperature, speech_top_k, speech_top_p, steps
    ):
        g = {
            "seed": None if seed is None or seed < 0 else int(seed),
            "temperature": temperature or None,
            "top_k": None if top_k is None or top_k < 0 else int(top_k),
            "top_p": top_p or None,
            "speech_temperature": speech_temperature or None,
            "speech_top_k": None if speech_top_k is None or speech_top_k < 0 else int(speech_top_k),
            "speech_top_p": speech_top_p or None,
            "max_new_steps": int(steps) if steps else self.max_new_steps,
        }
        if self.max_new_steps is not None and g["max_new_steps"] is not None:
            g["max_new_steps"] = min(g["max_new_steps"], self.max_new_steps)
        if greedy:
            g.update(greedy=True, speech_greedy=True)
        return {k: v for k, v in g.items() if v is not None}

    def _speak(self, chunks: Iterator) -> Iterator[tuple[Any, str, Any]]:
        """Play a streamed task: audio chunks as they come (streaming) or the whole clip at the end.

        Yields ``(audio update, text so far, final TaskResult or None)``.
        """
        rate = self.model.sample_rate
        text = ""
        with self.lock:
            for chunk in chunks:
                text += chunk.text
                if chunk.result is not None:
                    res = chunk.result
                    last = (rate, _pcm(chunk.audio)) if self.stream and chunk.audio is not None else gr.skip()
                    whole = (rate, _pcm(res.audio)) if res.audio is not None else None
                    yield (last if self.stream else whole), res.text, res
                elif self.stream and chunk.audio is not None and chunk.audio.numel():
                    yield (rate, _pcm(chunk.audio)), text, None

    def _play(self, chunks: Iterator) -> Iterator[tuple[Any, str]]:
        for audio, text, _ in self._guard(self._speak(chunks)):
            yield audio, text

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MimoAudioError as e:
            raise gr.Error(str(e)) from None

    # ------------------------------------------------------------------ tasks
    def tts(self, text, instruction, voice, natural, *opts):
        if not text or not text.strip():
            raise gr.Error("enter some text")
        chunks = self._call(
            self.model.tts_stream,
            text,
            instruction=instruction or None,
            voice=_clip(voice),
            natural_instruction=bool(natural),
            **self.gen(*opts),
        )
        yield from self._play(chunks)

    def convert(self, target, preset, instruction, *rest):
        pairs, opts = rest[: 3 * EXAMPLE_PAIRS], rest[3 * EXAMPLE_PAIRS :]
        examples = []
        for i in range(EXAMPLE_PAIRS):
            src, out, transcript = pairs[3 * i : 3 * i + 3]
            if (src is None) != (out is None):
                raise gr.Error(f"example {i + 1} needs both an input and an output clip")
            if src is not None:
                examples.append((_clip(src), _clip(out), transcript or ""))
        if not examples:
            raise gr.Error("give at least one example pair")
        if target is None:
            raise gr.Error("give the clip to convert")
        chunks = self._call(
            self.model.in_context_stream, _clip(target), examples, instruction or preset, **self.gen(*opts)
        )
        yield from self._play(chunks)

    def continue_speech(self, audio, seconds, *opts):
        if audio is None:
            raise gr.Error("give a speech prompt")
        chunks = self._call(
            self.model.continue_speech_stream, _clip(audio), float(seconds), **self.gen(*opts)
        )
        yield from self._play(chunks)

    def asr(self, audio, *opts):
        if audio is None:
            raise gr.Error("record or upload audio")
        with self.lock:
            return self._call(self.model.asr, _clip(audio), **self.gen(*opts)).text

    def understand(self, audio, question, thinking, *opts):
        if audio is None or not question:
            raise gr.Error("give audio and a question")
        with self.lock:
            return self._call(
                self.model.understand, _clip(audio), question, thinking=bool(thinking), **self.gen(*opts)
            ).text

    def chat(self, history, messages, audio, text, speech_out, system_prompt, voice, *opts):
        """One spoken-chat turn: the user's audio (or text) → a text and, optionally, spoken reply.

        ``messages`` (a gr.State) holds the conversation for the model, audio turns included.
        """
        clip = _clip(audio)
        if clip is None and not (text and text.strip()):
            raise gr.Error("record or upload audio, or type a message")
        messages = [*(messages or []), {"role": "user", "content": clip if clip is not None else text}]
        kwargs = self.gen(*opts)
        if speech_out:
            kwargs.update(system_prompt=system_prompt or None, voice=_clip(voice))
        chunks = self._call(self.model.chat_stream, messages, speech_output=bool(speech_out), **kwargs)
        turns = [*(history or []), {"role": "user", "content": text if clip is None else "🎤 (audio)"}]
        turns.append({"role": "assistant", "content": ""})
        for audio_out, reply, result in self._guard(self._speak(chunks)):
            turns[-1] = {"role": "assistant", "content": reply}
            if result is not None:
                content: Any = result.text
                if result.audio is not None:
                    content = {"text": result.text, "audio": (result.audio, result.sample_rate)}
                messages = [*messages, {"role": "assistant", "content": content}]
            yield turns, (audio_out if speech_out else None), messages

    @staticmethod
    def _guard(it: Iterator) -> Iterator:
        try:
            yield from it
        except MimoAudioError as e:
            raise gr.Error(str(e)) from None


def _sampling() -> list:
    with gr.Accordion("Sampling options (as in the CLI)", open=False):
        with gr.Row():
            seed = gr.Number(-1, label="seed (-1: random)", precision=0)
            greedy = gr.Checkbox(False, label="greedy")
            steps = gr.Number(0, label="max new steps (0: task default)", precision=0)
        with gr.Row():
            temperature = gr.Number(0, label="text temperature (0: preset)")
            top_k = gr.Number(-1, label="text top-k (-1: preset)", precision=0)
            top_p = gr.Number(0, label="text top-p (0: preset)")
        with gr.Row():
            s_temperature = gr.Number(0, label="speech temperature (0: preset)")
            s_top_k = gr.Number(-1, label="speech top-k (-1: preset)", precision=0)
            s_top_p = gr.Number(0, label="speech top-p (0: preset)")
    return [seed, greedy, temperature, top_k, top_p, s_temperature, s_top_k, s_top_p, steps]


def _out_audio(demo: Demo, label: str = "speech") -> gr.Audio:
    return gr.Audio(
        label=label, streaming=demo.stream, autoplay=True, interactive=False, elem_classes=["mimo-out"]
    )


def build_demo(
    model: MimoAudio, *, max_new_steps: int | None = None, stream: bool | None = None
) -> gr.Blocks:
    """The Blocks app (not launched). ``stream=None``: stream playback when ffmpeg is available."""
    demo = Demo(model, max_new_steps, stream)
    mic = ["microphone", "upload"]
    with gr.Blocks(title="MiMo-Audio") as app:
        gr.Markdown(f"# MiMo-Audio\nvariant: {model.variant or 'any'} · {model.sample_rate} Hz")
        with gr.Tab("TTS"):
            text = gr.Textbox(label="text", lines=3, elem_id="tts-text")
            instruction = gr.Textbox(label="style instruction (optional: instruct TTS)")
            with gr.Row():
                voice = gr.Audio(
                    label="voice prompt (optional, used with an instruction)", sources=mic, type="numpy"
                )
                natural = gr.Checkbox(False, label="natural instruction (the text carries the style)")
            opts = _sampling()
            button = gr.Button("Speak", variant="primary", elem_id="tts-go")
            audio = _out_audio(demo)
            said = gr.Textbox(label="text part of the output", interactive=False)
            button.click(demo.tts, [text, instruction, voice, natural, *opts], [audio, said])
        with gr.Tab("Voice conversion"):
            gr.Markdown(
                "Few-shot speech-to-speech (Base model): give example pairs, then the clip to convert."
            )
            pairs = []
            for i in range(EXAMPLE_PAIRS):
                with gr.Row():
                    pairs += [
                        gr.Audio(label=f"example {i + 1} input", sources=mic, type="numpy"),
                        gr.Audio(label=f"example {i + 1} output", sources=mic, type="numpy"),
                        gr.Textbox(label=f"example {i + 1} output transcript (optional)"),
                    ]
            target = gr.Audio(label="clip to convert", sources=mic, type="numpy")
            with gr.Row():
                preset = gr.Dropdown(list(FEWSHOT), value="vc", label="preset")
                custom = gr.Textbox(label="custom instruction (overrides the preset)")
            opts = _sampling()
            button = gr.Button("Convert", variant="primary")
            audio = _out_audio(demo)
            said = gr.Textbox(label="text part of the output", interactive=False)
            button.click(demo.convert, [target, preset, custom, *pairs, *opts], [audio, said])
        with gr.Tab("Continuation"):
            prompt = gr.Audio(label="speech prompt", sources=mic, type="numpy")
            seconds = gr.Slider(1, 60, value=10, step=1, label="seconds to add at most")
            opts = _sampling()
            button = gr.Button("Continue", variant="primary")
            audio = _out_audio(demo)
            said = gr.Textbox(label="text part of the output", interactive=False)
            button.click(demo.continue_speech, [prompt, seconds, *opts], [audio, said])
        with gr.Tab("ASR"):
            clip = gr.Audio(label="speech", sources=mic, type="numpy")
            opts = _sampling()
            button = gr.Button("Transcribe", variant="primary")
            out = gr.Textbox(label="transcript", interactive=False)
            button.click(demo.asr, [clip, *opts], out)
        with gr.Tab("Audio understanding"):
            clip = gr.Audio(label="audio", sources=mic, type="numpy")
            question = gr.Textbox(label="question")
            thinking = gr.Checkbox(False, label="think first")
            opts = _sampling()
            button = gr.Button("Ask", variant="primary")
            out = gr.Textbox(label="answer", interactive=False)
            button.click(demo.understand, [clip, question, thinking, *opts], out)
        with gr.Tab("Spoken chat"):
            chatbot = gr.Chatbot(label="conversation", height=300)
            conversation = gr.State([])
            with gr.Row():
                said_in = gr.Audio(label="say something", sources=mic, type="numpy")
                typed = gr.Textbox(label="…or type", lines=2)
            with gr.Row():
                speech_out = gr.Checkbox(True, label="answer in speech")
                system = gr.Textbox(SYSTEM_PROMPT, label="system prompt (spoken answers)")
                voice = gr.Audio(label="reply voice (optional)", sources=mic, type="numpy")
            opts = _sampling()
            with gr.Row():
                button = gr.Button("Send", variant="primary")
                clear = gr.Button("New conversation")
            reply = _out_audio(demo, "spoken reply")
            button.click(
                demo.chat,
                [chatbot, conversation, said_in, typed, speech_out, system, voice, *opts],
                [chatbot, reply, conversation],
            )
            clear.click(lambda: ([], None, []), None, [chatbot, reply, conversation])
    return app


def launch(
    model: MimoAudio,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    max_new_steps: int | None = None,
    **kwargs: Any,
):
    """Build and serve the demo (blocks unless ``prevent_thread_lock=True`` is passed)."""
    app = build_demo(model, max_new_steps=max_new_steps)
    app.queue(default_concurrency_limit=1)
    theme = gr.themes.Default(font=_FONTS, font_mono=_MONO)  # system fonts: no web-font downloads
    return app.launch(
        server_name=host,
        server_port=port,
        share=False,
        theme=theme,
        max_file_size="25mb",
        show_error=True,
        **kwargs,
    )
