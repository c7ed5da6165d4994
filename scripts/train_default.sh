#!/usr/bin/env bash
# Train the default model pair end to end on CPU, resumably (docs/DEFAULT_MODEL.md):
#   synth → tokenizer stage 1 → export → encode → [tokenizer stage 2 → export] → LM → export
#   → synth2 → encode2 → LM stage 2 → export → synth3 → encode3 → LM stage 3 → export
#   → synth4 → encode4 → LM stage 4 → export → LM stage 5 → export → LM stage 6 → export
#   → LM stage 7 → export → LM stage 8 → export → LM stage 9 → export → LM stages 11 and 12
#   → release (the mean of stages 11 and 12)
# Each step leaves a marker in $RUN/done/ and is skipped when its marker exists; an interrupted
# training step resumes from its latest checkpoint, so a later session continues where this one stopped.
# The run folder lives on one machine; training progress also goes to $STATE in the repository
# (packed checkpoints: float16 weights, no optimizer moments; `export --resumable`), so a fresh
# machine regenerates the corpus (deterministic) and continues each training step from there.
#
# Environment (all optional):
#   MIMO_DEFAULT_RUN      run folder (default ~/.cache/mimo-audio/default-run)
#   MIMO_DEFAULT_STATE    packed training state kept in git (default recipes/default/state of this
#                         checkout): <step>/ (the latest packed checkpoint) and done/<step> markers
#   MIMO_DEFAULT_HOURS    synthetic train audio in hours (default 20); MIMO_DEFAULT_UTTERANCES overrides it
#   MIMO_DEFAULT_SEED     corpus seed (default 0)
#   MIMO_DEFAULT_JOBS     synthesis processes (default 2)
#   MIMO_DEFAULT_STAGE2   0 (default) ships the stage-1 decoder (it met the STOI bar: 0.863 at step 750
#                         of 2 500); 1 also runs tokenizer stage 2 (GAN) before the LM
#   MIMO_DEFAULT_STOP_AFTER  seconds from the start of this script after which training stops: the step
#                         in progress is checkpointed (`train --time-limit`), the script exits 0 and a
#                         rerun continues exactly; SIGTERM does the same. Default: no limit
#   MIMO_DEFAULT_WORD_SEQUENCES  share of template-free training sentences in the second corpus (0.5)
#   MIMO_DEFAULT_WORD_SEQUENCES3 the same for the third corpus (0.75; it must differ from the second's,
#                         or the two corpora hold the same sentences)
#   MIMO_DEFAULT_WORD_SEQUENCES4, MIMO_DEFAULT_PHRASE_WORDS4  the fourth corpus's word sequences (0.7)
#                         and their share made of the translation phrases' words (0.5; `data synth
#                         --phrase-words`)
#   MIMO_DEFAULT_BF16     1 (default): LM steps train under bf16 autocast when this CPU has bf16
#                         instructions (AVX512-BF16 or AMX: 1.6x the patches/s of fp32); 0: as the recipe says
#   MIMO_DEFAULT_RELEASE_LM  the LM the release takes: a trained stage (lm, lm2, …, lm9, lm11, lm12) or
#                         several joined by "+", whose weights are averaged (default lm11+lm12)
#   MIMO_DEFAULT_TOK_SET, MIMO_DEFAULT_TOK2_SET, MIMO_DEFAULT_LM_SET, MIMO_DEFAULT_LM2_SET,
#   MIMO_DEFAULT_LM3_SET, MIMO_DEFAULT_LM4_SET, MIMO_DEFAULT_LM5_SET, MIMO_DEFAULT_LM6_SET,
#   MIMO_DEFAULT_LM7_SET, MIMO_DEFAULT_LM8_SET, MIMO_DEFAULT_LM9_SET, MIMO_DEFAULT_LM11_SET,
#   MIMO_DEFAULT_LM12_SET
#                         extra space-separated KEY=VALUE recipe overrides (e.g. "run.max_steps=100")
#   MIMO_AUDIO_BIN        the mimo-audio command (default: .venv/bin/mimo-audio of this checkout)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUN=${MIMO_DEFAULT_RUN:-$HOME/.cache/mimo-audio/default-run}
BIN=${MIMO_AUDIO_BIN:-$ROOT/.venv/bin/mimo-audio}
RECIPES=$ROOT/recipes
STATE=${MIMO_DEFAULT_STATE:-$ROOT/recipes/default/state}
STAGE2=${MIMO_DEFAULT_STAGE2:-0}
STOP_AFTER=${MIMO_DEFAULT_STOP_AFTER:-0}
DEADLINE=$(($(date +%s) + STOP_AFTER))
TRAIN_PID=
# SIGTERM/SIGINT: pass it to the trainer, which saves the step in progress and exits 75
trap '[[ -n $TRAIN_PID ]] && kill -TERM "$TRAIN_PID" 2>/dev/null' TERM INT
mkdir -p "$RUN/done" "$RUN/export" "$STATE/done"
log() { echo "[train_default $(date -u +%H:%M:%S)] $*" >&2; }
done_() { [[ -e "$RUN/done/$1" ]]; }
mark() { date -u +%FT%TZ >"$RUN/done/$1"; }
# a training step finished on any machine: its final packed checkpoint is in $STATE/<step>
trained() { [[ -e "$STATE/done/$1" && -e "$STATE/$1/trainer.json" ]]; }
# FEEDS: the LM stages that start from each corpus-4 stage's export
declare -A FEEDS=([lm5]=lm6 [lm6]=lm7 [lm7]=lm8 [lm8]=lm9 [lm9]="lm11 lm12")
# settled NAME: trained, or every stage it feeds is settled, so it need not be trained (its packed
# state is not kept in the repository: each stage's state is a 33 MB file in git)
settled() {
    trained "$1" || { [[ -n ${FEEDS[$1]:-} ]] && feeds_settled "$1"; }
}
# feeds_settled NAME: every stage NAME feeds is settled
feeds_settled() {
    local s
    for s in ${FEEDS[$1]:-}; do settled "$s" || return 1; done
}
# pack NAME OUT_DIR: the latest checkpoint of OUT_DIR → $STATE/NAME (atomic)
pack() {
    compgen -G "$2/checkpoints/step-*" >/dev/null || return 0
    "$BIN" export "$2" --out "$STATE/$1" --resumable --overwrite >/dev/null
    log "$1: packed $(du -sm "$STATE/$1" | cut -f1) MB of training state into $STATE/$1"
}

setargs() { # "a=1 b=2" → SETARGS=(--set a=1 --set b=2), no globbing
    local kvs=() kv
    SETARGS=()
    read -ra kvs <<<"$1"
    for kv in "${kvs[@]}"; do SETARGS+=(--set "$kv"); done
}

# train KIND NAME RECIPE OUT_DIR OVERRIDES...: run (or resume) one training step; 0 when finished
train() {
    local kind=$1 name=$2 recipe=$3 out=$4
    shift 4
    { done_ "$name" || trained "$name"; } && { log "$name: done"; return 0; }
    local resume=()
    if compgen -G "$out/checkpoints/step-*" >/dev/null; then
        resume=(--resume)
    elif [[ -e "$STATE/$name/trainer.json" ]]; then
        resume=(--resume "$STATE/$name") # another machine's progress
    fi
    log "$name: training into $out ${resume[*]}"
    local rc=0 limit=()
    if ((STOP_AFTER > 0)); then
        local left=$((DEADLINE - $(date +%s)))
        ((left > 0)) || { log "time limit reached; run this script again to continue"; exit 0; }
        limit=(--time-limit "$left")
    fi
    local precision=() # bf16 autocast where the CPU computes in bf16; ~17x slower where it does not (AVX2)
    if [[ $kind == lm && ${MIMO_DEFAULT_BF16:-1} == 1 ]] && grep -qw -e avx512_bf16 -e amx_bf16 /proc/cpuinfo; then
        precision=(--set distributed.mixed_precision=bf16)
    fi
    "$BIN" train "$kind" --config "$recipe" --set "run.out_dir=$out" "${precision[@]}" "$@" "${resume[@]}" "${limit[@]}" &
    TRAIN_PID=$!
    wait "$TRAIN_PID" || rc=$?
    if ((rc == 143 || rc == 130)); then # SIGTERM/SIGINT reached this script: wait for the checkpoint
        wait "$TRAIN_PID" || rc=$?
    fi
    TRAIN_PID=
    if ((rc == 75)); then
        pack "$name" "$out"
        log "$name: stopped early with a checkpoint; run this script again to continue"
        exit 0
    fi
    ((rc == 0)) || exit "$rc"
    pack "$name" "$out"
    date -u +%FT%TZ >"$STATE/done/$name"
    mark "$name"
}

# export NAME RUN_DIR OUT_DIR [PACKED [DTYPE]]: from the packed state when there is one (so every
# machine exports the same weights and the code store stays valid), else from the run folder
export_() {
    done_ "$1" && [[ -e $3/config.json ]] && { log "$1: done"; return 0; }
    local src=$2
    [[ -n ${4:-} && -e ${4:-}/trainer.json ]] && src=$4
    log "$1: exporting $src → $3"
    "$BIN" export "$src" --out "$3" --dtype "${5:-float32}" --overwrite >/dev/null
    mark "$1"
}

# synth NAME OUT LINK_FROM [ARGS...]: render a corpus (deterministic given its options); clips already
# in OUT are skipped, so a corpus that shares clips with an earlier corpus LINK_FROM (its held-out
# clips, at least) starts from hard links to them when that corpus is on disk
synth() {
    local name=$1 out=$2 from=$3
    shift 3
    done_ "$name" && return 0
    local size=(--hours "${MIMO_DEFAULT_HOURS:-20}")
    [[ -n ${MIMO_DEFAULT_UTTERANCES:-} ]] && size=(--utterances "$MIMO_DEFAULT_UTTERANCES")
    if [[ -n $from && $out != "$from" && -d $from/clips && ! -e $out/clips ]]; then
        mkdir -p "$out" && cp -al "$from/clips" "$out/clips"
    fi
    log "$name: ${size[*]} $* into $out"
    "$BIN" data synth --out "$out" "${size[@]}" --seed "${MIMO_DEFAULT_SEED:-0}" \
        --jobs "${MIMO_DEFAULT_JOBS:-2}" --quiet "$@" >/dev/null
    mark "$name"
}

# encode NAME CORPUS SHARDS [STORE]: LM code shards of the train and test LM manifests. The codes go to
# $STATE/STORE (default codes.npz, keyed by clip), so another machine rebuilds the shards without the
# encoder and a later corpus encodes only its new clips. A corpus with a STORE of its own reads the
# codes of $STATE/codes.npz too but adds its new codes to its own file only (git keeps each store
# file whole: one file per corpus keeps each commit of codes small).
encode() {
    local name=$1 corpus=$2 shards=$3 store=${4:-codes.npz} split limit rc
    done_ "$name" && return 0
    local stores=(--codes "$STATE/$store")
    [[ $store != codes.npz && -e $STATE/codes.npz ]] && stores+=(--codes-from "$STATE/codes.npz")
    for split in train test; do
        log "$name: $split"
        limit=()
        if ((STOP_AFTER > 0)); then
            left=$((DEADLINE - $(date +%s)))
            ((left > 0)) || { log "time limit reached; run this script again to continue"; exit 0; }
            limit=(timeout -s TERM "$left")
        fi
        rc=0
        "${limit[@]}" "$BIN" data encode "$corpus/${split}_lm.jsonl" --tokenizer "$RUN/export/tokenizer1" \
            "${stores[@]}" --out "$shards/$split" --shard-size 2000 --batch-size 8 \
            >/dev/null &
        TRAIN_PID=$!
        wait "$TRAIN_PID" || rc=$?
        ((rc == 143 || rc == 130)) && { wait "$TRAIN_PID" || rc=$?; }
        TRAIN_PID=
        if ((rc == 124 || rc == 143 || rc == 130)); then # deadline or signal: finished shards are kept
            log "$name: stopped; run this script again to continue"
            exit 0
        fi
        ((rc == 0)) || exit "$rc"
    done
    mark "$name"
}

# 1. corpus (seed 0, template sentences); not needed once both stage-1 trainings are finished
C=$RUN/corpus
STAGE1_DONE=0
trained tokenizer1 && trained lm && [[ $STAGE2 != 1 ]] && STAGE1_DONE=1
((STAGE1_DONE)) || synth synth "$C" ""

# 2–3. tokenizer stage 1
setargs "${MIMO_DEFAULT_TOK_SET:-}"
train tokenizer tokenizer1 "$RECIPES/default_tokenizer.yaml" "$RUN/tokenizer1" \
    --set "data.train=[$C/train_tokenizer.jsonl]" --set "data.eval=[$C/test_tokenizer.jsonl]" \
    "${SETARGS[@]}"
export_ export_tokenizer1 "$RUN/tokenizer1" "$RUN/export/tokenizer1" "$STATE/tokenizer1"

# 4. code shards (stage 2 freezes the encoder and quantizer, so the stage-1 codes are final)
((STAGE1_DONE)) || encode encode "$C" "$RUN/shards"

# 5. tokenizer stage 2 (GAN fine-tuning of the decoder + vocoder)
TOKENIZER=$RUN/export/tokenizer1
if [[ $STAGE2 == 1 ]]; then
    setargs "${MIMO_DEFAULT_TOK2_SET:-}"
    train tokenizer tokenizer2 "$RECIPES/default_tokenizer_stage2.yaml" "$RUN/tokenizer2" \
        --set "model.init=$RUN/export/tokenizer1" \
        --set "data.train=[$C/train_tokenizer.jsonl]" --set "data.eval=[$C/test_tokenizer.jsonl]" \
        "${SETARGS[@]}"
    export_ export_tokenizer2 "$RUN/tokenizer2" "$RUN/export/tokenizer2" "$STATE/tokenizer2"
    TOKENIZER=$RUN/export/tokenizer2
fi

# 6–7. LM stage 1 (template sentences). It was stopped at step 5 721 of its 10 000 when it had
# memorised the training sentences (docs/DEFAULT_MODEL.md section 7, session 6): $STATE/done/lm
# records that, so the packed step-5 721 state is its result
setargs "${MIMO_DEFAULT_LM_SET:-}"
train lm lm "$RECIPES/default_lm.yaml" "$RUN/lm" \
    --set "data.train=[$RUN/shards/train]" --set "data.eval=[$RUN/shards/test]" \
    "${SETARGS[@]}"
export_ export_lm "$RUN/lm" "$RUN/export/lm" "$STATE/lm"

# 8–9. LM stage 2: fine-tuned on a second corpus of the same seed in which half the training
# sentences are template-free word sequences (the held-out split is the same as the first corpus's).
# Each later corpus is built only while a training step that reads it is unfinished.
C2=$RUN/corpus2
if ! { trained lm2 && trained lm3; }; then
    synth synth2 "$C2" "$C" --word-sequences "${MIMO_DEFAULT_WORD_SEQUENCES:-0.5}"
    encode encode2 "$C2" "$RUN/shards2"
fi
setargs "${MIMO_DEFAULT_LM2_SET:-}"
train lm lm2 "$RECIPES/default_lm2.yaml" "$RUN/lm2" --set "model.init=$RUN/export/lm" \
    --set "data.train=[$RUN/shards2/train]" --set "data.eval=[$RUN/shards2/test]" \
    "${SETARGS[@]}"
export_ export_lm2 "$RUN/lm2" "$RUN/export/lm2" "$STATE/lm2" # float32: LM stage 3 starts from it

# 10–11. LM stage 3: a third corpus of the same seed (new training sentences, 3/4 of them word
# sequences; the held-out split is the same), trained on together with the second
C3=$RUN/corpus3
if ! { trained lm3 && trained lm4; }; then
    synth synth3 "$C3" "$C2" --word-sequences "${MIMO_DEFAULT_WORD_SEQUENCES3:-0.75}"
    encode encode3 "$C3" "$RUN/shards3"
fi
setargs "${MIMO_DEFAULT_LM3_SET:-}"
train lm lm3 "$RECIPES/default_lm3.yaml" "$RUN/lm3" --set "model.init=$RUN/export/lm2" \
    --set "data.train=[$RUN/shards2/train,$RUN/shards3/train]" --set "data.eval=[$RUN/shards2/test]" \
    "${SETARGS[@]}"
export_ export_lm3 "$RUN/lm3" "$RUN/export/lm3" "$STATE/lm3" # float32: LM stage 4 starts from it

# 12–13. LM stage 4: a fourth corpus of the same seed whose word sequences are, half of them, short
# sequences of the translation phrases' words (`--phrase-words`: the held-out phrases' vocabulary,
# never the phrases), trained on together with the third (docs/DEFAULT_MODEL.md §7, session 12). Its
# new codes go to a code store of their own, state/codes4.npz. Its TTS records carry espeak-ng's word
# start times (`--word-times`), which only LM stage 6 reads (data.tts_alignment).
C4=$RUN/corpus4
if ! feeds_settled lm9; then
    synth synth4 "$C4" "$C3" --word-sequences "${MIMO_DEFAULT_WORD_SEQUENCES4:-0.7}" \
        --phrase-words "${MIMO_DEFAULT_PHRASE_WORDS4:-0.5}" --word-times
    encode encode4 "$C4" "$RUN/shards4" codes4.npz
fi
setargs "${MIMO_DEFAULT_LM4_SET:-}"
train lm lm4 "$RECIPES/default_lm4.yaml" "$RUN/lm4" --set "model.init=$RUN/export/lm3" \
    --set "data.train=[$RUN/shards3/train,$RUN/shards4/train]" --set "data.eval=[$RUN/shards4/test]" \
    "${SETARGS[@]}"
export_ export_lm4 "$RUN/lm4" "$RUN/export/lm4" "$STATE/lm4" # float32: LM stage 5 starts from it

# corpus4_stage NAME FROM: an LM stage on the fourth corpus (recipe default_NAME.yaml, overrides
# MIMO_DEFAULT_<NAME>_SET) from the float32 export of stage FROM, then, when it feeds later stages
# (FEEDS), its own float32 export for them. Skipped once the stages it feeds are settled (their
# packed state is all the release needs).
corpus4_stage() {
    local name=$1 from=$2 var="MIMO_DEFAULT_${1^^}_SET"
    [[ -n ${FEEDS[$name]:-} ]] && feeds_settled "$name" && return 0
    setargs "${!var:-}"
    train lm "$name" "$RECIPES/default_$name.yaml" "$RUN/$name" --set "model.init=$RUN/export/$from" \
        --set "data.train=[$RUN/shards4/train]" --set "data.eval=[$RUN/shards4/test]" "${SETARGS[@]}"
    [[ -z ${FEEDS[$name]:-} ]] || export_ "export_$name" "$RUN/$name" "$RUN/export/$name" "$STATE/$name"
}

# 14. LM stage 5: stage 4 trained on the fourth corpus alone, so the phrases' words weigh more
corpus4_stage lm5 lm4
# 15. LM stage 6: word-aligned TTS streams (each word's tokens just before the speech patch where
# espeak-ng starts it, instead of 5-token / 5-patch chunks that run seconds ahead of the speech)
corpus4_stage lm6 lm5
# 16. LM stage 7: the loss weighted towards speech (text 30 instead of 100, codebook weights
# doubled): the text hardly steered the speech
corpus4_stage lm7 lm6
# 17. LM stage 8: speech input noise (a fifth of the predicted speech patches get another patch's
# codes as input), so that generation follows the text when its own speech goes wrong
corpus4_stage lm8 lm7
# 18. LM stage 9: twice the speech input noise (0.4). Stages 6–9: docs/DEFAULT_MODEL.md §7, session 13
corpus4_stage lm9 lm8
# 19–20. LM stages 11 and 12: stage 9 trained for several epochs in batches of 32 rows (trained on a
# GPU in session 14; on CPU each takes hours, resumably), with the text weight at 30 and at 100. The
# release averages their weights (docs/DEFAULT_MODEL.md §7, session 14)
corpus4_stage lm11 lm9
corpus4_stage lm12 lm9

# 21. release folder: model/ + tokenizer/ in the official format (MIMO_AUDIO_DEFAULT_DIR=$RUN/release).
# The LM is the chosen stage's packed state, or the mean of several stages' packed states (so every
# machine ships the same weights), in bfloat16 (it loads as float32 on CPU); done/release records the
# choice, so choosing another rebuilds it.
RELEASE_LM=${MIMO_DEFAULT_RELEASE_LM:-lm11+lm12}
if ! done_ release || [[ $(<"$RUN/done/release") != "$RELEASE_LM "* ]]; then
    srcs=()
    for stage in ${RELEASE_LM//+/ }; do
        src=$STATE/$stage
        [[ -e $src/trainer.json ]] || src=$RUN/$stage
        [[ -e $src/trainer.json ]] || compgen -G "$src/checkpoints/step-*" >/dev/null \
            || { log "release: no trained $stage"; exit 2; }
        srcs+=("$src")
    done
    avg=()
    for src in "${srcs[@]:1}"; do avg+=(--average-with "$src"); done
    rm -rf "$RUN/release.tmp"
    mkdir -p "$RUN/release.tmp"
    "$BIN" export "${srcs[0]}" "${avg[@]}" --out "$RUN/release.tmp/model" --dtype bfloat16 >/dev/null
    # the samplers measured best for this model size (greedy TTS: docs/DEFAULT_MODEL.md §7, session 8)
    cp "$RECIPES/default/generation_config.json" "$RUN/release.tmp/model/"
    cp -r "$TOKENIZER" "$RUN/release.tmp/tokenizer"
    rm -rf "$RUN/release"
    mv "$RUN/release.tmp" "$RUN/release"
    echo "$RELEASE_LM $(date -u +%FT%TZ)" >"$RUN/done/release"
fi
size_mb=$(du -sm "$RUN/release" | cut -f1)
log "release: $RUN/release (${size_mb} MB, LM $RELEASE_LM)"
((size_mb <= 150)) || log "warning: the release is over the 150 MB budget"
echo "$RUN/release"
