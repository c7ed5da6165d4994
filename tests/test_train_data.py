"""Training data: the code cache (``mimo-audio data encode``), manifests, sequence formats built with
the inference prompt builders, targets, packing and the deterministic batch plan."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from mimo_audio.cli import main as cli_main
from mimo_audio.lm import load_lm
from mimo_audio.prompts import PromptBuilder
from mimo_audio.text_tokenizer import TextTokenizer
from mimo_audio.train.data import (
    BatchPlan,
    CodeResolver,
    DataError,
    ShardSource,
    open_sources,
    pack_rows,
    rank_slice,
)
from mimo_audio.train.lm_data import IGNORE, LMDataset, SequenceBuilder, delay_targets, undelay_targets
from mimo_audio.train.lm_trainer import LMTrainModule
from test_train_common import CLIPS, MODEL_DIR, TOKENIZER_DIR, lm_records, make_lm_data, restore_threads  # noqa: F401

from conftest import EXPECTED, clip_path

G = 4


@pytest.fixture(scope="module")
def tok():
    return TextTokenizer.from_dir(MODEL_DIR)


@pytest.fixture(scope="module")
def seq(tok):
    empty = [1024, 1024] + [128] * 6
    return SequenceBuilder(PromptBuilder(tok, empty, G), tok, "response")


@pytest.fixture(scope="module")
def lm():
    return load_lm(MODEL_DIR, optimize=False)


def codes(tensors, clip):
    return tensors[f"{clip}.lm_codes"].long()


# ---------------------------------------------------------------------------- code cache
def test_encode_manifest_to_shards_and_read_back(tmp_path, expected_tensors):
    manifest = tmp_path / "m.jsonl"
    records = [
        {"task": "asr", "audio": str(clip_path("speech_a")), "text": "hi"},
        {"task": "chat", "messages": [{"role": "user", "content": {"audio": str(clip_path("speech_b"))}},
                                      {"role": "assistant", "content": "ok"}]},
        {"task": "text", "text": "no audio here"},
    ]  # fmt: skip
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "shards"
    args = [
        "data",
        "encode",
        str(manifest),
        "--tokenizer",
        str(TOKENIZER_DIR),
        "--out",
        str(out),
        "--shard-size",
        "2",
    ]
    assert cli_main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "shard-000000.tar", "shard-000001.tar"]
    src = ShardSource(out)
    assert len(src) == 3
    rec0, _ = src.get(0)
    assert torch.equal(rec0["audio"], codes(expected_tensors, "speech_a"))
    rec1, _ = src.get(1)
    assert torch.equal(rec1["messages"][0]["content"]["audio"], codes(expected_tensors, "speech_b"))
    assert src.get(2)[0] == {"task": "text", "text": "no audio here"}
    # a temp file left by a killed writer (atomic_write's hidden ``.name.XXXX.tar``) is not a shard
    (out / ".shard-000002.tar.a1b2.tar").write_bytes(b"partial")
    assert len(ShardSource(out)) == 3
    # resumable: existing shards are kept as they are
    mtime = (out / "shard-000000.tar").stat().st_mtime_ns
    assert cli_main(args) == 0
    assert (out / "shard-000000.tar").stat().st_mtime_ns == mtime


def test_code_store_rebuilds_shards_without_the_encoder(tmp_path, expected_tensors, monkeypatch):
    """`data encode --codes`: the store keeps every encoded file; a second encode (another folder, as on
    a new machine) takes the codes from it without calling the tokenizer; another tokenizer's store
    is not used."""
    from mimo_audio.tokenizer import AudioTokenizer
    from mimo_audio.train.encode import CodeStore, encode_manifest, tokenizer_fingerprint

    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        "".join(json.dumps({"task": "asr", "audio": str(clip_path(c)), "text": "x"}) + "\n" for c in CLIPS)
    )
    store = tmp_path / "state" / "codes.npz"
    args = ["data", "encode", str(manifest), "--tokenizer", str(TOKENIZER_DIR), "--codes", str(store)]
    assert cli_main([*args, "--out", str(tmp_path / "a")]) == 0
    tok = AudioTokenizer.from_pretrained(TOKENIZER_DIR)
    kept = CodeStore(store, tokenizer_fingerprint(tok, 8, G))
    assert len(kept) == len(CLIPS)
    assert torch.equal(torch.from_numpy(kept.get(str(clip_path(CLIPS[0]))).astype(np.int64)),
                       codes(expected_tensors, CLIPS[0]))  # fmt: skip

    def no_encoder(*_a, **_k):
        raise AssertionError("encoded again")

    monkeypatch.setattr(AudioTokenizer, "encode_batch", no_encoder)
    assert cli_main([*args, "--out", str(tmp_path / "b")]) == 0
    a, b = ShardSource(tmp_path / "a"), ShardSource(tmp_path / "b")
    assert all(torch.equal(a.get(i)[0]["audio"], b.get(i)[0]["audio"]) for i in range(len(CLIPS)))
    assert len(CodeStore(store, "another tokenizer")) == 0
    with torch.no_grad():
        next(iter(tok.parameters())).add_(1.0)
    assert tokenizer_fingerprint(tok, 8, G) != kept.fingerprint
    with pytest.raises(AssertionError, match="encoded again"):
        encode_manifest(manifest, tok, tmp_path / "c", codes=store, progress=False)
    store.write_bytes(b"not an archive")
    with pytest.raises(DataError, match=r"not a code store \(not an \.npz archive\)$"):
        CodeStore(store, kept.fingerprint)


def test_codes_from_reads_earlier_stores_and_writes_only_new_codes(tmp_path, capsys):
    """`data encode --codes NEW --codes-from OLD`: the codes OLD holds are reused, OLD is not
    rewritten, and NEW receives only the files that no store held; a missing OLD is a one-line error."""
    from mimo_audio.tokenizer import AudioTokenizer
    from mimo_audio.train.encode import CodeStore, tokenizer_fingerprint

    def manifest(name, clips):
        path = tmp_path / name
        path.write_text(
            "".join(
                json.dumps({"task": "asr", "audio": str(clip_path(c)), "text": "x"}) + "\n" for c in clips
            )
        )
        return str(path)

    old, new = tmp_path / "old.npz", tmp_path / "new.npz"
    base = ["data", "encode", "--tokenizer", str(TOKENIZER_DIR)]
    assert (
        cli_main([*base, manifest("a.jsonl", CLIPS[:1]), "--codes", str(old), "--out", str(tmp_path / "a")])
        == 0
    )
    before = old.read_bytes()
    full = manifest("b.jsonl", CLIPS)
    assert (
        cli_main([*base, full, "--codes", str(new), "--codes-from", str(old), "--out", str(tmp_path / "b")])
        == 0
    )
    assert old.read_bytes() == before
    fp = tokenizer_fingerprint(AudioTokenizer.from_pretrained(TOKENIZER_DIR), 8, G)
    assert set(CodeStore(new, fp).codes) == {str(clip_path(c)) for c in CLIPS[1:]}
    a, b = ShardSource(tmp_path / "a"), ShardSource(tmp_path / "b")
    assert torch.equal(a.get(0)[0]["audio"], b.get(0)[0]["audio"])
    capsys.readouterr()
    missing = tmp_path / "nope.npz"
    assert cli_main([*base, full, "--codes-from", str(missing), "--out", str(tmp_path / "c")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"{missing}: no such code store")


def test_example_lengths_are_cached_and_checked(tmp_path, expected_tensors, monkeypatch, caplog, seq, lm):
    """With a cache folder, the second dataset over the same data reads the example lengths instead of
    building every example (only a spot check); a cache that disagrees with the data is rebuilt, and
    changed data gets a new cache file."""
    records = lm_records(expected_tensors) * 12  # more examples than the spot check builds
    manifest = make_lm_data(tmp_path, expected_tensors, records)
    cache = tmp_path / "cache"

    def dataset():
        return LMDataset(
            open_sources([str(manifest)]), seq, CodeResolver(8, G), seed=0, empty_text_id=lm.empty_text_id,
            empty_ids=lm.config.speech_zeroemb_idx, delays=lm.config.delay_pattern, cache_dir=cache,
        )  # fmt: skip

    first = dataset()
    files = list(cache.glob("lengths-*.npy"))
    assert len(files) == 1 and np.load(files[0]).tolist() == first.lengths
    built = []
    real = SequenceBuilder.build
    monkeypatch.setattr(SequenceBuilder, "build", lambda self, r, rng: built.append(1) or real(self, r, rng))
    assert dataset().lengths == first.lengths and 0 < len(built) <= 16 < len(records)
    np.save(files[0], np.asarray(first.lengths) + 1)  # a stale cache: rebuilt, with a warning
    built.clear()
    with caplog.at_level("WARNING", logger="mimo_audio.train"):
        assert dataset().lengths == first.lengths and len(built) > len(records)
    assert "do not match" in caplog.text
    manifest.write_text(manifest.read_text() + json.dumps(records[0]) + "\n")  # new data, new key
    assert len(dataset().lengths) == len(records) + 1 and len(list(cache.glob("lengths-*.npy"))) == 2


def test_manifest_code_files_and_errors(tmp_path, expected_tensors):
    np.save(tmp_path / "a.npy", codes(expected_tensors, "speech_a").numpy())
    resolver = CodeResolver(8, G)
    assert torch.equal(resolver("a.npy", tmp_path), codes(expected_tensors, "speech_a"))
    assert resolver({"codes": [[1] * 8] * 3}, tmp_path).shape == (4, 8)  # padded to whole patches
    with pytest.raises(DataError, match="data encode"):
        resolver("clip.wav", tmp_path)
    (tmp_path / "bad.jsonl").write_text('{"task": "asr"}\nnot json\n')
    with pytest.raises(DataError, match="bad.jsonl:2"):
        open_sources([str(tmp_path / "bad.jsonl")])


# ---------------------------------------------------------------------------- sequence formats
def _prompt_of(example, expected):
    assert torch.equal(example.ids[:, : expected.shape[1]], expected.long())
    P0 = expected.shape[1] // G
    assert not example.target[:P0].any() and example.target[P0:].all()
    return example.ids[:, expected.shape[1] :]


def test_prompts_are_the_inference_prompts(seq, tok, expected_tensors):
    t = expected_tensors
    rng = random.Random(0)
    spec = EXPECTED["prompts"]
    asr = seq.build(
        {
            "task": "asr",
            "audio": codes(t, "speech_a"),
            "text": "It was fire.",
            "template": spec["asr"]["template"],
        },
        rng,
    )
    reply = _prompt_of(asr, t["prompt.asr"])
    assert reply[0, ::G].tolist() == tok.encode("It was fire.") + [tok.id("<|im_end|>")]
    tts = seq.build(
        {
            "task": "tts",
            "text": spec["tts"]["text"],
            "audio": codes(t, "speech_b"),
            "template": spec["tts"]["template"],
        },
        rng,
    )
    reply = _prompt_of(tts, t["prompt.tts"])
    assert reply[0, -G] == tok.id("<|eostm|>")
    assert (reply[0, ::G] == tok.id("<|empty|>")).sum() == codes(t, "speech_b").shape[0] // G
    icl = spec["in_context_s2s"]
    ex = [{"input_audio": codes(t, e["input_audio"]), "output_audio": codes(t, e["output_audio"]),
           "output_transcription": e["output_transcription"]} for e in icl["examples"]]  # fmt: skip
    rec = {"task": "in_context_s2s", "instruction": icl["instruction"], "examples": ex, "audio": codes(t, "speech_c"),
           "output_audio": codes(t, "speech_a"), "output_transcription": "hello"}  # fmt: skip
    _prompt_of(seq.build(rec, rng), t["prompt.in_context_s2s"])
    msgs = EXPECTED["messages"]
    text_chat = seq.build(
        {"task": "chat", "messages": msgs["multi_text"] + [{"role": "assistant", "content": "Sure."}]}, rng
    )
    _prompt_of(text_chat, t["prompt.text_dialogue_multiturn"])

    def audio_msgs(ms):
        out = []
        for m in ms:
            c = m["content"]
            if isinstance(c, dict):
                c = {"text": c["text"], "audio": codes(t, c["audio"])}
            elif m["role"] == "user":
                c = {"audio": codes(t, c)}
            out.append({"role": m["role"], "content": c})
        return out

    s2s = spec["spoken_dialogue_multiturn"]
    rec = {"task": "chat", "messages": audio_msgs(msgs["multi_s2s"]) + [{"role": "assistant", "content": {"text": "Ok.", "audio": codes(t, "speech_b_cut")}}],
           "system_prompt": s2s["system_prompt"], "prompt_speech": codes(t, s2s["prompt_speech"])}  # fmt: skip
    reply = _prompt_of(seq.build(rec, rng), t["prompt.spoken_dialogue_multiturn"])
    assert reply[0, -G] == tok.id("<|eostm|>")
    rec = {
        "task": "chat",
        "messages": audio_msgs(msgs["multi_s2t"]) + [{"role": "assistant", "content": "Yes."}],
        "thinking": True,
    }
    _prompt_of(seq.build(rec, rng), t["prompt.s2t_dialogue_multiturn"])


def test_pretraining_formats_predict_everything(seq, tok, expected_tensors):
    rng = random.Random(0)
    c = codes(expected_tensors, "speech_c")
    cont = seq.build({"task": "continuation", "audio": c}, rng)
    assert cont.ids[0, 0] == tok.id("<|sosp|>") and cont.ids[0, -G] == tok.id("<|eosp|>")
    assert not cont.target[0] and cont.target[1:].all()
    inter = seq.build(
        {"task": "interleaved", "segments": [{"text": "Hello"}, {"audio": c}, {"text": "bye", "audio": c}]},
        rng,
    )
    assert inter.target[1:].all()
    text = seq.build({"task": "text", "text": "Plain text."}, rng)
    assert text.ids[0, ::G].tolist() == tok.encode("Plain text.") + [tok.eos_id]
    und = seq.build(
        {"task": "audio_understanding", "audio": c, "question": "Who?", "answer": "Me.", "thinking": "hmm"},
        rng,
    )
    tail = und.ids[0, ::G][und.target].tolist()
    assert tok.decode(tail) == "hmm\n</think>\nMe.<|im_end|>"
    with pytest.raises(DataError, match="unknown task"):
        seq.build({"task": "karaoke"}, rng)
    with pytest.raises(DataError, match="'text'"):
        seq.build({"task": "asr", "audio": c}, rng)


def test_delay_roundtrip_and_targets(expected_tensors):
    frames = codes(expected_tensors, "speech_a")[:8].reshape(2, G, 8)
    for delays in ((0, 1, 2, 3, 4, 5, 6, 7), (0, 2, 2, 3, 4, 4, 6, 7), (0,) * 8):
        d = delay_targets(frames, delays)
        assert d.shape == (2, G + max(delays), 8)
        assert torch.equal(undelay_targets(d, delays, G), frames)
        assert int((d != IGNORE).sum()) == frames.numel()


# ---------------------------------------------------------------------------- packing and plan
def test_batch_plan_is_deterministic_and_packs_within_context():
    lengths = [5, 9, 3, 7, 2, 8, 4, 6, 1, 10]
    plan = BatchPlan(lengths, context=12, batch_rows=2, seed=3)
    again = BatchPlan(lengths, context=12, batch_rows=2, seed=3)
    for step in range(12):
        epoch, rows = plan.batch(step)
        assert (epoch, rows) == again.batch(step)
        assert all(sum(lengths[i] for i in row) <= 12 for row in rows)
    seen = sorted(i for b in range(plan.steps_in_epoch(0)) for row in plan.batch(b)[1] for i in row)
    assert len(seen) == len(set(seen))
    assert plan.epoch_rows(0) != plan.epoch_rows(1)
    assert plan.locate(plan.steps_in_epoch(0)) == (1, 0)
    assert pack_rows([3, 3, 3], [0, 1, 2], context=6, pack=False) == [[0], [1], [2]]
    assert rank_slice([1, 2, 3, 4], 1, 2) == [3, 4]
    with pytest.raises(DataError):
        rank_slice([1, 2, 3], 0, 2)


def test_packed_rows_score_like_separate_sequences(tmp_path, expected_tensors, seq, lm):
    """Attention and positions restart per packed example: a packed row's loss sums equal the
    sums of its examples run alone."""
    manifest = make_lm_data(tmp_path, expected_tensors)
    cfg = lm.config
    data = LMDataset(
        open_sources([str(manifest)]), seq, CodeResolver(8, G), seed=0,
        empty_text_id=lm.empty_text_id, empty_ids=cfg.speech_zeroemb_idx, delays=cfg.delay_pattern,
    )  # fmt: skip
    module = LMTrainModule(lm, speech_loss=True)
    packed = data.collate([[0, 2, 3]], sum(data.lengths[i] for i in (0, 2, 3)) + 5)
    assert packed["doc"][0, -5:].eq(-1).all() and packed["positions"][0, data.lengths[0]] == 0
    with torch.no_grad():
        together = module(**packed)
        alone = sum(module(**data.collate([[i]], data.lengths[i])) for i in (0, 2, 3))
    assert torch.allclose(together, alone, rtol=1e-4)


def test_word_aligned_tts_stream(seq, tok):
    aligned = SequenceBuilder(seq.b, tok, "response", aligned_tts=True)
    text = "hello big world. again"
    # "hello" starts in patch 0, "big" in patch 1 (0.30 s), "world." in 3 (0.50 s), "again" in 6
    record = {"task": "tts", "text": text, "word_starts": [[0, 0.0], [6, 0.30], [10, 0.50], [17, 1.0]]}
    record["audio"] = torch.arange(40 * 8).reshape(40, 8) % 100  # 10 patches
    ex = aligned.build(record, random.Random(0))
    plain = seq.build(record, random.Random(0))
    sostm, eot, eostm = tok.id("<|sostm|>"), tok.id("<|eot|>"), tok.id("<|eostm|>")
    text_ids = ex.ids[0, ::G].tolist()
    start = text_ids.index(sostm) + 1
    assert ex.ids[:, : G * start].equal(plain.ids[:, : G * start])  # the same prompt
    spoken = tok.encode("Hello big world. again")
    seen, speech, at = [], [], {}
    for p in range(start, len(text_ids)):
        t = text_ids[p]
        if t == tok.id("<|empty|>"):
            speech.append(ex.ids[1:, G * p : G * (p + 1)].T)
        else:
            seen.append(t)
            at.setdefault(len(speech), []).append(t)
    assert torch.cat(speech).equal(record["audio"])  # every speech patch once, in order
    assert seen == spoken + [eot, eostm]
    words = {0: "Hello", 1: " big", 3: " world.", 6: " again"}
    for patch, word in words.items():
        assert at[patch][: len(tok.encode(word))] == tok.encode(word)
    assert at[6] == tok.encode(" again") + [eot] and at[10] == [eostm]
    # without word starts, or without aligned_tts, the 5-token / 5-patch stream
    del record["word_starts"]
    assert aligned.build(record, random.Random(0)).ids.equal(plain.ids)
    assert plain.ids[:, G * (start - 1) :].equal(seq.b.stream("Hello big world. again", record["audio"]))


def test_speech_input_noise_swaps_response_speech_inputs_only(tmp_path, expected_tensors, seq, lm):
    records = [r for r in lm_records(expected_tensors) if r["task"] in ("tts", "continuation")]
    manifest = make_lm_data(tmp_path, expected_tensors, records)

    def dataset(noise):
        return LMDataset(
            open_sources([str(manifest)]), seq, CodeResolver(8, G), seed=0, empty_text_id=lm.empty_text_id,
            empty_ids=lm.config.speech_zeroemb_idx, delays=lm.config.delay_pattern, speech_noise=noise,
        )  # fmt: skip

    clean, noisy = dataset(0.0), dataset(0.5)
    rows = [[i] for i in range(len(clean))]
    length = max(clean.lengths)
    a, b = clean.collate(rows, length), dataset(0.5).collate(rows, length)
    assert b["ids"].equal(noisy.collate(rows, length)["ids"])  # deterministic
    for key in ("text_targets", "speech_targets", "positions", "doc"):
        assert a[key].equal(b[key]), key  # targets stay true
    assert a["ids"][:, 0].equal(b["ids"][:, 0])  # the text channel is untouched
    changed = (a["ids"][:, 1:] != b["ids"][:, 1:]).any(1).reshape(len(rows), length, G).any(-1)  # [B, L]
    assert changed.any()
    for r in range(len(rows)):
        ex = clean.example(r)
        speech = (ex.ids[0, ::G] == lm.empty_text_id) & ex.target
        assert not changed[r, : ex.patches][~speech].any()  # prompt audio and text patches kept
        patches = {tuple(ex.ids[1:, G * p : G * (p + 1)].flatten().tolist()) for p in speech.nonzero()[:, 0]}
        for p in changed[r].nonzero()[:, 0]:  # each swapped input is another speech patch of the example
            assert tuple(b["ids"][r, 1:, G * p : G * (p + 1)].flatten().tolist()) in patches


def test_cached_examples_give_the_same_batches(tmp_path, expected_tensors, seq, lm, monkeypatch):
    """data.cache_examples: each example is built once and kept; batches (noise included) are the
    ones an uncached dataset gives, in every epoch."""
    manifest = make_lm_data(tmp_path, expected_tensors, lm_records(expected_tensors))

    def dataset(cache):
        return LMDataset(
            open_sources([str(manifest)]), seq, CodeResolver(8, G), seed=0, empty_text_id=lm.empty_text_id,
            empty_ids=lm.config.speech_zeroemb_idx, delays=lm.config.delay_pattern, speech_noise=0.5,
            cache_examples=cache,
        )  # fmt: skip

    plain = dataset(False)
    builds = []
    build = LMDataset._build
    monkeypatch.setattr(LMDataset, "_build", lambda self, i: builds.append(i) or build(self, i))
    rows = [[i, (i + 1) % len(plain)] for i in range(len(plain))]
    length = 2 * max(plain.lengths)
    want = plain.collate(rows, length)
    assert len(builds) == 2 * len(plain)  # uncached: every use builds the example again
    builds.clear()
    cached = dataset(True)
    assert sorted(builds) == list(range(len(plain)))  # measuring the lengths built each one once
    for _ in range(2):  # later epochs read every example from memory
        got = cached.collate(rows, length)
        for key, value in want.items():
            assert got[key].equal(value), key
    assert len(builds) == len(plain)
