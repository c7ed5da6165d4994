"""The LM's text tokenizer (``tokenizer.json`` of the MiMo-Audio LM folder) via the ``tokenizers`` library.

Special tokens are resolved by string, never by hard-coded id; the MiMo-Audio specials are added
as special tokens when a tokenizer lacks them (as the reference does).
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer

from .errors import CheckpointError

SPEECH_SPECIALS = (
    "<|sosp|>",
    "<|eosp|>",
    "<|empty|>",
    "<|Human|>",
    "<|SpeechLM|>",
    "<|sostm|>",
    "<|eostm|>",
    "<|eot|>",
)
CHAT_SPECIALS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")


class TextTokenizer:
    """Encode/decode text; ``tok.id("<|empty|>")`` gives a special token's id."""

    def __init__(self, tokenizer: Tokenizer, eos_token: str = "<|endoftext|>") -> None:
        self._tok = tokenizer
        missing = [t for t in SPEECH_SPECIALS + CHAT_SPECIALS if tokenizer.token_to_id(t) is None]
        if missing:
            tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
        self.eos_token = eos_token
        self.eos_id = self.id(eos_token)

    @classmethod
    def from_dir(cls, folder: str | Path) -> TextTokenizer:
        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise CheckpointError(f"{path} is missing: the LM folder must hold the text tokenizer")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # the tokenizers library raises plain Exceptions
            raise CheckpointError(f"{path} cannot be read: {str(e).splitlines()[0]}") from None
        eos = "<|endoftext|>"
        cfg_path = folder / "tokenizer_config.json"
        if cfg_path.is_file():
            try:
                value = json.loads(cfg_path.read_text(encoding="utf-8")).get("eos_token", eos)
                eos = value.get("content", eos) if isinstance(value, dict) else (value or eos)
            except json.JSONDecodeError:
                pass
        return cls(tok, eos_token=eos)

    def id(self, token: str) -> int:
        """Id of a (special) token given by its string."""
        idx = self._tok.token_to_id(token)
        if idx is None:
            raise CheckpointError(f"the text tokenizer has no token {token!r}")
        return idx

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` alone: no BOS/EOS; special-token strings map to their single ids."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[int]]:
        """:meth:`encode` plus, per token, the offset in ``text`` of its first non-space character
        (``len(text)`` for a token that is all whitespace at the end)."""
        enc = self._tok.encode(text, add_special_tokens=False)
        starts = []
        for start, end in enc.offsets:
            while start < end and text[start].isspace():
                start += 1
            starts.append(start)
        return enc.ids, starts

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token(self, idx: int) -> str | None:
        return self._tok.id_to_token(idx)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)
