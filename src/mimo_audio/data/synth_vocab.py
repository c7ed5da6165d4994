"""The default model's text tokenizer: a small byte-level BPE ``tokenizer.json`` (``tokenizers``
library) over the synthetic corpus text and every prompt string, holding all MiMo-Audio special
tokens (SPEC §9.1) as added special tokens at ids 0–10, in the order of the parity fixture.

Byte-level BPE never meets an unknown character: Han characters outside the corpus fall back to
their UTF-8 bytes. Each Han character (and CJK punctuation mark) is its own pre-token, so Mandarin
text tokenises to at most one token per character, like English words map to whole-word tokens:
a small model aligns text to speech more easily than with multi-character merges.
``tokenizer_config.json`` and ``special_tokens_map.json`` follow the official LM folder (eos and
pad ``<|endoftext|>``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from ..audio import atomic_write
from ..errors import MimoAudioError
from ..prompts import (
    ASR_TEMPLATES,
    DEFAULT_SYSTEM_PROMPT,
    INSTRUCT_TTS_SYSTEM,
    INSTRUCT_TTS_VOICE_SYSTEM,
    THINK_OFF,
    TTS_TEMPLATES,
    VOICE_PROMPT_SYSTEM,
)
from ..text_tokenizer import CHAT_SPECIALS, SPEECH_SPECIALS
from . import synth_text as st

EOS = "<|endoftext|>"
SPECIALS = (EOS, "<|im_start|>", "<|im_end|>", *SPEECH_SPECIALS)
CJK_CHAR = "[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]"  # one pre-token per Han character / CJK mark
CHAT_WORDS = ("user\n", "assistant\n", "system\n", "[Int]:", " \n\n", ": ", "(", ")")
_STYLE_CHOICES = {
    "rate": ("slow", "normal", "fast"),
    "pitch": ("low", "normal", "high"),
    "volume": ("quiet", "normal", "loud"),
    "whisper": ("yes", "no"),
}


def corpus_texts(seed: int = 0, corpus: str | Path | None = None, sentences: int = 4000) -> list[str]:
    """Training text: generated sentences (both languages), phrases, instructions, prompt strings,
    and the ``text`` / ``instruction`` / ``output_transcription`` fields of a corpus's manifests."""
    from .synth import ICL_INSTRUCTIONS

    pools = st.sentence_pools(st.LANGUAGES, sentences, sentences // 10, seed)
    texts = [s for split in pools.values() for lang in split.values() for s in lang]
    texts += [t for pair in st.PHRASES for t in pair]
    rng = random.Random(f"{seed}:vocab")
    for _ in range(500):
        style = {k: rng.choice(v) for k, v in _STYLE_CHOICES.items()}
        texts.append(st.instruction(style, rng.choice(("F", "M", None)), rng.choice(st.LANGUAGES)))
    texts += list(ASR_TEMPLATES) + [t for group in TTS_TEMPLATES.values() for t in group]
    texts += [INSTRUCT_TTS_SYSTEM, INSTRUCT_TTS_VOICE_SYSTEM, VOICE_PROMPT_SYSTEM, DEFAULT_SYSTEM_PROMPT]
    texts += [THINK_OFF, *CHAT_WORDS, *ICL_INSTRUCTIONS.values()]
    if corpus is not None:
        folder = Path(corpus)
        manifests = sorted(folder.glob("train_*.jsonl"))
        if not manifests:
            raise MimoAudioError(
                f"--corpus {folder}: no train_*.jsonl manifests (run `mimo-audio data synth`)"
            )
        seen = set(texts)
        for path in manifests:
            for line in path.read_text(encoding="utf-8").splitlines():
                rec = json.loads(line)
                for key in ("text", "instruction", "output_transcription"):
                    value = rec.get(key)
                    if isinstance(value, str) and value not in seen:
                        seen.add(value)
                        texts.append(value)
    return texts


def train_bpe(texts: list[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE of at most ``vocab_size`` entries (specials included) trained on ``texts``."""
    if vocab_size < len(SPECIALS) + 256 + 1:
        raise MimoAudioError(f"--vocab-size must be > {len(SPECIALS) + 256}, got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CJK_CHAR), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def _token_entry(content: str) -> dict:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}


def build_text_tokenizer(texts: list[str], out_dir: str | Path, vocab_size: int = 2048) -> Path:
    """Train :func:`train_bpe` and write ``tokenizer.json`` + ``tokenizer_config.json`` +
    ``special_tokens_map.json`` (atomically) into ``out_dir``; returns the folder."""
    tok = train_bpe(texts, vocab_size)
    missing = [t for t in SPEECH_SPECIALS + CHAT_SPECIALS if tok.token_to_id(t) is None]
    if missing:  # BpeTrainer always adds them; a tokenizers upgrade that did not would be caught here
        raise MimoAudioError(f"BPE training lost the special tokens {missing}")
    out = Path(out_dir)
    extra = [t for t in SPECIALS if t != EOS]
    config = {
        "added_tokens_decoder": {
            str(tok.token_to_id(t)): {**_token_entry(t), "special": True} for t in SPECIALS
        },
        "additional_special_tokens": extra,
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS,
        "extra_special_tokens": {},
        "model_max_length": 8192,
        "pad_token": EOS,
        "tokenizer_class": "PreTrainedTokenizer",
        "unk_token": None,
    }
    specials_map = {
        "additional_special_tokens": [_token_entry(t) for t in extra],
        "eos_token": EOS,
        "pad_token": EOS,
    }
    text = tok.to_str(pretty=True)
    atomic_write(out / "tokenizer.json", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    for name, data in (("tokenizer_config.json", config), ("special_tokens_map.json", specials_map)):
        body = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        atomic_write(out / name, lambda tmp, body=body: Path(tmp).write_text(body, encoding="utf-8"))
    return out
