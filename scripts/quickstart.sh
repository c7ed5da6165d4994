#!/usr/bin/env bash
# Set up .venv and run the main job on the default model pair: text → speech (out/hello.wav) → text.
# MIMO_AUDIO_MODEL / MIMO_AUDIO_TOKENIZER (e.g. the official MiMo-Audio-7B-Instruct and
# MiMo-Audio-Tokenizer folders) replace the default pair. The sentence keeps to the default model's
# vocabulary (the synthetic corpus's word lists). An installation without the default pair (e.g. a
# wheel built without package data) falls back to the tiny random-weight parity checkpoints of
# ../shared/fixtures/parity: the pipeline runs end to end, the speech is noise.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cap_tts=() cap_asr=()
if [[ -z ${MIMO_AUDIO_MODEL:-} ]] && ! .venv/bin/python -c 'from mimo_audio.defaults import default_model_dirs as d; d()' 2>/dev/null; then
    fixtures="${MIMO_PARITY_FIXTURES:-../shared/fixtures/parity}"
    echo "quickstart: no default model is installed; using the random-weight checkpoints in $fixtures" >&2
    export MIMO_AUDIO_MODEL="$fixtures/model" MIMO_AUDIO_TOKENIZER="$fixtures/tokenizer"
    cap_tts=(--max-new-steps 40) cap_asr=(--max-new-steps 20) # random weights never stop on their own
fi
mkdir -p out
.venv/bin/mimo-audio tts "Please wash a red bicycle after lunch." --out out/hello.wav --seed 0 "${cap_tts[@]}"
.venv/bin/mimo-audio asr out/hello.wav --seed 0 "${cap_asr[@]}"
