"""Blended espeak-ng voices (``data synth --blend-voices``) and ``--units``: blend names and variant
files are pure functions of their inputs, parents share a gender and come from the train split, the
held-out split never changes, blended clips render with their own variant (and word timings follow
it), and bad options fail with one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from mimo_audio.cli import main
from mimo_audio.data import synth, synth_audio, synth_voices
from mimo_audio.errors import MimoAudioError

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


@pytest.fixture(autouse=True)
def _private_voice_data(tmp_path, monkeypatch):
    monkeypatch.setenv("MIMO_ESPEAK_DATA", str(tmp_path / "espeak"))


def _plan(tmp_path, **kw) -> synth.Plan:
    return synth.build_plan(synth.SynthOptions(out=tmp_path, utterances=80, progress=False, **kw))


def _numbers(text: str) -> dict[str, list[int]]:
    return synth_voices._values(text.splitlines())


# ---------------------------------------------------------------------------- planning (no audio)
def test_blend_speakers_are_deterministic_same_gender_mixes_of_train_variants():
    everyone = synth_audio.speakers(0)
    train = everyone[9:]
    blends = synth_audio.blend_speakers(train, 40, 0)
    assert blends == synth_audio.blend_speakers(train, 40, 0)
    assert blends != synth_audio.blend_speakers(train, 40, 1)
    assert len({b.variant for b in blends}) == 40 and all(b.blended for b in blends)
    train_variants = {s.variant for s in train}
    for b in blends:
        a, c, weight = synth_voices.parse_blend(b.variant)
        assert a != c and {a, c} <= train_variants
        assert synth_audio.VARIANTS[a] == synth_audio.VARIANTS[c] == b.gender
        assert synth_voices.WEIGHTS[0] <= weight <= synth_voices.WEIGHTS[1]
        assert 30 <= b.pitch <= 70 and b.accent in synth_audio.EN_ACCENTS
    assert {b.gender for b in blends} == {"M", "F"}
    assert synth_audio.blend_speakers(train, 0, 0) == []
    with pytest.raises(MimoAudioError, match="same gender"):
        synth_audio.blend_speakers([train[0]], 1, 0)


def test_blends_join_the_train_split_only_and_leave_the_test_split_unchanged(tmp_path):
    plain, mixed = _plan(tmp_path), _plan(tmp_path, blend_voices=50)
    assert mixed.records["test"] == plain.records["test"]
    assert mixed.speakers["test"] == plain.speakers["test"]
    assert mixed.speakers["train"][: len(plain.speakers["train"])] == plain.speakers["train"]
    assert len(mixed.speakers["train"]) == len(plain.speakers["train"]) + 50
    used = {c.speaker.variant for c in mixed.clips.values()}
    assert any(synth_voices.is_blend(v) for v in used)
    assert mixed.records == _plan(tmp_path, blend_voices=50).records


def test_units_option_draws_only_those_kinds(tmp_path):
    p = _plan(tmp_path, units=("vc",), blend_voices=10)
    for split in ("train", "test"):
        recs = p.records[split]
        assert recs["vc"] and not any(recs[k] for k in ("speed", "denoise", "translate", "continuation"))
        assert not recs["instruct_tts"]
        # every clip of a vc unit is clean and neutral, so each has an asr, a tts and a tokenizer record
        assert len(recs["asr"]) == len(recs["tts"]) == len(recs["tokenizer"])
    for bad in (("vc", "karaoke"), ("speech",)):
        with pytest.raises(MimoAudioError, match="--units"):
            _plan(tmp_path, units=bad)
    with pytest.raises(MimoAudioError, match="both languages"):
        _plan(tmp_path, units=("translate",), languages=("en",))
    with pytest.raises(MimoAudioError, match="--blend-voices"):
        _plan(tmp_path, blend_voices=-1)


def test_blend_variant_text_mixes_its_parents():
    name = synth_voices.blend_name("norbert", "john", 30, 7)
    text = synth_voices.blend_variant_text(name)
    assert text == synth_voices.blend_variant_text(name)
    assert text != synth_voices.blend_variant_text(synth_voices.blend_name("norbert", "john", 30, 8))
    lines = text.splitlines()
    assert lines[:2] == ["language variant", f"name {synth_voices.blend_file(name)}"]
    got = _numbers(text)
    assert {f"formant {i}" for i in range(9)} <= set(got) and len(got["pitch"]) == 2
    parents = [_numbers("\n".join(synth_voices._variant_lines(v))) for v in ("norbert", "john")]
    # norbert's formant 2 strength is 50, john's 100 (pitch and formant frequencies are jittered)
    assert parents[0]["formant 2"][1] == 50 and parents[1]["formant 2"][1] == 100
    assert got["formant 2"][1] == round(0.3 * 50 + 0.7 * 100)
    for key in got:
        if key.startswith("formant"):
            assert got[key][0] > 0 and all(0 <= x <= 400 for x in got[key])
    # every other line of the heavier parent (john, 70 %) comes along, once
    assert "tone 600 255 1200 255 2000 255" in lines and sum(x.startswith("name") for x in lines) == 1
    assert synth_voices.blend_file(name).startswith("mx") and len(synth_voices.blend_file(name)) == 10
    for bad in ("mix-john", "john", "mix-a-b-x-1", "mix-a-b-120-1"):
        with pytest.raises(MimoAudioError):
            synth_voices.parse_blend(bad)
    with pytest.raises(MimoAudioError, match="no voice variant"):
        synth_voices.blend_variant_text("mix-john-nobody-50-0")
    with pytest.raises(MimoAudioError, match="unknown espeak voice variant"):
        synth_audio.gender_of("nobody")


# ---------------------------------------------------------------------------- espeak-ng
@needs_espeak
def test_voice_data_dir_is_built_once_and_never_changed(tmp_path):
    name = synth_voices.blend_name("f2", "steph", 60, 0)
    folder = synth_voices.voice_data_dir(name)
    assert folder.parent == tmp_path / "espeak"
    variant = folder / "espeak-ng-data" / "voices" / "!v" / synth_voices.blend_file(name)
    assert variant.read_text() == synth_voices.blend_variant_text(name)
    system = synth_voices.system_data_dir()
    assert (folder / "espeak-ng-data" / "phontab").resolve() == (system / "phontab").resolve()
    assert (folder / "espeak-ng-data" / "voices" / "!v" / "steph").is_symlink()
    stamp = variant.stat().st_mtime_ns
    assert synth_voices.voice_data_dir(name) == folder and variant.stat().st_mtime_ns == stamp
    # the folder is named by the text: other blend rules would get their own folder
    other = synth_voices.voice_data_dir(synth_voices.blend_name("f2", "steph", 61, 0))
    assert other != folder and other.parent == folder.parent
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp folder left


@needs_espeak
def test_blended_clip_renders_with_its_own_variant():
    blend = synth_audio.Speaker(synth_voices.blend_name("m3", "benjamin", 30, 0), 50, "en-gb")
    parent = synth_audio.Speaker("benjamin", 50, "en-gb")
    style = synth_audio.Style(wpm=170)
    text = "The red bus stops near the old bridge."
    wav = synth_audio.render(text, "en", blend, style)
    assert wav.ndim == 1 and wav.size > synth_audio.SAMPLE_RATE and np.isfinite(wav).all()
    assert np.max(np.abs(wav)) == pytest.approx(synth_audio.AMPLITUDES["normal"], rel=1e-3)
    again = synth_audio.render(text, "en", blend, style)
    np.testing.assert_array_equal(wav, again)
    other = synth_audio.render(text, "en", parent, style)
    n = min(wav.size, other.size)
    assert wav.size != other.size or not np.allclose(wav[:n], other[:n], atol=1e-3)
    # espeak-ng 1.51 drops a variant given on `en-gb`, so a British blend speaks as `en+<blend>`
    assert blend.voice("en") == f"en+{synth_voices.blend_file(blend.variant)}"
    assert blend.voice("zh") == f"{synth_audio.ZH_VOICE}+{synth_voices.blend_file(blend.variant)}"
    # whispering uses espeak's own whisper variant (no private data folder)
    assert blend.data_path(whisper=True) is None and blend.data_path() is not None
    assert synth_audio.render(text, "en", blend, synth_audio.Style(whisper=True)).size > 0
    zh = synth_audio.render("我们明天去公园。", "zh", blend, style)
    assert zh.size > synth_audio.SAMPLE_RATE // 2


@needs_espeak
def test_word_starts_follow_the_blend_between_plain_voices():
    blend = synth_audio.Speaker(synth_voices.blend_name("f3", "linda", 55, 1), 45, "en-us")
    plain = synth_audio.Speaker("f3", 45, "en-us")
    style = synth_audio.Style(wpm=150)
    text = "Please open the window before the meeting starts."
    first = synth_audio.word_starts(text, "en", blend, style)
    base = synth_audio.word_starts(text, "en", plain, style)
    # the library is initialised again on each switch of data folder; espeak's event times may move
    # by a millisecond between runs
    for speaker, want in ((blend, first), (plain, base)):
        got = synth_audio.word_starts(text, "en", speaker, style)
        assert [o for o, _ in got] == [o for o, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=0.005)
    assert [o for o, _ in first] == [o for o, _ in base]
    dur = synth_audio.render(text, "en", blend, style).size / synth_audio.SAMPLE_RATE
    assert first[-1][1] < dur - 0.1


@needs_espeak
def test_cli_synth_with_blends_and_units(tmp_path, capsys):
    out = tmp_path / "c"
    argv = ["data", "synth", "--out", str(out), "--utterances", "12", "--quiet"]
    assert main([*argv, "--units", "vc", "--blend-voices", "30", "--jobs", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["clips"] >= 12
    meta = json.loads((out / "meta.json").read_text())
    assert meta["options"]["blend_voices"] == 30 and meta["options"]["units"] == ["vc"]
    assert meta["records"]["train_vc"] > 0 and meta["records"]["train_speed"] == 0
    assert len(meta["speakers"]["train"]) == len(synth_audio.VARIANTS) - 9 + 30
    held_out = synth.build_plan(synth.SynthOptions(out=out, utterances=12, progress=False)).speakers["test"]
    assert meta["speakers"]["test"] == held_out
    plain = tmp_path / "p"
    assert main(["data", "synth", "--out", str(plain), "--utterances", "4", "--quiet"]) == 0
    capsys.readouterr()
    opts = json.loads((plain / "meta.json").read_text())["options"]
    assert "blend_voices" not in opts and "units" not in opts  # default corpora keep their meta
    for bad in (
        ["--units", "vc,sing"],
        ["--units", " , "],
        ["--blend-voices", "-2"],
        ["--units", "translate", "--languages", "en"],
    ):
        assert main(["data", "synth", "--out", str(tmp_path / "d"), *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("mimo-audio: error:")
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").rglob("*.wav"))
