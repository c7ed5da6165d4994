"""The synthetic espeak-ng corpus (``mimo-audio data synth``) and the default model's BPE tokenizer:
manifests in the training record format, determinism, disjoint held-out speakers and sentences,
augmentation at the requested SNR, resumable rendering, and the committed tokenizer files."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mimo_audio.api import FEWSHOT_PRESETS
from mimo_audio.cli import main
from mimo_audio.data import synth, synth_audio, synth_text
from mimo_audio.data.synth_vocab import SPECIALS, build_text_tokenizer, corpus_texts
from mimo_audio.prompts import PromptBuilder
from mimo_audio.text_tokenizer import TextTokenizer

ROOT = Path(__file__).resolve().parents[1]
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def plan(out: Path, n: int = 60, seed: int = 0, **kw) -> synth.Plan:
    return synth.build_plan(synth.SynthOptions(out=out, utterances=n, seed=seed, progress=False, **kw))


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------------------- planning (no audio)
def test_plan_has_every_manifest_in_the_training_format(tmp_path):
    p = plan(tmp_path)
    for split in ("train", "test"):
        recs = p.records[split]
        assert all(recs[name] for name in synth.MANIFESTS), {k: len(v) for k, v in recs.items()}
        assert {r["task"] for r in recs["asr"]} == {"asr"} and all(r["text"] for r in recs["asr"])
        assert all(r["task"] == "tts" and "instruction" not in r for r in recs["tts"])
        assert all(r["task"] == "tts" and r["instruction"] for r in recs["instruct_tts"])
        for kind in synth.GROUP_UNITS:
            for r in recs[kind]:
                assert r["task"] == "in_context_s2s" and len(r["examples"]) == synth.GROUP_PAIRS - 1
                assert r["instruction"] == FEWSHOT_PRESETS[kind]
                assert r["audio"] != r["output_audio"] and r["output_transcription"]
        assert set(recs["tokenizer"][0]) == {"audio", "text"}
    # every audio path names a planned clip; pairs hold what their task says
    paths = {c.path: c for c in p.clips.values()}
    for r in p.records["train"]["vc"]:
        a, b = paths[r["audio"]], paths[r["output_audio"]]
        assert a.text == b.text and a.speaker != b.speaker
    for r in p.records["train"]["speed"]:
        a, b = paths[r["audio"]], paths[r["output_audio"]]
        assert a.speaker == b.speaker and a.style.rate == "normal" and b.style.rate in ("slow", "fast")
    for r in p.records["train"]["denoise"]:
        a, b = paths[r["audio"]], paths[r["output_audio"]]
        assert a.augment is not None and b.augment is None and a.text == b.text
    for r in p.records["train"]["translate"]:
        a, b = paths[r["audio"]], paths[r["output_audio"]]
        assert {a.lang, b.lang} == {"en", "zh"} and a.speaker == b.speaker


def test_splits_are_disjoint_in_speakers_and_sentences(tmp_path):
    p = plan(tmp_path, n=200)
    speakers, texts = {}, {}
    for split in ("train", "test"):
        clips = [c for c in p.clips.values() if c.path in {r["audio"] for r in p.records[split]["tokenizer"]}]
        speakers[split] = {c.speaker.id for c in clips}
        texts[split] = {c.text for c in clips}
    assert speakers["test"] and texts["test"]
    assert not speakers["train"] & speakers["test"]
    assert not texts["train"] & texts["test"]
    assert set(p.speakers["test"]).isdisjoint(p.speakers["train"])


def test_plan_is_deterministic(tmp_path):
    a, b, c = plan(tmp_path), plan(tmp_path), plan(tmp_path, seed=1)
    assert a.records == b.records and list(a.clips) == list(b.clips)
    assert a.records != c.records


def test_word_sequences_replace_train_sentences_only(tmp_path):
    rng = random.Random(0)
    for _ in range(20):
        en, zh = synth_text.word_sequence("en", rng), synth_text.word_sequence("zh", rng)
        assert en[0].isupper() and en.endswith(".") and len(en.split()) >= 3, en
        assert all("\u4e00" <= ch <= "\u9fff" for ch in zh[:-1]) and zh.endswith("。"), zh
    base = plan(tmp_path, n=200)
    assert plan(tmp_path, n=200, word_sequences=0.0).records == base.records  # the default corpus
    free = plan(tmp_path, n=200, word_sequences=1.0)

    phrases = {t for pair in synth_text.PHRASES for t in pair}  # translation clips keep their phrases

    def texts(p, split):
        return {r["text"] for r in p.records[split]["asr"]} - phrases

    assert texts(free, "test") == texts(base, "test")  # held-out sentences keep to the templates
    assert not texts(free, "train") & texts(base, "train")
    assert not texts(free, "train") & texts(free, "test")
    pools = synth_text.sentence_pools(("en",), 50, 20, 0, word_sequences=1.0)
    templated = synth_text.sentence_pools(("en",), 50, 20, 0)
    assert pools["test"] == templated["test"] and not set(pools["train"]["en"]) & set(
        templated["train"]["en"]
    )
    with pytest.raises(synth.MimoAudioError, match="word-sequences"):
        synth.SynthOptions(out=tmp_path, word_sequences=1.5)


def test_phrase_words_bring_the_held_out_phrases_words_but_never_a_phrase(tmp_path):
    """`--phrase-words P`: a share P of the word sequences are short sequences of the translation
    phrases' words, so the held-out phrases' vocabulary is heard in training; no train sentence is a
    phrase, the held-out split is unchanged, and P = 0 draws exactly what earlier versions drew."""
    for lang in ("en", "zh"):
        vocab = synth_text.phrase_words(lang)
        keys = {synth_text._key(pair[synth_text.LANGUAGES.index(lang)]) for pair in synth_text.PHRASES}
        # each phrase's words (en) / characters (zh) are in the vocabulary, held-out phrases' too
        units = {synth_text._key(w) for w in vocab}
        for pair in synth_text.PHRASES:
            phrase = synth_text._key(pair[synth_text.LANGUAGES.index(lang)])
            parts = pair[0].lower().strip(".?").replace(",", "").split() if lang == "en" else phrase
            assert all(p in units or (lang == "zh" and any(p in u for u in units)) for p in parts), pair
        assert len(vocab) == len(set(vocab)) > 60
        pools = synth_text.sentence_pools(("en", "zh"), 3000, 50, 0, word_sequences=1.0, phrase_share=1.0)
        train = pools["train"][lang]
        assert not {synth_text._key(t) for t in train} & keys
        if lang == "en":
            lower = {w.lower() for w in vocab}
            units = [t.rstrip(".").split() for t in train]
            assert all(2 <= len(u) <= 5 and {w.lower() for w in u} <= lower for u in units)
    assert "Chinese" in synth_text.phrase_words("en") and "晚安" in synth_text.phrase_words("zh")
    test_words = {
        w.strip(".,?").lower() for e, _ in synth_text.phrase_split(0, 0.2)["test"] for w in e.split()
    }
    base = plan(tmp_path, n=400, word_sequences=0.6)
    assert plan(tmp_path, n=400, word_sequences=0.6, phrase_words=0.0).records == base.records
    mixed = plan(tmp_path, n=400, word_sequences=0.6, phrase_words=0.5)

    def heard(p):
        return {w.strip(".").lower() for r in p.records["train"]["asr"] for w in r["text"].split()}

    assert len(test_words & heard(mixed)) > len(test_words & heard(base))
    assert [r["text"] for r in mixed.records["test"]["asr"]] == [
        r["text"] for r in base.records["test"]["asr"]
    ]
    for bad, fragment in (
        ({"phrase_words": 1.5}, "phrase-words must be in"),
        ({"phrase_words": 0.5}, "--word-sequences"),
    ):
        with pytest.raises(synth.MimoAudioError, match=fragment):
            synth.SynthOptions(out=tmp_path, **bad)


def test_languages_option(tmp_path):
    p = plan(tmp_path, n=30, languages=("en",))
    assert {c.lang for c in p.clips.values()} == {"en"}
    assert not p.records["train"]["translate"]  # translation needs both languages


def test_mandarin_sentences_are_han_and_instructions_name_the_style():
    rng = random.Random(0)
    for _ in range(20):
        s = synth_text.sentence("zh", rng)
        assert all("\u4e00" <= ch <= "\u9fff" or ch in "。？" for ch in s), s
    text = synth_text.instruction(
        {"rate": "slow", "pitch": "high", "volume": "normal", "whisper": "yes"}, "F", "en"
    )
    assert text == "Speak with a female voice, in a whisper, slowly, in a high voice."
    assert "语速快" in synth_text.instruction({"rate": "fast"}, None, "zh")


# ---------------------------------------------------------------------------- augmentation
@pytest.mark.parametrize("colour", sorted(synth_audio.NOISE_COLOURS))
@pytest.mark.parametrize("snr", [0.0, 10.0, 25.0])
def test_noise_is_added_at_the_requested_snr(colour, snr):
    rng = np.random.default_rng(0)
    t = np.arange(24000) / 24000
    clean = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    noisy = synth_audio.add_noise(clean, snr, colour, rng)
    assert abs(synth_audio.snr_db(clean, noisy) - snr) < 0.05


def test_noise_colours_tilt_the_spectrum():
    rng = np.random.default_rng(0)

    def low_high(colour: str) -> float:
        power = np.abs(np.fft.rfft(synth_audio.coloured_noise(48000, colour, rng))) ** 2
        return power[1:2400].mean() / power[-2400:].mean()  # < 600 Hz vs the top 600 Hz

    ratios = [low_high(c) for c in ("blue", "white", "pink", "brown")]
    assert ratios == sorted(ratios) and ratios[0] < 0.5 < 2 < ratios[2]


def test_impulse_response_decays_at_its_rt60():
    rt60 = 0.5
    ir = synth_audio.impulse_response(rt60, np.random.default_rng(0)).astype(np.float64)
    tail = ir[1:] ** 2
    edc = 10 * np.log10(np.cumsum(tail[::-1])[::-1] / tail.sum())  # Schroeder energy decay, dB
    t5, t25 = np.argmax(edc < -5), np.argmax(edc < -25)
    measured = 3 * (t25 - t5) / 24000  # T20 extrapolated to 60 dB
    assert abs(measured - rt60) < 0.1 * rt60


def test_augment_changes_the_snr_as_asked():
    rng = np.random.default_rng(1)
    clean = synth_audio.normalize(rng.standard_normal(24000).astype(np.float32) * 0.1, 0.5)
    noisy = synth_audio.Augment(snr=8.0, colour="pink").apply(clean, np.random.default_rng(2))
    assert abs(synth_audio.snr_db(clean, noisy) - 8.0) < 0.1
    wet = synth_audio.Augment(rt60=0.6).apply(clean, np.random.default_rng(2))
    assert wet.shape == clean.shape and not np.allclose(wet, clean)


# ---------------------------------------------------------------------------- rendering
@needs_espeak
def test_mandarin_voice_reads_han_characters():
    # espeak-ng's `cmn` voice switches to English for Han text; the voice we use must not
    out = subprocess.run(
        ["espeak-ng", "-v", synth_audio.ZH_VOICE, "-q", "-x", "今天天气很好"], capture_output=True, text=True
    ).stdout
    assert out.strip() and "(en)" not in out


@needs_espeak
def test_synthesize_writes_clips_and_manifests_deterministically_and_resumes(tmp_path):
    opts = dict(utterances=24, seed=3, jobs=2, progress=False)
    meta = synth.synthesize(synth.SynthOptions(out=tmp_path / "a", **opts))
    assert meta["clips"] == len(list((tmp_path / "a" / "clips").rglob("*.wav")))
    assert 0 < meta["hours"]["train"] < 0.1
    for name in (*synth.MANIFESTS, "lm"):
        recs = read(tmp_path / "a" / f"train_{name}.jsonl")
        assert recs or name == "translate"
        for r in recs:
            for key in ("audio", "output_audio"):
                if key in r:
                    assert (tmp_path / "a" / r[key]).is_file()
    clip = tmp_path / "a" / read(tmp_path / "a" / "train_tts.jsonl")[0]["audio"]
    info = sf.info(str(clip))
    assert info.samplerate == 24000 and info.channels == 1 and info.duration > 0.3

    synth.synthesize(synth.SynthOptions(out=tmp_path / "b", **{**opts, "jobs": 1}))
    for name in synth.MANIFESTS:
        assert (tmp_path / "a" / f"test_{name}.jsonl").read_bytes() == (
            tmp_path / "b" / f"test_{name}.jsonl"
        ).read_bytes()
    wavs = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a" / "clips").rglob("*.wav"))
    assert all((tmp_path / "a" / w).read_bytes() == (tmp_path / "b" / w).read_bytes() for w in wavs)

    # resume: a deleted clip comes back, the others are not rewritten
    (tmp_path / "a" / wavs[0]).unlink()
    stamps = {w: (tmp_path / "a" / w).stat().st_mtime_ns for w in wavs[1:]}
    synth.synthesize(synth.SynthOptions(out=tmp_path / "a", **opts))
    assert (tmp_path / "a" / wavs[0]).read_bytes() == (tmp_path / "b" / wavs[0]).read_bytes()
    assert all((tmp_path / "a" / w).stat().st_mtime_ns == s for w, s in stamps.items())
    assert not list((tmp_path / "a").rglob(".*.wav"))  # no temp files left


@needs_espeak
def test_noisy_clip_matches_its_clean_twin_at_the_planned_snr(tmp_path):
    speaker = synth_audio.speakers(0)[0]
    clean = synth.Clip("The weather is very cold today.", "en", speaker, synth_audio.Style())
    noisy = synth.Clip(clean.text, "en", speaker, clean.style, synth_audio.Augment(snr=12.0, colour="brown"))
    for c in (clean, noisy):
        synth.render_clip(tmp_path, c)
    a, _ = sf.read(str(tmp_path / clean.path), dtype="float32")
    b, _ = sf.read(str(tmp_path / noisy.path), dtype="float32")
    assert abs(synth_audio.snr_db(a, b) - 12.0) < 0.5  # 16-bit files: a little quantisation noise


# ---------------------------------------------------------------------------- CLI
@needs_espeak
def test_cli_synth_and_bad_input(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "c"), "--utterances", "8", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["clips"] >= 8 and (tmp_path / "c" / "meta.json").is_file()
    for argv in (["--languages", "fr"], ["--utterances", "0"], ["--hours", "-1"], ["--jobs", "0"]):
        assert main(["data", "synth", "--out", str(tmp_path / "d"), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("mimo-audio: error:")


@needs_espeak
def test_sigterm_mid_synth_exits_143_and_leaves_no_temp_file(tmp_path):
    """SIGTERM (as `timeout` or a scheduler sends it) unwinds like an error: exit 143 with one line,
    and every atomic write in progress removes its temp file (no hidden `.name.XXXX` files)."""
    out = tmp_path / "c"
    cmd = [str(Path(sys.executable).parent / "mimo-audio"), "data", "synth", "--out", str(out),
           "--utterances", "2000", "--jobs", "2", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any((out / "clips").rglob("*.wav")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert err.strip().splitlines() == ["mimo-audio: terminated"]  # one line, not one per worker
    assert any((out / "clips").rglob("*.wav"))
    assert not [p for p in out.rglob(".*")], sorted(out.rglob(".*"))[:5]


# ---------------------------------------------------------------------------- BPE text tokenizer
def test_text_tokenizer_holds_the_specials_and_works_with_the_prompts(tmp_path):
    build_text_tokenizer(corpus_texts(0, sentences=400), tmp_path, vocab_size=1024)
    tok = TextTokenizer.from_dir(tmp_path)
    assert [tok.id(t) for t in SPECIALS] == list(range(len(SPECIALS)))
    assert tok.vocab_size <= 1024 and tok.eos_token == "<|endoftext|>"
    ids = tok.encode("小明在公园里买了一本书。")
    assert len(ids) == 12 and tok.decode(ids) == "小明在公园里买了一本书。"  # one token per character
    assert tok.encode("<|im_start|>user\n")[0] == tok.id("<|im_start|>")
    prompt = PromptBuilder(tok, [1024, 1024, 128, 128, 128, 128, 128, 128]).tts(
        "Hello there.", template="Read this content out loud"
    )
    assert prompt.shape[0] == 9 and prompt.shape[1] % 4 == 0


def test_committed_default_text_tokenizer_is_regenerable(tmp_path):
    committed = ROOT / "recipes" / "default" / "text_tokenizer"
    build_text_tokenizer(corpus_texts(0), tmp_path, vocab_size=2048)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / name).read_text() == (committed / name).read_text(), (
            f"{name}: regenerate with `mimo-audio data synth-vocab --out recipes/default/text_tokenizer`"
        )
    lm = json.loads((ROOT / "recipes" / "default" / "lm_config.json").read_text())
    assert TextTokenizer.from_dir(committed).vocab_size <= lm["vocab_size"]


# ---------------------------------------------------------------------------- word timings
def _rms(wav: np.ndarray, start: float, end: float) -> float:
    seg = wav[int(start * 24000) : int(end * 24000)]
    return float(np.sqrt(np.mean(seg**2))) if seg.size else 0.0


@needs_espeak
def test_word_starts_are_where_the_words_are_spoken():
    en_gb = next(s for s in synth_audio.speakers(0) if s.accent == "en-gb")  # a language, not a voice name
    text = "Where is the station? My phone is broken."
    style = synth_audio.Style(wpm=160)
    starts = synth_audio.word_starts(text, "en", en_gb, style)
    wav = synth_audio.render(text, "en", en_gb, style)
    offsets, secs = [o for o, _ in starts], [s for _, s in starts]
    assert offsets[0] == 0 and offsets == sorted(set(offsets))
    assert all(text[o].isalpha() and (o == 0 or text[o - 1] == " ") for o in offsets)
    assert 5 <= len(starts) <= 8 and secs == sorted(secs) and secs[-1] < len(wav) / 24000 - 0.1
    # the pause at "?" lies just before "My", speech just after it
    my = secs[offsets.index(text.index("My"))]
    assert _rms(wav, my - 0.12, my - 0.02) < 0.1 * _rms(wav, my, my + 0.3)
    # a slower rate moves the words later; whispering keeps the timings' shape
    slow = synth_audio.word_starts(text, "en", en_gb, synth_audio.Style(rate="slow", wpm=115))
    assert [o for o, _ in slow] == offsets and slow[-1][1] > 1.2 * secs[-1]
    assert synth_audio.word_starts(text, "en", en_gb, synth_audio.Style(whisper=True, wpm=160))
    zh = synth_audio.word_starts("在桥上有五个人。", "zh", en_gb, style)
    assert [o for o, _ in zh] == list(range(7))  # one event per Han character


@needs_espeak
def test_word_times_option_annotates_the_tts_records(tmp_path):
    opts = dict(utterances=16, seed=2, jobs=1, progress=False)
    meta = synth.synthesize(synth.SynthOptions(out=tmp_path, word_times=True, **opts))
    assert meta["options"]["word_times"] is True
    tts = read(tmp_path / "train_tts.jsonl") + read(tmp_path / "train_instruct_tts.jsonl")
    assert tts and all(r["word_starts"] and r["word_starts"][0][0] == 0 for r in tts)
    for r in tts:
        dur = sf.info(str(tmp_path / r["audio"])).duration
        assert all(0 <= s < dur and 0 <= o < len(r["text"]) for o, s in r["word_starts"])
    assert not any("word_starts" in r for r in read(tmp_path / "train_asr.jsonl"))
    lm_tts = [r for r in read(tmp_path / "train_lm.jsonl") if r["task"] == "tts"]
    assert sorted(map(json.dumps, lm_tts)) == sorted(map(json.dumps, tts))
    plain = synth.build_plan(synth.SynthOptions(out=tmp_path / "p", **opts))  # the option adds no clip
    assert len(plain.clips) == meta["clips"]


# ---------------------------------------------------------------------------- regroup (no audio)
def _write_split(out: Path, p: synth.Plan, split: str = "train") -> None:
    for name in synth.MANIFESTS:
        synth._write_jsonl(out / f"{split}_{name}.jsonl", p.records[split][name])


def _key(r: dict, facts: dict) -> set:
    pairs = [(e["input_audio"], e["output_audio"]) for e in r["examples"]] + [(r["audio"], r["output_audio"])]
    return {
        (r["instruction"], facts[o]["speaker"], facts[o]["rate"], facts[i]["lang"], facts[o]["lang"])
        for i, o in pairs
    }


def test_regroup_draws_new_groups_that_demonstrate_one_thing(tmp_path):
    from mimo_audio.data.regroup import clip_facts, regroup

    p = plan(tmp_path, n=1500)
    recs = p.records["train"]
    facts = clip_facts(recs["asr"])
    texts = {c.path: c.text for c in p.clips.values()}
    for kind in ("vc", "speed", "translate"):
        new = regroup(recs[kind], facts, 40, seed=1)
        assert len(new) == 40
        old = {(r["audio"], frozenset(e["input_audio"] for e in r["examples"])) for r in recs[kind]}
        sigs = {(r["audio"], frozenset(e["input_audio"] for e in r["examples"])) for r in new}
        assert len(sigs) == 40 and not sigs & old  # no repeats, nothing the corpus already holds
        known = {(e["input_audio"], e["output_audio"]) for r in recs[kind] for e in r["examples"]}
        for r in new:
            assert len(_key(r, facts)) == 1, r  # one target voice / rate / language pair per record
            assert len(r["examples"]) == 2 and r["instruction"] == synth.ICL_INSTRUCTIONS[kind]
            assert (r["audio"], r["output_audio"]) in known  # pairs as rendered, never re-paired
            assert r["output_transcription"] == texts[r["output_audio"]]
            for e in r["examples"]:
                assert (e["input_audio"], e["output_audio"]) in known
                assert e["output_transcription"] == texts[e["output_audio"]]
        if kind == "vc":  # several of the corpus's groups meet in the new records
            source_groups = {
                min(g["audio"] for g in recs[kind] if g["output_audio"] == r["output_audio"]) for r in new
            }
            assert len(source_groups) > 10
    assert regroup(recs["vc"], facts, 40, seed=1) == regroup(recs["vc"], facts, 40, seed=1)
    assert regroup(recs["vc"], facts, 40, seed=1) != regroup(recs["vc"], facts, 40, seed=2)


def test_regroup_stops_when_no_new_combination_is_left():
    from mimo_audio.data.regroup import regroup
    from mimo_audio.errors import MimoAudioError

    facts = {f"{s}{k}": {"speaker": s, "rate": "normal", "lang": "en"} for s in "abcdt" for k in range(3)}
    pairs = [("a0", "t0"), ("b0", "t1"), ("c0", "t2")]  # one group: its 3 records are all there are
    recs = []
    for q in range(3):
        ex = [p for j, p in enumerate(pairs) if j != q]
        recs.append({
            "task": "in_context_s2s", "instruction": "vc", "audio": pairs[q][0], "output_audio": pairs[q][1],
            "examples": [{"input_audio": i, "output_audio": o} for i, o in ex],
        })  # fmt: skip
    assert regroup(recs, facts, 5) == []
    recs.append({**recs[0], "audio": "d0", "output_audio": "t0"})  # a fourth pair: new combinations
    new = regroup(recs, facts, 100)
    assert 0 < len(new) < 100 and all(
        "d0" in {r["audio"], *(e["input_audio"] for e in r["examples"])} for r in new
    )
    with pytest.raises(MimoAudioError, match="no speaker facts"):
        regroup(recs, {k: v for k, v in facts.items() if k != "d0"}, 5)
    with pytest.raises(MimoAudioError, match="more than 3 pairs"):
        regroup(recs[:3], facts, 5, examples=3)


def test_cli_regroup_writes_a_manifest_next_to_the_clips(tmp_path, capsys):
    p = plan(tmp_path, n=1500)
    _write_split(tmp_path, p)
    assert (
        main(["data", "regroup", str(tmp_path), "--kinds", "vc,speed", "--records", "30", "--seed", "3"]) == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out == {"out": str(tmp_path / "train_regrouped.jsonl"), "records": 60}
    recs = read(tmp_path / "train_regrouped.jsonl")
    assert [r["instruction"] for r in recs] == [synth.ICL_INSTRUCTIONS["vc"]] * 30 + [
        synth.ICL_INSTRUCTIONS["speed"]
    ] * 30
    assert all((tmp_path / r["audio"]).parent.parent == tmp_path / "clips" for r in recs)  # corpus-relative
    for bad, msg in (
        (["--kinds", "emotion"], "unknown kind 'emotion'"),
        (["--records", "-1"], "count >= 0"),
    ):
        assert main(["data", "regroup", str(tmp_path), *bad]) == 2
        assert msg in capsys.readouterr().err
    assert main(["data", "regroup", str(tmp_path / "nowhere")]) == 2
    assert "is not a synth corpus folder" in capsys.readouterr().err
