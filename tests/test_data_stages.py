"""Each ``data prepare`` stage on its own, on synthetic espeak-ng recordings (no Ray).

Tolerances: VAD region and segment boundaries within 0.25 s of the true turn times (Silero's 32 ms
frames plus the 0.1 s padding, and espeak's soft onsets/offsets).
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from mimo_audio.data.filters import Blocklist, SamplingConfig, Threshold, failed_threshold, parse_thresholds
from mimo_audio.data.ingest import Dropped, IngestConfig, ingest, list_inputs, loudness
from mimo_audio.data.language import LanguageIdentifier
from mimo_audio.data.quality import (
    agreement,
    clipping,
    edit_distance,
    snr_db,
    speech_mask,
    transcript_quality,
)
from mimo_audio.data.recipe import DEFAULT_RECIPE, DEFAULT_STAGES, build, load_recipe, read_yaml
from mimo_audio.data.report import write_report
from mimo_audio.data.speakers import SegmentConfig, SpeakerSegmenter, frame_energy, lowest_energy
from mimo_audio.data.transcribe import Clip, PocketsphinxRecognizer, SidecarRecognizer, token_confidence
from mimo_audio.data.vad import SileroVad, VadConfig, probs_to_regions
from mimo_audio.errors import MimoAudioError
from test_data_corpus import SENTENCES, corpus, dialogue, monologue, needs_tools

TOL = 0.25  # seconds

pytestmark = needs_tools


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return folder, corpus(folder)


@pytest.fixture(scope="module")
def vad():
    return SileroVad(VadConfig())


@pytest.fixture(scope="module")
def segmenter():
    return SpeakerSegmenter(SegmentConfig())


def _ingest(path):
    return ingest(path, IngestConfig())


# ---------------------------------------------------------------------------- ingest
def test_ingest_resamples_to_24k_mono_and_normalises_loudness(data):
    folder, truth = data
    got = _ingest(folder / "talk.wav")
    assert got.sample_rate == 24000 and got.source_rate == 16000 and got.wav.dtype == np.float32
    assert got.duration == pytest.approx(sf.info(folder / "talk.wav").duration, abs=1e-3)
    assert got.bitrate_kbps == pytest.approx(256, rel=0.01)  # 16 kHz · 16 bit PCM
    assert got.loudness_lufs < -26  # the recording is quieter than the target ...
    assert loudness(got.wav, 24000) == pytest.approx(-23.0, abs=0.5)  # ... and is brought to it
    assert np.abs(got.wav).max() <= 0.95 + 1e-6


def test_ingest_keeps_8kbps_mp3_and_drops_low_bitrate_and_corrupt(data):
    folder, _ = data
    mp3 = _ingest(folder / "talk_8k.mp3")
    assert 6 < mp3.bitrate_kbps < 10
    with pytest.raises(Dropped) as low:
        _ingest(folder / "talk_low.c2")  # codec2 1200 bit/s, decoded through ffmpeg
    assert low.value.reason == "low_bitrate" and "1.2" in low.value.detail
    with pytest.raises(Dropped) as bad:
        _ingest(folder / "broken.wav")
    assert bad.value.reason == "decode_failed"


def test_list_inputs_skips_sidecars_and_hidden_files(data):
    folder, _ = data
    (folder / ".hidden.wav").write_bytes(b"")
    names = [p.name for p in list_inputs(folder)]
    assert names == ["broken.wav", "hiss.wav", "talk.wav", "talk_8k.mp3", "talk_low.c2"]


# ---------------------------------------------------------------------------- VAD
def test_vad_regions_match_the_turns_and_ignore_noise(data, vad):
    folder, truth = data
    got = _ingest(folder / "talk.wav")
    regions = vad.regions(got.wav, 24000)
    assert len(regions) == len(truth["talk"])
    for (s, e), t in zip(regions, truth["talk"], strict=True):
        assert abs(s - t["start"]) <= TOL and abs(e - t["end"]) <= TOL
    assert vad.regions(_ingest(folder / "hiss.wav").wav, 24000) == []


def test_hysteresis_merges_short_gaps_and_drops_blips():
    hop = 512 / 16000
    probs = np.zeros(200, np.float32)
    probs[10:40] = 0.9  # speech
    probs[40:44] = 0.1  # 128 ms gap: closed (min_silence 0.3 s)
    probs[44:80] = 0.9
    probs[120:123] = 0.9  # 96 ms blip: dropped (min_speech 0.25 s)
    probs[150:190] = 0.4  # between the two thresholds, never entered
    regions = probs_to_regions(probs, VadConfig(), duration=200 * hop)
    assert regions == [pytest.approx((10 * hop - 0.1, 80 * hop + 0.1))]


# ---------------------------------------------------------------------------- speakers
def test_segments_follow_speaker_turns(data, vad, segmenter):
    folder, truth = data
    got = _ingest(folder / "talk.wav")
    segs = segmenter.segments(got.wav, 24000, vad.regions(got.wav, 24000))
    assert [s.speaker for s in segs] == [0, 1, 0]  # A, B, A: two speakers told apart
    for s, t in zip(segs, truth["talk"], strict=True):
        assert abs(s.start - t["start"]) <= TOL and abs(s.end - t["end"]) <= TOL


def test_same_speaker_turns_merge_and_speakers_stay_apart(tmp_path, vad, segmenter):
    turns = [("A", SENTENCES[0]), ("A", SENTENCES[3]), ("B", SENTENCES[1]), ("B", SENTENCES[4])]
    truth = dialogue(tmp_path, "d", turns, gap=0.5)  # 0.5 s pauses < merge_gap 0.8 s
    got = _ingest(tmp_path / "d.wav")
    segs = segmenter.segments(got.wav, 24000, vad.regions(got.wav, 24000))
    assert [s.speaker for s in segs] == [0, 1]
    assert abs(segs[0].end - truth[1]["end"]) <= TOL and abs(segs[1].start - truth[2]["start"]) <= TOL


def _check_split(folder, vad, max_seconds, sentences):
    seconds = monologue(folder, "long", sentences)
    got = _ingest(folder / "long.wav")
    regions = vad.regions(got.wav, 24000)
    segs = SpeakerSegmenter(SegmentConfig(max_seconds=max_seconds)).segments(got.wav, 24000, regions)
    assert seconds > max_seconds and len(segs) >= 2
    assert all(s.duration <= max_seconds + 1e-6 for s in segs)
    assert all(a.end == b.start for a, b in zip(segs, segs[1:], strict=False))  # split, not trimmed
    assert segs[-1].end - segs[0].start >= 0.95 * sum(e - s for s, e in regions)
    energy = frame_energy(got.wav, 24000)
    for a in segs[:-1]:  # each cut is the quietest 20 ms frame of the second half of its span
        assert a.end == pytest.approx(lowest_energy(energy, a.start + max_seconds / 2, a.start + max_seconds))


def test_long_speech_is_split_at_low_energy_points(tmp_path, vad):
    _check_split(tmp_path, vad, max_seconds=8.0, sentences=4)


def test_long_speech_is_split_under_30_seconds(tmp_path, vad):
    _check_split(tmp_path, vad, max_seconds=30.0, sentences=12)


def test_lowest_energy_finds_the_quiet_frame():
    wav = np.ones(24000, np.float32)
    wav[12000:12480] = 0.0  # 20 ms of silence at 0.5 s
    energy = frame_energy(wav, 24000)
    assert lowest_energy(energy, 0.3, 0.9) == pytest.approx(0.51)


# ---------------------------------------------------------------------------- language
def test_language_identification():
    lid = LanguageIdentifier()
    lang, p = lid.identify(SENTENCES[0])
    assert lang == "en" and p > 0.95
    lang, p = lid.identify("今天天气很好，我们去公园散步吧。")
    assert lang == "zh" and p > 0.95
    assert lid.identify("Bonjour tout le monde, comment allez-vous aujourd'hui ?")[0] == "fr"
    assert lid.identify("hello")[1] < 0.95  # too short to be sure
    assert lid.identify("123 ...") == ("", 0.0)
    with pytest.raises(MimoAudioError, match="xx"):
        LanguageIdentifier(["en", "xx"])


# ---------------------------------------------------------------------------- quality
def test_snr_and_clipping():
    rate, rng = 24000, np.random.default_rng(0)
    wav = rng.normal(0, 0.001, 4 * rate).astype(np.float32)  # noise floor everywhere
    wav[rate : 3 * rate] += 0.1 * np.sin(2 * np.pi * 200 * np.arange(2 * rate) / rate)
    energy = frame_energy(wav, rate)
    mask = speech_mask(energy.shape[0], [(1.0, 3.0)])
    # speech power 0.005, noise 1e-6 → 10·log10(0.005 / 1e-6) ≈ 37 dB
    assert snr_db(energy, mask, 1.0, 3.0) == pytest.approx(37.0, abs=0.5)
    assert snr_db(np.zeros_like(energy), mask, 1.0, 3.0) == -20.0
    x = np.zeros(1000, np.float32)
    x[:25] = 1.0
    assert clipping(x) == pytest.approx(0.025)


def test_agreement_and_transcript_quality():
    assert edit_distance("abcd", "abd") == 1
    assert agreement("The cat sat.", "the cat sat", "en") == 1.0
    assert agreement("the cat sat on the mat", "the dog sat on mat", "en") == pytest.approx(1 - 2 / 6)
    assert agreement("今天天气很好", "今天天很好", "zh") == pytest.approx(1 - 1 / 6)
    assert agreement("", "anything", "en") is None
    assert agreement("a b", "x y z w", "en") == 0.0
    assert transcript_quality(0.9, 0.5) == pytest.approx(0.7)
    assert transcript_quality(None, 0.5) == 0.5 and transcript_quality(None, None) is None


def test_token_confidence_is_the_geometric_mean_probability():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]))
    res = SimpleNamespace(text_logits=logits, text_ids=[0, 1])
    assert token_confidence(res) == pytest.approx(math.sqrt(0.5 * 0.8), rel=1e-5)
    assert token_confidence(SimpleNamespace(text_logits=None, text_ids=[1])) is None


# ---------------------------------------------------------------------------- recognisers
def test_sidecar_recognizer_picks_the_entries_inside_a_segment(data):
    folder, truth = data
    rec = SidecarRecognizer()
    t = truth["talk"]
    clips = [Clip(np.zeros(1), 24000, folder / "talk.wav", x["start"] - 0.1, x["end"] + 0.1) for x in t]
    clips.append(Clip(np.zeros(1), 24000, folder / "talk.wav", 0.0, t[1]["end"] + 0.5))
    out = rec.transcribe(clips)
    assert [o.text for o in out[:3]] == [x["text"] for x in t]
    assert out[3].text == f"{t[0]['text']} {t[1]['text']}" and out[3].confidence is None
    assert rec.transcribe([Clip(np.zeros(1), 24000, folder / "hiss.wav", 0, 1)])[0].text == ""


def test_pocketsphinx_gives_a_second_english_transcript(data):
    folder, truth = data
    got = _ingest(folder / "talk.wav")
    t = truth["talk"][0]
    clip = Clip(got.wav[int(t["start"] * 24000) : int(t["end"] * 24000)], 24000, folder / "talk.wav", 0, 1)
    (hyp,) = PocketsphinxRecognizer().transcribe([clip])
    assert len(hyp.text.split()) >= 3 and hyp.confidence is None


# ---------------------------------------------------------------------------- filters and sampling
def test_blocklist_matches_whole_words_and_cjk_substrings(tmp_path):
    user = tmp_path / "block.txt"
    user.write_text("# company terms\nsecret project\n\n敏感词\n")
    bl = Blocklist.from_config(builtin=True, file=str(user))
    assert bl.match("what the FUCK was that") == "fuck"
    assert bl.match("the grapes and drapes") is None  # "rape" only as a whole word
    assert bl.match("about the Secret Project today") == "secret project"
    assert bl.match("这是一个敏感词测试") == "敏感词"
    assert Blocklist.from_config(builtin=False, file=None).match("fuck") is None
    with pytest.raises(MimoAudioError, match="not found"):
        Blocklist.from_config(builtin=True, file=str(tmp_path / "missing.txt"))


def test_thresholds_and_quality_weighted_repeats():
    th = parse_thresholds({"min_snr_db": 10, "max_clipping": 0.01}, "signal")
    assert th == {"snr_db": Threshold(min=10.0), "clipping": Threshold(max=0.01)}
    assert failed_threshold({"snr_db": 12, "clipping": 0.0}, th) is None
    assert failed_threshold({"snr_db": 8, "clipping": 0.5}, th) == "snr_db"
    assert failed_threshold({"snr_db": None, "clipping": 0.5}, th) == "clipping"  # missing passes
    with pytest.raises(MimoAudioError, match="min_<score>"):
        parse_thresholds({"snr": 1}, "signal")
    sampling = SamplingConfig(3, parse_thresholds({"min_snr_db": 25, "min_transcript_quality": 0.8}, "s"))
    assert sampling.repeats({"snr_db": 30, "transcript_quality": 0.9}) == 3
    assert sampling.repeats({"snr_db": 30, "transcript_quality": 0.5}) == 1
    assert sampling.repeats({"snr_db": 30, "transcript_quality": None}) == 1  # unknown is not high
    assert SamplingConfig().repeats({"snr_db": 99}) == 1


# ---------------------------------------------------------------------------- recipe
def test_shipped_recipe_equals_the_built_in_defaults():
    shipped = build(read_yaml(DEFAULT_RECIPE))
    builtin = build({"stages": DEFAULT_STAGES})
    assert shipped.stages == builtin.stages == DEFAULT_STAGES
    assert shipped.run == builtin.run and shipped.models == builtin.models
    assert (shipped.ingest, shipped.vad, shipped.segment) == (builtin.ingest, builtin.vad, builtin.segment)
    for stage, options in builtin.sections.items():
        assert shipped.sections[stage] == {**options, **{k: shipped.sections[stage][k] for k in options}}
    assert shipped.thresholds["signal"] == {"snr_db": Threshold(min=5.0), "clipping": Threshold(max=0.01)}


@pytest.mark.parametrize(
    "override, message",
    [
        ({"vad": {"treshold": 0.5}}, "unknown key vad.treshold"),
        ({"stages": ["signal", "denoise"]}, "unknown stage 'denoise'"),
        ({"stages": ["language", "transcribe"]}, "needs 'transcribe' before it"),
        ({"signal": {"min_agreement": 0.5}}, "computes no score 'agreement'"),
        ({"surprise": {}}, "unknown section 'surprise'"),
        ({"segment": {"max_seconds": "long"}}, "must be a number"),
        ({"sample": {"high_quality": {"good_snr": 1}}}, "min_<score>"),
    ],
)
def test_bad_recipes_fail_with_one_line(override, message):
    with pytest.raises(MimoAudioError, match=message) as e:
        load_recipe(None, override)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------- report
def test_report_counts_reasons_hours_and_draws_histograms(tmp_path):
    seg = {"duration": 1800.0, "language": "en", "repeats": 3, "dropped": None, "scores": {"snr_db": 30.0}}
    markers = [
        {"reason": None, "duration": 4000.0, "shard": "shard-a.tar", "samples": 4, "segments": [
            seg, {**seg, "language": "zh", "repeats": 1}, {**seg, "dropped": "snr_db", "scores": {"snr_db": 1.0}},
        ]},
        {"reason": "low_bitrate", "duration": 10.0, "shard": None, "samples": 0, "segments": []},
    ]  # fmt: skip
    summary = write_report(tmp_path, markers)
    assert summary["inputs_dropped"] == {"low_bitrate": 1} and summary["segments_dropped"] == {"snr_db": 1}
    assert summary["hours_per_language"] == {"en": 0.5, "zh": 0.5} and summary["hours_written"] == 2.0
    assert summary["scores"]["snr_db"]["count"] == 3
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert (tmp_path / "plots" / "snr_db.png").read_bytes()[:4] == b"\x89PNG"
    assert "| low_bitrate | 1 |" in (tmp_path / "report.md").read_text()
