"""Evaluation metrics against hand-computed values: text normalisation, WER/CER, STOI, PESQ, MFCC,
DTW identification on espeak-ng speech, speaker similarity, MCQ answer extraction, bitrate."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from mimo_audio.eval.answers import answer_index, extract_choice
from mimo_audio.eval.metrics import (
    cer,
    dtw_distance,
    dtw_identify,
    edit_counts,
    mfcc,
    normalize_text,
    pesq_nb,
    pesq_wb,
    speaker_similarity,
    stoi,
    wer,
)
from mimo_audio.eval.suites.tokenizer import bitrate

from conftest import clip_path

SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
]


def espeak(text: str, path: Path, *extra: str) -> np.ndarray:
    """Render ``text`` with espeak-ng and return it at 24 kHz."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (scripts/test.sh installs it)")
    subprocess.run(["espeak-ng", "-v", "en-us", *extra, "-w", str(path), text], check=True)
    wav, sr = sf.read(str(path), dtype="float32")
    return soxr.resample(wav, sr, 24000).astype(np.float32)


def fixture_clip(name: str = "speech_a") -> tuple[np.ndarray, int]:
    wav, sr = sf.read(str(clip_path(name)), dtype="float32")
    return wav, sr


# ------------------------------------------------------------------------------------------ text
def test_normalize_english_and_mandarin():
    assert normalize_text("Hello, World!  Don't STOP.", "en") == "hello world dont stop"
    assert normalize_text("Ｈｅｌｌｏ，ｗｏｒｌｄ！ １２", "en") == "hello world 12"  # full-width forms
    assert normalize_text("well-known 21 %", "en") == "well known 21"
    assert normalize_text("你好，世界。「今天」21 度！", "zh") == "你好世界今天21度"
    assert normalize_text("《红楼梦》、水浒传？", "zh") == "红楼梦水浒传"
    with pytest.raises(ValueError, match="unknown language"):
        normalize_text("x", "fr")


def test_wer_hand_computed():
    # ref 4 words; hyp: cat→bat and on→now (2 substitutions), mat inserted → 3/4
    assert wer("the cat sat on", "the bat sat now mat", "en") == pytest.approx(3 / 4)
    assert wer("a b c d", "a x c", "en") == pytest.approx(2 / 4)  # one sub, one del
    assert wer("Hello, world!", "hello world", "en") == 0.0  # normalisation removes the difference
    assert wer("Hello, world!", "hello world", "en", normalize=False) == 1.0
    # corpus level: (1 + 1) errors over (2 + 1) reference words, not the mean of per-pair rates
    assert wer(["a b", "c"], ["a", "c d"], "en") == pytest.approx(2 / 3)
    assert wer("", "", "en") == 0.0 and wer("", "extra words", "en") == 2.0


def test_cer_mandarin_hand_computed():
    # 今天天气很好 (6 chars) vs 今天天汽很好啊: 1 substitution + 1 insertion → 2/6
    assert cer("今天天气很好", "今天天汽很好啊", "zh") == pytest.approx(2 / 6)
    # spaces and punctuation are not characters: a segmented, punctuated hypothesis is perfect
    assert cer("而对楼市成交抑制作用最大的限购", "而 对 楼市 成交，抑制 作用 最 大 的 限 购。", "zh") == 0.0
    assert cer(["你好", "世界"], ["你", "世界人"], "zh") == pytest.approx(2 / 4)
    counts = edit_counts("abc", "abd", "en", unit="char")
    assert (counts.substitutions, counts.deletions, counts.insertions, counts.length) == (1, 0, 0, 3)


# ---------------------------------------------------------------------------------------- signal
def test_stoi_identical_is_one_and_noise_lowers_it():
    wav, sr = fixture_clip()
    assert stoi(wav, wav, sr) == pytest.approx(1.0, abs=1e-6)
    noisy = wav + 0.3 * np.random.default_rng(0).standard_normal(wav.size).astype(np.float32) * wav.std()
    assert 0.0 < stoi(wav, noisy, sr) < 0.99


def test_pesq_degraded_lower_than_clean():
    wav, sr = fixture_clip()
    noisy = wav + 0.5 * np.random.default_rng(1).standard_normal(wav.size).astype(np.float32) * wav.std()
    for fn in (pesq_nb, pesq_wb):
        clean, degraded = fn(wav, wav, sr), fn(wav, noisy, sr)
        assert 4.0 < clean <= 4.65
        assert 1.0 <= degraded < clean - 1.0


def test_mfcc_shape_and_finite():
    wav, sr = fixture_clip()
    feats = mfcc(wav, sr)
    frames_16k = round(wav.size * 16000 / sr)
    assert feats.shape == (1 + (frames_16k - 400) // 160, 13)
    assert feats.dtype == np.float32 and np.isfinite(feats).all()
    assert mfcc(np.zeros(100, np.float32), 24000, n_mfcc=20).shape == (1, 20)  # short clip: one frame
    silent = mfcc(np.zeros(24000, np.float32), 24000)
    assert np.isfinite(silent).all()


def test_dtw_distance_basics():
    a = np.arange(20, dtype=np.float64).reshape(10, 2)
    assert dtw_distance(a, a) == 0.0
    stretched = np.repeat(a, 2, axis=0)  # the same path at half speed aligns at zero cost
    assert dtw_distance(a, stretched) == pytest.approx(0.0)
    assert dtw_distance(a, a + 1.0) == pytest.approx(np.sqrt(2.0) * 10 / 20)  # diagonal path, √2 per frame
    with pytest.raises(ValueError):
        dtw_distance(a, np.zeros((3, 5)))


def test_dtw_identifies_espeak_sentences(tmp_path):
    refs = [espeak(s, tmp_path / f"ref{i}.wav") for i, s in enumerate(SENTENCES)]
    # outputs: the same sentences in another voice, rate and pitch, in shuffled order
    order = [2, 0, 3, 1]
    outs = [espeak(SENTENCES[k], tmp_path / f"out{k}.wav", "-s", "140", "-p", "70") for k in order]
    assert dtw_identify(outs, refs) == order
    # precomputed feature matrices are accepted too
    assert dtw_identify([mfcc(o, 24000) for o in outs], [mfcc(r, 24000) for r in refs]) == order


def test_speaker_similarity_range():
    a, sr = fixture_clip("speech_a")
    same = speaker_similarity(a, a, sr)
    assert same == pytest.approx(1.0, abs=1e-4)
    noise = 0.1 * np.random.default_rng(2).standard_normal(sr * 2).astype(np.float32)
    other = speaker_similarity(a, noise, sr)
    assert -1.0 <= other < same
    assert np.isnan(speaker_similarity(a, np.zeros(sr, np.float32), sr))  # silence has no speaker


# ------------------------------------------------------------------------------ answers, bitrate
CHOICES = ["a dog barking", "a cat", "hot dog", "birds"]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("B", 1),
        ("(B)", 1),
        ("b.", 1),
        ("Answer: B", 1),
        ("the answer is b)", 1),
        ("The correct option is (d).", 3),
        ("I think the answer is B. Wait, the answer is C.", 2),  # last statement wins
        ("the answer is a cat", 1),  # a lower-case 'a' before a word is an article, not a letter
        ("It sounds like a cat to me.", 1),  # the choice text itself
        ("hot dog", 2),  # 'dog' inside the longer 'hot dog' does not count for another choice
        ("A dog barks. (D) fits best", 3),  # plain capital 'A' in prose is not a letter mark
        ("E", None),  # no fifth choice
        ("no idea", None),
        ("<think>maybe (A)</think> the answer is C", 2),  # reasoning is ignored
    ],
)
def test_extract_choice(reply, expected):
    assert extract_choice(reply, CHOICES) == expected


def test_answer_index_forms():
    assert answer_index("c", CHOICES) == 2 and answer_index(3, CHOICES) == 3
    assert answer_index("A Cat", CHOICES) == 1
    with pytest.raises(ValueError):
        answer_index("F", CHOICES)
    with pytest.raises(ValueError):
        answer_index(4, CHOICES)


def test_bitrate_of_official_codebooks():
    sizes = [1024, 1024] + [128] * 18
    assert bitrate(sizes, 25.0, 8) == pytest.approx(25 * (10 + 10 + 6 * 7))  # 1550 bit/s
    assert bitrate(sizes, 25.0, 1) == pytest.approx(250.0)
