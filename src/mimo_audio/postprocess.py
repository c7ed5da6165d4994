"""Turning generated LM ids into text and audio codes (SPEC §8.4), offline and incrementally."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .text_tokenizer import TextTokenizer

REMOVED_FROM_TEXT = ("<|empty|>", "<|eot|>", "<|eostm|>")


def clean_text(text: str) -> str:
    """``strip()`` then drop the stream markers, as the reference does."""
    text = text.strip()
    for marker in REMOVED_FROM_TEXT:
        text = text.replace(marker, "")
    return text


@dataclass(frozen=True)
class SpecialIds:
    """Ids the post-processing needs, resolved from the text tokenizer by string."""

    empty: int
    sostm: int
    eostm: int

    @classmethod
    def from_tokenizer(cls, tok: TextTokenizer) -> SpecialIds:
        return cls(tok.id("<|empty|>"), tok.id("<|sostm|>"), tok.id("<|eostm|>"))


def split_generation(
    generated: torch.Tensor, tok: TextTokenizer, empty_ids: Sequence[int], group_size: int
) -> tuple[str, torch.Tensor]:
    """Text and audio codes of a generation.

    Args:
        generated: the generated columns only, ``[1 + C, G·n]`` int64 (prompt removed).
        tok: the text tokenizer.
        empty_ids: per-codebook empty ids ``[C]``.
        group_size: frames per patch ``G``.

    Returns:
        ``(text, codes)`` with ``codes`` ``[C, N]`` int64 (``N`` may be 0). The last generated patch
        is dropped from both (the reference's truncation: the stop token, or the last step on length).
    """
    ids = SpecialIds.from_tokenizer(tok)
    text_ids = generated[0, ::group_size].tolist()[:-1]
    text = clean_text(tok.decode(text_ids))
    start = text_ids.index(ids.sostm) * group_size + group_size if ids.sostm in text_ids else 0
    end = text_ids.index(ids.eostm) * group_size if ids.eostm in text_ids else group_size * len(text_ids)
    speech = generated[1:, start:end]
    keep = speech[0] != empty_ids[0]
    codes = speech[:, keep]
    limit = torch.as_tensor(list(empty_ids), dtype=codes.dtype)[:, None]
    if codes.numel() and bool((codes >= limit).any()):
        # An empty id inside a speech frame: the reference asserts; we drop such frames instead.
        codes = codes[:, (codes < limit).all(0)]
    return text, codes


@dataclass
class IncrementalSplitter:
    """Streams :func:`split_generation`: feed patches as they are generated, get text and codes.

    Each patch is held back by one step, because the reference drops the final generated patch;
    the text piece emitted is the difference of successive clean decodes (so multi-byte characters
    are never split).
    """

    tok: TextTokenizer
    empty_ids: Sequence[int]
    ids: SpecialIds = field(init=False)
    _pending: tuple[int, torch.Tensor | None] | None = field(default=None, init=False)
    _text_ids: list[int] = field(default_factory=list, init=False)
    _text: str = field(default="", init=False)
    _in_speech: bool = field(default=True, init=False)
    _ended: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.ids = SpecialIds.from_tokenizer(self.tok)
        self._limit = torch.as_tensor(list(self.empty_ids), dtype=torch.long)[:, None]

    def push(self, text_id: int, speech: torch.Tensor | None) -> tuple[str, torch.Tensor | None]:
        """Add one generated patch (``speech`` ``[G, C]`` or None); returns (new text, codes ``[C, n]`` or None)."""
        out = self._release()
        self._pending = (text_id, speech)
        return out

    def _release(self) -> tuple[str, torch.Tensor | None]:
        if self._pending is None:
            return "", None
        text_id, speech = self._pending
        self._pending = None
        self._text_ids.append(text_id)
        full = clean_text(self.tok.decode(self._text_ids))
        piece = full[len(self._text) :] if full.startswith(self._text) else ""
        if full.startswith(self._text) and not full.endswith("\ufffd"):
            self._text = full
        else:
            piece = ""
        codes = None
        if text_id == self.ids.sostm and not self._ended:
            self._in_speech = True
        elif text_id == self.ids.eostm:
            self._ended = True
        elif speech is not None and self._in_speech and not self._ended:
            frames = speech.T.long()  # [C, G]
            keep = (frames[0] != self.empty_ids[0]) & (frames < self._limit).all(0)
            codes = frames[:, keep] if bool(keep.any()) else None
        return piece, codes

    def finish(self) -> str:
        """Text not yet emitted (the held-back final patch is dropped, as offline)."""
        self._pending = None
        full = clean_text(self.tok.decode(self._text_ids))
        piece = full[len(self._text) :] if full.startswith(self._text) else ""
        self._text = full
        return piece
