#!/usr/bin/env bash
# Set up .venv and run the main job: text → speech → text with the default model pair.
# Until a default model ships, the default pair is the tiny parity checkpoints from ../shared
# (random weights: the pipeline runs end to end, the speech is noise). Point MIMO_AUDIO_MODEL and
# MIMO_AUDIO_TOKENIZER at the official folders for real output.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
fixtures="${MIMO_PARITY_FIXTURES:-../shared/fixtures/parity}"
export MIMO_AUDIO_MODEL="${MIMO_AUDIO_MODEL:-$fixtures/model}"
export MIMO_AUDIO_TOKENIZER="${MIMO_AUDIO_TOKENIZER:-$fixtures/tokenizer}"
mkdir -p out
.venv/bin/mimo-audio tts "Hello from MiMo Audio." --out out/hello.wav --max-new-steps 40 --seed 0
.venv/bin/mimo-audio asr out/hello.wav --max-new-steps 20 --seed 0
