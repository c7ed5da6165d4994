"""Prompt construction for every MiMo-Audio task (SPEC §9), reproducing the reference's input ids.

A prompt is a list of *segments* (text, bracketed audio, interleaved text+audio stream), each turned
into a block of patches and concatenated in time. The result is a LongTensor ``[1 + C, 4·T]``:
row 0 is the text channel (only column ``4p`` is read; the other three hold ``-100``), rows
``1..C`` are the codebooks (the per-codebook empty id where no audio is present).

Audio enters as LM codes ``[N, C]`` int64 with ``N % group_size == 0`` (what
``AudioTokenizer.encode_for_lm`` returns).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .errors import MimoAudioError
from .text_tokenizer import TextTokenizer

IGNORE = -100
STREAM_TEXT_CHUNK = 5  # tokens per text chunk inside a stream
STREAM_AUDIO_CHUNK = 5  # patches per audio chunk inside a stream
FRAME_RATE = 25  # audio tokenizer frames per second (SPEC §2)

ASR_TEMPLATES_ZH = (
    "请将这段语音转换为文字",
    "帮我识别这个音频文件中的内容",
    "把这段录音转成文本",
    "请转录这段语音",
    "将音频内容转换成文字格式",
    "识别并转写这段语音",
    "把语音内容写成文字",
    "转录这个音频片段",
    "将这段对话转换为文本",
    "麻烦帮我把这段录音整理成详细的文字记录",
)
ASR_TEMPLATES_EN = (
    "Please transcribe this audio file",
    "Convert this speech recording to text",
    "Transcribe the following voice message",
    "Turn this audio into readable text",
    "Please convert the recording to written format",
    "Transcribe what you hear in this audio",
    "Convert this spoken content to text",
    "Please write down what is said in this recording",
    "Transcribe this voice recording",
    "Could you please help me transcribe this important recording?",
    "Would you mind converting this voice message into a readable text format?",
    "I'd really appreciate it if you could turn this audio file into a written document",
)
ASR_TEMPLATES = ASR_TEMPLATES_ZH + ASR_TEMPLATES_EN
TTS_TEMPLATES = {
    "zh": (
        "请将这段文字转换为语音",
        "帮我把这个文本读出来",
        "将这些文字生成音频",
        "请朗读这段内容",
        "把这段话转换成语音文件",
        "生成这段文字的语音版本",
        "请用语音播报这些内容",
        "将文本转换为可听的音频",
        "帮我朗读这段文字",
        "把这些内容念出来",
    ),
    "en": (
        "Please convert this text to speech",
        "Turn this writing into audio",
        "Generate speech from this text",
        "Read this content out loud",
        "Convert these words to voice",
        "Create an audio version of this text",
        "Please vocalize this content",
        "Turn this text into audible format",
        "Help me convert this writing to speech",
        "Make this text into spoken audio",
    ),
}
INSTRUCT_TTS_SYSTEM = "你需要根据指定的风格指令和文本内容来生成语音。"
INSTRUCT_TTS_VOICE_SYSTEM = (
    "你需要根据指定的风格指令和文本内容来生成和语音prompt具有相同音色的语音。你的音色应该是："
)
VOICE_PROMPT_SYSTEM = "Your voice should be:"
DEFAULT_SYSTEM_PROMPT = "You are MiMo-Audio, a friendly AI assistant and your response needs to be concise."
THINK_OFF = "<think>\n\n</think>\n"
THINK_ON = "<think>\n"


def is_chinese(text: str) -> bool:
    """True if ``text`` holds any CJK unified ideograph (U+4E00–U+9FFF)."""
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def normalize_tts_text(text: str) -> str:
    """``capitalize()`` text that is entirely lower- or upper-case, as the reference does for TTS."""
    return text.capitalize() if (text.islower() or text.isupper()) else text


@dataclass
class Message:
    """One chat turn. ``text`` and/or ``audio`` (LM codes ``[N, C]``) carry the content."""

    role: str
    text: str | None = None
    audio: torch.Tensor | None = None


@dataclass
class Example:
    """One in-context example: input audio, output audio and (optional) output transcription."""

    input_audio: torch.Tensor
    output_audio: torch.Tensor
    output_transcription: str = ""


class PromptBuilder:
    """Turns task inputs into LM input ids ``[1 + C, group_size · T]`` (SPEC §9)."""

    def __init__(self, tokenizer: TextTokenizer, empty_ids: Sequence[int], group_size: int = 4) -> None:
        self.tok = tokenizer
        self.empty_ids = torch.tensor(list(empty_ids), dtype=torch.long)
        self.channels = len(self.empty_ids)
        self.group_size = group_size
        self.ids = {
            name: tokenizer.id(name)
            for name in ("<|sosp|>", "<|eosp|>", "<|empty|>", "<|sostm|>", "<|eostm|>", "<|eot|>")
        }

    # ----- segments -------------------------------------------------------------------------
    def _text_patches(self, token_ids: Sequence[int]) -> torch.Tensor:
        """One patch per token: ``[1 + C, G·n]``."""
        n, g = len(token_ids), self.group_size
        out = torch.empty(1 + self.channels, n * g, dtype=torch.long)
        out[0] = IGNORE
        out[0, ::g] = torch.tensor(list(token_ids), dtype=torch.long)
        out[1:] = self.empty_ids[:, None]
        return out

    def text(self, text: str) -> torch.Tensor:
        """A text segment: the string tokenised alone, one patch per token."""
        return self._text_patches(self.tok.encode(text))

    def _check_codes(self, codes: torch.Tensor) -> torch.Tensor:
        if codes.ndim != 2 or codes.shape[1] != self.channels:
            raise MimoAudioError(f"audio codes must be [frames, {self.channels}], got {tuple(codes.shape)}")
        if codes.shape[0] % self.group_size:
            raise MimoAudioError(
                f"audio codes must hold a multiple of {self.group_size} frames, got {codes.shape[0]}"
            )
        return codes.long()

    def _speech_patches(self, codes: torch.Tensor) -> torch.Tensor:
        """``<|empty|>`` patches carrying ``codes`` ``[N, C]`` (no brackets): ``[1 + C, N]``."""
        codes = self._check_codes(codes)
        n = codes.shape[0]
        out = torch.full((1 + self.channels, n), IGNORE, dtype=torch.long)
        out[0, :: self.group_size] = self.ids["<|empty|>"]
        out[1:] = codes.T
        return out

    def audio(self, codes: torch.Tensor) -> torch.Tensor:
        """An input audio segment: ``<|sosp|>``, the speech patches, ``<|eosp|>``."""
        return torch.cat(
            [
                self._text_patches([self.ids["<|sosp|>"]]),
                self._speech_patches(codes),
                self._text_patches([self.ids["<|eosp|>"]]),
            ],
            dim=1,
        )

    def stream(self, text: str, codes: torch.Tensor | None) -> torch.Tensor:
        """An interleaved text+speech stream: 5-token text chunks alternating with 5-patch audio chunks."""
        tokens = self.tok.encode(text) if text else []
        text_chunks = [
            tokens[i : i + STREAM_TEXT_CHUNK] for i in range(0, len(tokens), STREAM_TEXT_CHUNK)
        ] or [[]]
        text_chunks[-1] = text_chunks[-1] + [self.ids["<|eot|>"]]
        frames = STREAM_AUDIO_CHUNK * self.group_size
        if codes is None:
            audio_chunks = []
        else:
            codes = self._check_codes(codes)
            audio_chunks = [codes[i : i + frames] for i in range(0, codes.shape[0], frames)]
        parts = [self._text_patches([self.ids["<|sostm|>"]])]
        for i in range(max(len(text_chunks), len(audio_chunks))):
            if i < len(text_chunks):
                parts.append(self._text_patches(text_chunks[i]))
            if i < len(audio_chunks):
                parts.append(self._speech_patches(audio_chunks[i]))
        parts.append(self._text_patches([self.ids["<|eostm|>"]]))
        return self._join(parts)

    def aligned_stream(
        self, text: str, codes: torch.Tensor, word_starts: Sequence[tuple[int, float]]
    ) -> torch.Tensor:
        """A *word-aligned* text+speech stream (a training format; inference reads whatever
        interleaving the model emits): each word's tokens just before the speech patch in which the
        word starts, ``<|eot|>`` right after the last word, then the rest of the speech.

        ``word_starts``: ``(character offset in text, seconds)`` per word, sorted by offset; a token
        belongs to the last word starting at or before its first non-space character. Patches are
        ``group_size`` frames at 25 Hz. Returns ``[1 + C, G·n]`` starting with ``<|sostm|>`` and
        ending with ``<|eostm|>``, like :meth:`stream`.
        """
        codes = self._check_codes(codes)
        tokens, offsets = self.tok.encode_with_offsets(text)
        n_patches = codes.shape[0] // self.group_size
        patch_s = self.group_size / FRAME_RATE
        starts = sorted(word_starts)
        at: dict[int, list[int]] = {}  # patch index → tokens emitted just before it
        w = 0
        for tok, off in zip(tokens, offsets, strict=True):
            while w + 1 < len(starts) and starts[w + 1][0] <= off:
                w += 1
            sec = starts[w][1] if starts else 0.0
            at.setdefault(min(int(sec / patch_s), n_patches), []).append(tok)
        last = max(at, default=0)
        at.setdefault(last, []).append(self.ids["<|eot|>"])
        parts = [self._text_patches([self.ids["<|sostm|>"]])]
        G, done = self.group_size, 0  # patches of speech emitted so far
        for p in sorted(at):
            if p > done:
                parts.append(self._speech_patches(codes[done * G : p * G]))
            parts.append(self._text_patches(at[p]))
            done = p
        if done < n_patches:
            parts.append(self._speech_patches(codes[done * G :]))
        parts.append(self._text_patches([self.ids["<|eostm|>"]]))
        return self._join(parts)

    def _join(self, parts: Sequence[torch.Tensor | str]) -> torch.Tensor:
        blocks = [self.text(p) if isinstance(p, str) else p for p in parts]
        return torch.cat(blocks, dim=1)

    # ----- tasks ----------------------------------------------------------------------------
    def asr(
        self, codes: torch.Tensor, template: str | None = None, rng: random.Random | None = None
    ) -> torch.Tensor:
        template = template if template is not None else (rng or random).choice(ASR_TEMPLATES)
        return self._join(
            [
                "<|im_start|>user\n",
                self.audio(codes),
                template,
                "<|im_end|>\n",
                "<|im_start|>assistant\n",
                THINK_OFF,
            ]
        )

    def tts(
        self,
        text: str,
        instruction: str | None = None,
        prompt_speech: torch.Tensor | None = None,
        template: str | None = None,
        read_text_only: bool = True,
        rng: random.Random | None = None,
    ) -> torch.Tensor:
        """TTS, instruct TTS (optionally with a voice prompt) and natural-instruction TTS."""
        text = normalize_tts_text(text)
        if template is None:
            template = (rng or random).choice(TTS_TEMPLATES["zh" if is_chinese(text) else "en"])
        if read_text_only and not instruction:
            # The reference encodes but ignores a voice prompt given without an instruction.
            return self._join(
                [f"<|im_start|>user\n{template}: {text}<|im_end|>\n", "<|im_start|>assistant\n<|sostm|>"]
            )
        user = (
            f"<|im_start|>user\n{template}: {text}({instruction})<|im_end|>\n"
            if read_text_only
            else (f"<|im_start|>user\n{text}<|im_end|>\n")
        )
        if prompt_speech is None:
            head = ["<|im_start|>system\n", INSTRUCT_TTS_SYSTEM, "<|im_end|>\n"]
        else:
            head = [
                "<|im_start|>system\n",
                INSTRUCT_TTS_VOICE_SYSTEM,
                self.audio(prompt_speech),
                "<|im_end|>\n",
            ]
        return self._join([*head, user, "<|im_start|>assistant\n<think>\n"])

    def audio_understanding(self, codes: torch.Tensor, question: str, thinking: bool = False) -> torch.Tensor:
        return self._join(
            [
                "<|im_start|>user\n",
                self.audio(codes),
                question,
                "<|im_end|>\n",
                "<|im_start|>assistant\n",
                THINK_ON if thinking else THINK_OFF,
            ]
        )

    def _user_turn(self, msg: Message, system_prompt: str | None = None) -> list[torch.Tensor | str]:
        parts: list[torch.Tensor | str] = ["<|im_start|>user\n"]
        if system_prompt:
            parts += [system_prompt, "\n\n"]
        if msg.audio is not None:
            parts.append(self.audio(msg.audio))
        if msg.text:
            parts.append(msg.text)
        if msg.audio is None and not msg.text:
            raise MimoAudioError("a user message needs text or audio")
        parts.append("<|im_end|>\n")
        return parts

    def dialogue(
        self,
        messages: Sequence[Message],
        *,
        speech_output: bool,
        thinking: bool = False,
        system_prompt: str | None = None,
        prompt_speech: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Spoken (speech output) or text-output dialogue over a list of turns ending with a user turn.

        Speech output: optional voice-prompt system block; the system prompt goes inside the user turn
        at index 0 only; assistant turns are streams of their text and audio; ends with ``<|sostm|>``.
        Text output (speech→text / text dialogue): assistant turns are plain text; ends with the think block.
        """
        if not messages:
            raise MimoAudioError("a dialogue needs at least one message")
        if messages[-1].role != "user":
            raise MimoAudioError("the last message of a dialogue must come from the user")
        parts: list[torch.Tensor | str] = []
        if speech_output and prompt_speech is not None:
            parts += ["<|im_start|>system\n", VOICE_PROMPT_SYSTEM, self.audio(prompt_speech), "<|im_end|>\n"]
        for i, msg in enumerate(messages):
            if msg.role == "user":
                parts += self._user_turn(msg, system_prompt if (speech_output and i == 0) else None)
            elif msg.role == "assistant":
                if speech_output:
                    parts += [
                        "<|im_start|>assistant\n",
                        self.stream(msg.text or "", msg.audio),
                        "<|im_end|>\n",
                    ]
                else:
                    parts += ["<|im_start|>assistant\n", msg.text or "", "<|im_end|>\n"]
            else:
                raise MimoAudioError(f"unknown message role {msg.role!r} (use 'user' or 'assistant')")
        parts += (
            ["<|im_start|>assistant\n<|sostm|>"]
            if speech_output
            else ["<|im_start|>assistant\n", THINK_ON if thinking else THINK_OFF]
        )
        return self._join(parts)

    def spoken_dialogue_followup(self, codes: torch.Tensor) -> torch.Tensor:
        """The turn appended to a stored history in spoken dialogue (no voice or system prompt)."""
        return self._join(
            ["<|im_start|>user\n", self.audio(codes), "<|im_end|>\n", "<|im_start|>assistant\n<|sostm|>"]
        )

    def in_context_s2s(
        self, instruction: str, examples: Sequence[Example], codes: torch.Tensor
    ) -> torch.Tensor:
        """Few-shot speech-to-speech (Base model)."""
        parts: list[torch.Tensor | str] = [f"[Int]:{instruction}\n"]
        for ex in examples:
            parts += [
                self.audio(ex.input_audio),
                "\n",
                self.stream(ex.output_transcription or "", ex.output_audio),
                " \n\n",
            ]
        parts += [self.audio(codes), "\n", "<|sostm|>"]
        return self._join(parts)

    def continuation(self, codes: torch.Tensor) -> torch.Tensor:
        """Speech continuation (Base): ``<|sosp|>`` followed by the speech patches, left open.

        The reference ships no builder for this task; this layout is our assumption (SPEC §9.3).
        """
        return torch.cat([self._text_patches([self.ids["<|sosp|>"]]), self._speech_patches(codes)], dim=1)


TASKS = (
    "asr",
    "tts",
    "audio_understanding",
    "spoken_dialogue",
    "s2t_dialogue",
    "text_dialogue",
    "in_context_s2s",
    "continuation",
)


def parse_messages(messages: Sequence[Any], to_codes: Callable[[Any], torch.Tensor]) -> list[Message]:
    """Normalise chat messages ``{"role": ..., "content": ...}`` into :class:`Message` objects.

    Content is a ``str`` (text), a dict with ``"text"`` and/or ``"audio"``, or anything else, taken as
    audio (a path-like, waveform, or codes). ``to_codes(audio)`` turns audio into LM codes ``[N, C]``.
    """
    out = []
    for i, m in enumerate(messages):
        if isinstance(m, Message):
            out.append(m)
            continue
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise MimoAudioError(f"message {i} must be a dict with 'role' and 'content'")
        content = m["content"]
        if isinstance(content, str):
            out.append(Message(m["role"], text=content))
        elif isinstance(content, dict):
            unknown = set(content) - {"text", "audio"}
            if unknown:
                raise MimoAudioError(f"message {i}: unknown content fields {sorted(unknown)}")
            audio = content.get("audio")
            out.append(
                Message(m["role"], text=content.get("text"), audio=None if audio is None else to_codes(audio))
            )
        else:
            out.append(Message(m["role"], audio=to_codes(content)))
    return out
