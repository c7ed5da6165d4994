#!/usr/bin/env bash
# The default model's judged evaluation (issue #8 bars; docs/DEFAULT_MODEL.md §8) on the held-out split
# of its synthetic corpus (held-out voices and sentences), with the eval harness:
#   tokenizer  STOI / PESQ of the 8-codebook round trip       (bar STOI ≥ 0.85)
#   asr        CER per language, plain clips                    (bar ≤ 5 % en and zh)
#   tts        DTW-MFCC identification among the 20 sentences' espeak-ng renderings (bar ≥ 90 %),
#              and the CER of our own ASR on our TTS output
#   vc         few-shot voice conversion: resemblyzer closer to the target than to the source (≥ 80 %)
# ASR and TTS also report by_kind: the CER of the translation phrases and of the template sentences
# per language ("en/phrase", "zh/sentence", …), each with its n.
# Writes OUT/<suite>/{results.json,report.md} and prints one JSON line with the headline numbers.
#
#   bash scripts/eval_default.sh [RELEASE] [CORPUS] [OUT]
#     RELEASE  folder with model/ and tokenizer/ (default: the installed default model)
#     CORPUS   default ${MIMO_DEFAULT_RUN:-~/.cache/mimo-audio/default-run}/corpus
#     OUT      default $(dirname CORPUS)/eval
#   MIMO_EVAL_COUNTS  "tokenizer asr tts vc" counts (default "12 50 20 50"; CI's short form uses fewer)
#   MIMO_EVAL_SUITES  suites to run (default "tokenizer asr tts vc")
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${MIMO_AUDIO_BIN:-$ROOT/.venv/bin/mimo-audio}
PY=${MIMO_AUDIO_PYTHON:-$ROOT/.venv/bin/python}
RUN=${MIMO_DEFAULT_RUN:-$HOME/.cache/mimo-audio/default-run}
RELEASE=${1:-}
CORPUS=${2:-$RUN/corpus}
OUT=${3:-$(dirname "$CORPUS")/eval}
read -r N_TOK N_ASR N_TTS N_VC <<<"${MIMO_EVAL_COUNTS:-12 50 20 50}"
SUITES=${MIMO_EVAL_SUITES:-tokenizer asr tts vc}
pair=()
if [[ -n $RELEASE ]]; then
    [[ -d $RELEASE/model && -d $RELEASE/tokenizer ]] || { echo "eval_default.sh: $RELEASE lacks model/ and tokenizer/" >&2; exit 2; }
    pair=(--model "$RELEASE/model" --tokenizer "$RELEASE/tokenizer")
else
    RELEASE=$("$PY" -c 'from mimo_audio.defaults import resolve_model_pair; print(resolve_model_pair(None, None)[1].parent)')
    pair=(--model "$RELEASE/model" --tokenizer "$RELEASE/tokenizer")
fi
mkdir -p "$OUT"
declare -A COUNT=([tokenizer]=$N_TOK [asr]=$N_ASR [tts]=$N_TTS [vc]=$N_VC)
for suite in $SUITES; do
    "$BIN" eval manifest synth "$CORPUS" --suite "$suite" --count "${COUNT[$suite]}" --out "$OUT/$suite.jsonl" 2>/dev/null
    args=()
    case $suite in
        tokenizer) args=(--tokenizer "$RELEASE/tokenizer") ;;
        asr) args=("${pair[@]}") ;;
        tts) args=("${pair[@]}" --seed 0 --dtw-distractors "$((N_TTS - 1))") ;;
        vc) args=("${pair[@]}" --seed 0) ;;
    esac
    "$BIN" eval "$suite" --data "$OUT/$suite.jsonl" --out "$OUT/$suite" --quiet "${args[@]}" >/dev/null
done
"$PY" - "$OUT" $SUITES <<'PY'
import json, sys
from pathlib import Path

from mimo_audio.data.synth_text import PHRASES

phrases = {t for pair in PHRASES for t in pair}


def by_kind(items):
    """CER per language and kind: the translation phrases (held-out ones in the test split) against
    the template sentences, each with its n (every item counted once)."""
    groups = {}
    for r in items:
        if r.get("char_errors") is None or "text" not in r:
            continue
        kind = "phrase" if r["text"] in phrases else "sentence"
        g = groups.setdefault(f"{r['language']}/{kind}", [0, 0, 0])
        g[0], g[1], g[2] = g[0] + r["char_errors"], g[1] + r["char_len"], g[2] + 1
    return {k: {"char_error_rate": e / max(n, 1), "n": c} for k, (e, n, c) in sorted(groups.items())}


out, suites = Path(sys.argv[1]), sys.argv[2:]
keys = {
    "tokenizer": ("stoi", "pesq_wb", "pesq_nb", "speaker_similarity"),
    "asr": ("char_error_rate", "error_rate", "cer", "wer"),
    "tts": ("dtw_identification", "char_error_rate", "error_rate"),
    "vc": ("closer_to_target", "char_error_rate", "similarity_to_target", "similarity_to_source"),
}
summary = {}
for suite in suites:
    r = json.loads((out / suite / "results.json").read_text(encoding="utf-8"))
    agg = r["aggregate"]
    row = {k: agg[k] for k in keys[suite] if k in agg}
    row["n"] = r["counts"]["items"]
    row["per_language"] = {c: {k: v[k] for k in keys[suite] if k in v} for c, v in r["per_category"].items()}
    if suite in ("asr", "tts"):
        row["by_kind"] = by_kind(r["items"])
    summary[suite] = row
print(json.dumps(summary, ensure_ascii=False))
PY
