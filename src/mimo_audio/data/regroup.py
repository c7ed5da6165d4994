"""New few-shot (in-context speech-to-speech) training records from the pairs of existing ones.

A synthetic corpus (:mod:`mimo_audio.data.synth`) renders each in-context group as three pairs
(input clip → output clip) that share what the task demonstrates: the target voice for ``vc``, the
speaker and target rate for ``speed``, the languages for ``translate``. Its records use each pair of
a group once as the query, so a model sees every target voice with only a few example sets. Any
pairs that share that *key* make a valid group, whatever group they were rendered in:

    key = (instruction, output speaker, output rate, input language, output language)

(for ``denoise`` the key is stricter than it need be, which only narrows the draws). :func:`regroup`
pools the pairs of a manifest by key and draws new records: ``examples`` pairs as the examples and
one more as the query, never a record the manifest already holds. No audio is rendered, and the
clips' codes are those the corpus's code store already holds, so ``mimo-audio data encode`` turns
the new manifest into shards without the audio tokenizer.

Clip facts (speaker, style, language) come from the corpus's ASR manifest of the same split, which
holds every clip of the split (:meth:`mimo_audio.data.synth._SplitPlanner.add`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..audio import atomic_write
from ..errors import MimoAudioError

ICL_KINDS = ("vc", "speed", "denoise", "translate")
Pair = tuple[str, str, str]  # input clip, output clip, output transcription


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSONL manifest; a clear error names the file and line of bad JSON."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise MimoAudioError(f"{path}:{n}: not JSON ({e.msg})") from None
    return out


def clip_facts(asr_records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{clip path: {"speaker", "rate", "lang"}}`` from synth ASR records (their ``meta``)."""
    facts = {}
    for r in asr_records:
        meta = r.get("meta") or {}
        if "audio" in r and "speaker" in meta:
            facts[r["audio"]] = {
                "speaker": meta["speaker"],
                "rate": (meta.get("style") or {}).get("rate"),
                "lang": meta.get("lang"),
            }
    return facts


def _pairs(record: dict[str, Any]) -> list[Pair]:
    """The (input, output, transcription) pairs of one in-context record, query last."""
    pairs = [
        (e["input_audio"], e["output_audio"], e.get("output_transcription", "")) for e in record["examples"]
    ]
    return [*pairs, (record["audio"], record["output_audio"], record.get("output_transcription", ""))]


def pool_pairs(
    records: Iterable[dict[str, Any]], facts: dict[str, dict[str, Any]]
) -> dict[tuple, list[Pair]]:
    """Distinct pairs of in-context records grouped by key (module docstring); each list is sorted,
    so the pools do not depend on the manifest's order."""
    pools: dict[tuple, dict[tuple[str, str], Pair]] = {}
    for r in records:
        if r.get("task") != "in_context_s2s" or "output_audio" not in r:
            continue
        for pair in _pairs(r):
            src, dst = facts.get(pair[0]), facts.get(pair[1])
            if src is None or dst is None:
                missing = pair[0] if src is None else pair[1]
                raise MimoAudioError(f"clip {missing} has no speaker facts (is it in the ASR manifest?)")
            key = (r.get("instruction", ""), dst["speaker"], dst["rate"], src["lang"], dst["lang"])
            pools.setdefault(key, {})[pair[:2]] = pair
    return {k: sorted(v.values()) for k, v in sorted(pools.items())}


def _signature(record: dict[str, Any]) -> tuple:
    return (record["audio"], tuple(sorted(e["input_audio"] for e in record["examples"])))


def regroup(
    records: list[dict[str, Any]],
    facts: dict[str, dict[str, Any]],
    count: int,
    *,
    examples: int = 2,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """``count`` new in-context records drawn from the pooled pairs of ``records``.

    A key is drawn in proportion to its pairs, then ``examples + 1`` distinct pairs of it (the
    last is the query). Records the manifest already holds, and repeats, are drawn again; fewer
    than ``count`` come back when the pools run out of new combinations. Deterministic in ``seed``.
    """
    if count < 0 or examples < 1:
        raise MimoAudioError(f"need count >= 0 and examples >= 1, got {count} and {examples}")
    pools = {k: v for k, v in pool_pairs(records, facts).items() if len(v) > examples}
    if not pools:
        raise MimoAudioError(f"no key has more than {examples} pairs: nothing to regroup")
    seen = {_signature(r) for r in records if r.get("task") == "in_context_s2s" and "examples" in r}
    keys = list(pools)
    weights = [len(pools[k]) for k in keys]
    rng = random.Random(f"regroup:{seed}")
    out: list[dict[str, Any]] = []
    misses = 0
    while len(out) < count and misses < 50 * max(count, 1):
        key = rng.choices(keys, weights)[0]
        *shown, query = rng.sample(pools[key], examples + 1)
        record = {
            "task": "in_context_s2s",
            "instruction": key[0],
            "examples": [
                {"input_audio": i, "output_audio": o, "output_transcription": t} for i, o, t in shown
            ],
            "audio": query[0],
            "output_audio": query[1],
            "output_transcription": query[2],
        }
        sig = _signature(record)
        if sig in seen:
            misses += 1
            continue
        seen.add(sig)
        out.append(record)
    return out


def regroup_corpus(
    corpus: str | Path,
    *,
    split: str = "train",
    kinds: Iterable[str] = ("vc",),
    count: int = 1000,
    examples: int = 2,
    seed: int = 0,
    name: str = "regrouped",
) -> tuple[Path, int]:
    """Regroup the ``{split}_{kind}.jsonl`` manifests of a synth corpus folder into
    ``{split}_{name}.jsonl`` in that folder (clip paths stay relative to it), ``count`` records per
    kind. Returns the manifest's path and its number of records."""
    corpus = Path(corpus)
    asr = corpus / f"{split}_asr.jsonl"
    if not asr.is_file():
        raise MimoAudioError(f"{corpus} is not a synth corpus folder: {asr.name} is missing")
    facts = clip_facts(read_jsonl(asr))
    made: list[dict[str, Any]] = []
    for kind in kinds:
        if kind not in ICL_KINDS:
            raise MimoAudioError(f"unknown kind {kind!r}; choose from {', '.join(ICL_KINDS)}")
        src = corpus / f"{split}_{kind}.jsonl"
        if not src.is_file():
            raise MimoAudioError(f"{src} is missing")
        made += regroup(read_jsonl(src), facts, count, examples=examples, seed=seed)
    dest = corpus / f"{split}_{name}.jsonl"
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in made)
    atomic_write(dest, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return dest, len(made)
