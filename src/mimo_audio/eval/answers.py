"""Multiple-choice answer extraction from free-form model output.

:func:`extract_choice` maps a model's text to a choice index, or None when it names no choice.
The rule, in order (the first step that finds something decides):

1. Only the text after the last ``</think>`` counts (reasoning is not an answer).
2. **Answer statements** — ``answer is B``, ``Answer: (b)``, ``the correct option is c.``,
   ``choice D`` (optional brackets; a lower-case letter must be bracketed or followed by
   punctuation or the end, so ``the answer is a cat`` is not read as A): the **last** such statement
   wins, so a model that corrects itself ("… answer is B. Wait, the answer is C") is read as C.
3. **A bare letter** — the whole output is one valid letter, optionally bracketed or followed by
   ``.``/``)``/``:`` (``B``, ``(b)``, ``B.``).
4. **Letter marks** — capital letters written as options: ``(B)``, ``[B]``, ``B)``, or ``B.``/``B:``
   at the start of a line. Plain capitals in prose are ignored (``A`` is an article). The last
   mark wins.
5. **Choice text** — a choice's own text (case, punctuation and spacing ignored) appears in the
   output. A choice contained in a longer matching choice (``dog`` in ``hot dog``) does not count;
   of the rest the one mentioned last wins.

Letters run ``A, B, C, ...`` over the choices; letters past the last choice never match.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..errors import MimoAudioError

_STATEMENT = re.compile(
    r"\b(?:answer|option|choice)s?\b(?:\s+(?:is|would\s+be|should\s+be|:))?\s*[:\-=]?\s*"
    r"(?P<open>[(\[])?(?P<letter>[a-z])\b(?P<close>[)\].:,;!?]|\s*$)?",
    re.IGNORECASE,
)
_MARK = re.compile(r"[(\[]([A-Z])[)\]]|\b([A-Z])\)|(?m:^\s*([A-Z])[.:](?=\s|$))")
_BARE = re.compile(r"^\s*[(\[]?([a-zA-Z])[)\].:]?\s*$")


def letters(n: int) -> str:
    """The option letters of ``n`` choices (``ABCD`` for 4)."""
    if not 1 <= n <= 26:
        raise MimoAudioError(f"a question needs 1..26 choices, got {n}")
    return "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:n]


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w]+", " ", text.casefold()).split())


def _statement_letters(text: str) -> list[str]:
    """Letters of answer statements; a lower-case bare letter must be bracketed or end the phrase
    (``the answer is a cat`` names no letter, ``the answer is a.`` names A)."""
    return [
        m["letter"]
        for m in _STATEMENT.finditer(text)
        if m["letter"].isupper() or m["open"] or m["close"] is not None
    ]


def _by_letter(found: Sequence[str], valid: str) -> int | None:
    picks = [valid.index(ch.upper()) for ch in found if ch and ch.upper() in valid]
    return picks[-1] if picks else None


def _by_text(output: str, choices: Sequence[str]) -> int | None:
    text = f" {_norm(output)} "
    normed = [_norm(c) for c in choices]
    hits = {i: text.rfind(f" {c} ") for i, c in enumerate(normed) if c and f" {c} " in text}
    # a choice inside a longer matching choice ("dog" in "hot dog") is not a mention of its own
    hits = {i: pos for i, pos in hits.items() if not any(j != i and normed[i] in normed[j] for j in hits)}
    return max(hits, key=lambda i: hits[i]) if hits else None


def extract_choice(output: str, choices: Sequence[str]) -> int | None:
    """Index of the choice named by ``output`` (0-based), or None (see the module docstring)."""
    valid = letters(len(choices))
    text = output.rsplit("</think>", 1)[-1]
    for step in (
        lambda: _by_letter(_statement_letters(text), valid),
        lambda: _by_letter([m.group(1) for m in [_BARE.match(text)] if m], valid),
        lambda: _by_letter([next(g for g in m.groups() if g) for m in _MARK.finditer(text)], valid),
        lambda: _by_text(text, choices),
    ):
        pick = step()
        if pick is not None:
            return pick
    return None


def answer_index(answer: object, choices: Sequence[str]) -> int:
    """The manifest's key → choice index: a letter (``"B"``), a 0-based int, or the choice text."""
    valid = letters(len(choices))
    if isinstance(answer, bool):
        raise ValueError(f"answer {answer!r} is not a letter, index or choice")
    if isinstance(answer, int):
        if 0 <= answer < len(choices):
            return answer
        raise ValueError(f"answer index {answer} out of range for {len(choices)} choices")
    if isinstance(answer, str):
        key = answer.strip()
        if len(key) == 1 and key.upper() in valid:
            return valid.index(key.upper())
        normed = [_norm(c) for c in choices]
        if _norm(key) in normed:
            return normed.index(_norm(key))
    raise ValueError(f"answer {answer!r} is not one of the letters {valid} or a choice's text")


def format_question(question: str, choices: Sequence[str]) -> str:
    """The prompt the default answerer sends: the question, lettered choices, and the reply format."""
    lines = [question.strip(), ""]
    lines += [f"({letter}) {choice}" for letter, choice in zip(letters(len(choices)), choices, strict=False)]
    lines += ["", "Answer with the letter of the correct choice."]
    return "\n".join(lines)
