#!/usr/bin/env bash
# Probe the default tokenizer during training (docs/DEFAULT_MODEL.md §7): export a training checkpoint
# (a run folder, a checkpoint or a packed state folder) and run `eval tokenizer` (8 codebooks) on
# the first clean held-out clips per language of the corpus (`eval manifest synth --suite tokenizer`:
# held-out speakers and sentences, neutral style, no noise or reverberation). Prints the aggregate.
#
#   bash scripts/probe_default.sh CKPT [CORPUS] [OUT]
#     CORPUS  default ${MIMO_DEFAULT_RUN:-~/.cache/mimo-audio/default-run}/corpus
#     OUT     default $(dirname CORPUS)/probe/step-<checkpoint step>
#   MIMO_PROBE_CLIPS  clips per language (default 12)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${MIMO_AUDIO_BIN:-$ROOT/.venv/bin/mimo-audio}
PY=${MIMO_AUDIO_PYTHON:-$ROOT/.venv/bin/python}
CKPT=${1:?usage: probe_default.sh CKPT [CORPUS] [OUT]}
RUN=${MIMO_DEFAULT_RUN:-$HOME/.cache/mimo-audio/default-run}
CORPUS=${2:-$RUN/corpus}
STEP=$("$PY" -c 'import sys
from mimo_audio.train.checkpointing import read_meta, resolve_checkpoint
print(read_meta(resolve_checkpoint(sys.argv[1]))["step"])' "$CKPT")
OUT=${3:-$(dirname "$CORPUS")/probe/step-$STEP}
mkdir -p "$OUT"
"$BIN" eval manifest synth "$CORPUS" --suite tokenizer --count "${MIMO_PROBE_CLIPS:-12}" \
    --out "$OUT/tokenizer.jsonl" 2>/dev/null
"$BIN" export "$CKPT" --out "$OUT/tokenizer" --dtype float32 --overwrite >/dev/null
"$BIN" eval tokenizer --data "$OUT/tokenizer.jsonl" --tokenizer "$OUT/tokenizer" --out "$OUT/eval" --quiet >/dev/null
"$PY" -c 'import json, sys
r = json.load(open(sys.argv[1]))
print(json.dumps({"step": int(sys.argv[2]), **r["aggregate"], "per_language": r["per_category"]}))' \
    "$OUT/eval/results.json" "$STEP"
