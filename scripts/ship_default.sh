#!/usr/bin/env bash
# Install a measured release as the package's default model pair (docs/DEFAULT_MODEL.md §4, §8):
# copies RELEASE/{model,tokenizer} into src/mimo_audio/default_model/ (or MIMO_SHIP_DIR), after
# checking the 150 MB budget and that both folders load, and stores the eval summary next to them.
#
#   bash scripts/ship_default.sh RELEASE SUMMARY.json
#     RELEASE       folder with model/ and tokenizer/ (scripts/train_default.sh prints it)
#     SUMMARY.json  the line scripts/eval_default.sh printed for this release → quality.json
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${MIMO_AUDIO_PYTHON:-$ROOT/.venv/bin/python}
RELEASE=${1:?usage: ship_default.sh RELEASE SUMMARY.json}
SUMMARY=${2:?usage: ship_default.sh RELEASE SUMMARY.json}
DEST=${MIMO_SHIP_DIR:-$ROOT/src/mimo_audio/default_model}
[[ -f $RELEASE/model/config.json && -f $RELEASE/tokenizer/config.json ]] \
    || { echo "ship_default.sh: $RELEASE lacks model/ and tokenizer/" >&2; exit 2; }
"$PY" -c 'import json, sys; json.load(open(sys.argv[1]))' "$SUMMARY" \
    || { echo "ship_default.sh: $SUMMARY is not JSON" >&2; exit 2; }
size_mb=$(du -smL "$RELEASE/model" "$RELEASE/tokenizer" | awk '{s += $1} END {print s}')
((size_mb <= 150)) || { echo "ship_default.sh: $RELEASE is $size_mb MB, over the 150 MB budget" >&2; exit 2; }
"$PY" -c 'import sys
from mimo_audio import MimoAudio
MimoAudio.from_pretrained(sys.argv[1] + "/model", sys.argv[1] + "/tokenizer", device="cpu")' "$RELEASE"
mkdir -p "$DEST"
tmp=$(mktemp -d "$DEST/.ship-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cp -r "$RELEASE/model" "$tmp/model"
cp -r "$RELEASE/tokenizer" "$tmp/tokenizer"
cp "$SUMMARY" "$tmp/quality.json"
for part in model tokenizer quality.json; do
    rm -rf "$DEST/$part"
    mv "$tmp/$part" "$DEST/$part"
done
echo "shipped $RELEASE ($size_mb MB) into $DEST" >&2
