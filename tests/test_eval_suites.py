"""Every evaluation suite end to end on tiny manifests (fixture checkpoints: random weights, so the
pipeline, files and metric ranges are checked, not quality), and bad-manifest handling with resume."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import soxr

from mimo_audio.cli import main
from mimo_audio.errors import MimoAudioError
from mimo_audio.eval import make_suite, run_suite
from mimo_audio.eval.runner import settings_hash

from conftest import PARITY_DIR, clip_path

MODEL = ["--model", str(PARITY_DIR / "model"), "--tokenizer", str(PARITY_DIR / "tokenizer")]
SHORT = ["--max-new-steps", "4", "--seed", "0", "--quiet"]
SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
]


def write_jsonl(path: Path, lines: list[object]) -> Path:
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)) + "\n" for x in lines),
        encoding="utf-8",
    )
    return path


def eval_cli(capsys, *argv: str) -> tuple[int, str]:
    rc = main(["eval", *argv])
    return rc, capsys.readouterr().err


def assert_report(out: Path) -> dict:
    for name in ("results.json", "report.md", "per_category.png", "histogram.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "per_category.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*.tmp")) and not list(
        out.glob(".results.json.*")
    )  # atomic writes left no temp
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert "## Metrics" in (out / "report.md").read_text(encoding="utf-8")
    return results


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """A folder of fixture clips and espeak-ng renderings (24 kHz) of SENTENCES at two voices."""
    d = tmp_path_factory.mktemp("clips")
    for name in ("speech_a", "speech_b", "speech_c"):
        shutil.copy(clip_path(name), d / f"{name}.wav")
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (scripts/test.sh installs it)")
    for i, text in enumerate(SENTENCES):
        for tag, extra in (("ref", []), ("alt", ["-s", "140", "-p", "70"])):
            raw = d / f"{tag}{i}_raw.wav"
            subprocess.run(["espeak-ng", "-v", "en-us", *extra, "-w", str(raw), text], check=True)
            wav, sr = sf.read(str(raw), dtype="float32")
            sf.write(str(d / f"{tag}{i}.wav"), soxr.resample(wav, sr, 24000), 24000)
    return d


# ------------------------------------------------------------------------------------------ asr
def test_asr_suite_cli(clips, tmp_path, capsys):
    data = write_jsonl(
        tmp_path / "asr.jsonl",
        [
            {"id": "a", "audio": str(clips / "speech_a.wav"), "text": "Hello world.", "language": "en"},
            {"id": "b", "audio": str(clips / "speech_b.wav"), "text": "你好，世界。", "language": "zh"},
            {"id": "c", "audio": str(clips / "ref0.wav"), "text": SENTENCES[0], "language": "en"},
        ],
    )
    out = tmp_path / "out"
    rc, err = eval_cli(capsys, "asr", "--data", str(data), "--out", str(out), *MODEL, *SHORT)
    assert rc == 0, err
    res = assert_report(out)
    assert res["complete"] and res["counts"] == {"items": 3, "errors": 0, "computed": 3}
    assert [r["id"] for r in res["items"]] == ["a", "b", "c"]
    for r in res["items"]:
        assert isinstance(r["hypothesis"], str) and r["errors"] >= 0 and r["error_rate"] >= 0
    en = [r for r in res["items"] if r["language"] == "en"]
    assert res["aggregate"]["wer"] == pytest.approx(
        sum(r["errors"] for r in en) / sum(r["ref_len"] for r in en)
    )
    assert res["items"][1]["ref_len"] == 4  # 你好世界: CER counts characters, punctuation removed
    assert res["items"][1]["char_len"] == 4 and res["items"][0]["char_len"] == len("hello world")
    items = res["items"]
    assert res["aggregate"]["char_error_rate"] == pytest.approx(
        sum(r["char_errors"] for r in items) / sum(r["char_len"] for r in items)
    )
    assert res["per_category"]["en"]["char_error_rate"] == pytest.approx(
        sum(r["char_errors"] for r in en) / sum(r["char_len"] for r in en)
    )
    assert set(res["per_category"]) == {"en", "zh"}
    assert "eval asr" not in err  # --quiet: no progress bar


# ------------------------------------------------------------------------------------------ tts
def test_tts_suite(clips, tmp_path):
    data = write_jsonl(
        tmp_path / "tts.jsonl",
        [
            {
                "id": f"s{i}",
                "text": t,
                "language": "en",
                "reference_audio": str(clips / f"ref{i}.wav"),
                "prompt_audio": str(clips / "speech_a.wav"),
                "category": "harvard",
            }
            for i, t in enumerate(SENTENCES)
        ],
    )
    suite = make_suite(
        "tts",
        model=str(PARITY_DIR / "model"),
        tokenizer=str(PARITY_DIR / "tokenizer"),
        gen={"max_new_steps": 4, "seed": 0},
        instruction="calm",
    )
    res = run_suite(suite, data, tmp_path / "out", progress=False)
    assert_report(tmp_path / "out")
    assert len(res.items) == 3 and not res.errors
    for r in res.items:
        assert (tmp_path / "out" / r["output_audio"]).is_file()
        assert 0 < r["duration"] <= 4 * 0.16 + 1.0
        silent = np.abs(sf.read(str(tmp_path / "out" / r["output_audio"]))[0]).max() <= 1e-5
        assert np.isnan(r["speaker_similarity"]) if silent else -1.0 <= r["speaker_similarity"] <= 1.0
        assert r["duration_ratio"] > 0 and r["error_rate"] is not None
        assert isinstance(r["dtw_identified"], bool)
        assert r["dtw_nearest"] in ({None} if silent else {"s0", "s1", "s2"})
        assert not (silent and r["dtw_identified"])  # silence is never identified
    agg = res.aggregate
    assert 0.0 <= agg["dtw_identification"] <= 1.0 and "wer" in agg


def test_tts_dtw_identification_with_real_renderings(clips, tmp_path):
    """The DTW step on outputs that really are the sentences: every item is identified."""
    from mimo_audio.eval.suites.tts import TtsSuite

    suite = TtsSuite(handle=None, judge=None)
    out = tmp_path / "o"
    out.mkdir()
    records = []
    for k in (2, 0, 1):
        shutil.copy(clips / f"alt{k}.wav", out / f"alt{k}.wav")
        records.append(
            {"id": f"s{k}", "output_audio": f"alt{k}.wav", "reference_audio": str(clips / f"ref{k}.wav")}
        )
    suite.finalize(records, out)
    assert [r["dtw_nearest"] for r in records] == ["s2", "s0", "s1"]
    sf.write(str(out / "alt0.wav"), np.zeros(24000, np.float32), 24000)  # a silent output
    suite.finalize(records, out)
    assert [(r["dtw_nearest"], r["dtw_identified"]) for r in records][1] == (None, False)
    assert suite.aggregate(records)["dtw_identification"] == pytest.approx(2 / 3)


def test_dtw_candidates_are_capped_and_unbiased():
    from mimo_audio.eval.suites.tts import TtsSuite

    suite = TtsSuite(handle=None, judge=None, dtw_distractors=3)
    ids = [f"s{i}" for i in range(10)]
    for own in range(10):
        cands = suite._candidates(own, ids)
        assert len(cands) == 4 and own in cands and len(set(cands)) == 4
        assert cands == suite._candidates(own, ids)  # deterministic
    assert not all(suite._candidates(own, ids)[0] == own for own in range(10))  # ties do not favour "own"


def test_pocketsphinx_judge(clips):
    from mimo_audio.eval.judges import make_judge

    judge = make_judge("pocketsphinx", None)
    wav = sf.read(str(clips / "ref0.wav"), dtype="float32")[0]
    text, skipped = judge.transcribe([wav, wav], 24000, ["en", "zh"], ["a", "b"])
    assert isinstance(text, str) and skipped is None  # English only


def test_seedtts_meta_lst_read_directly(clips, tmp_path):
    meta = tmp_path / "meta.lst"
    shutil.copy(clips / "speech_a.wav", tmp_path / "prompt.wav")
    meta.write_text(
        f"u1|prompt words|prompt.wav|{SENTENCES[0]}\nu2|提示|prompt.wav|今天天气很好\n", encoding="utf-8"
    )
    suite = make_suite(
        "tts",
        model=str(PARITY_DIR / "model"),
        tokenizer=str(PARITY_DIR / "tokenizer"),
        gen={"max_new_steps": 2, "seed": 0},
        judge="none",
    )
    res = run_suite(suite, meta, tmp_path / "out", progress=False)
    assert [(r["id"], r["language"]) for r in res.items] == [("u1", "en"), ("u2", "zh")]
    assert all(r["error_rate"] is None and "speaker_similarity" in r for r in res.items)


# ------------------------------------------------------------------------------------ tokenizer
def test_tokenizer_suite_cli(clips, tmp_path, capsys):
    data = write_jsonl(
        tmp_path / "tok.jsonl",
        [
            {"audio": "speech_a.wav", "language": "en"},
            {"audio": "speech_c.wav", "category": "other"},
        ],
    )
    shutil.copy(clips / "speech_a.wav", tmp_path / "speech_a.wav")
    shutil.copy(clips / "speech_c.wav", tmp_path / "speech_c.wav")
    out = tmp_path / "out"
    rc, err = eval_cli(
        capsys,
        "tokenizer",
        "--data",
        str(data),
        "--out",
        str(out),
        "--tokenizer",
        str(PARITY_DIR / "tokenizer"),
        "--codebooks",
        "4",
        "--quiet",
    )
    assert rc == 0, err
    res = assert_report(out)
    assert res["settings"]["codebooks"] == 4
    assert res["aggregate"]["bitrate_bps"] == pytest.approx(25 * (10 + 10 + 7 + 7))
    for r in res["items"]:
        assert 0.0 <= r["stoi"] <= 1.0 or r["stoi"] is None
        for key in ("pesq_nb", "pesq_wb"):
            assert r[key] is None or 0.9 <= r[key] <= 4.7
        assert -1.0 <= r["speaker_similarity"] <= 1.0
        wav, sr = sf.read(str(out / r["output_audio"]))
        assert sr == 24000 and r["frames"] * 960 == wav.size
    assert set(res["per_category"]) == {"en", "other"}
    # the reconstruction is exactly what `mimo-audio reconstruct` writes
    ref_out = tmp_path / "reconstructed.wav"
    rc = main(
        [
            "reconstruct",
            "--tokenizer",
            str(PARITY_DIR / "tokenizer"),
            "--codebooks",
            "4",
            "--quiet",
            str(tmp_path / "speech_a.wav"),
            str(ref_out),
        ]
    )
    assert rc == 0
    first = next(r for r in res["items"] if r["audio"].endswith("speech_a.wav"))
    np.testing.assert_array_equal(sf.read(str(out / first["output_audio"]))[0], sf.read(str(ref_out))[0])


# ---------------------------------------------------------------------------------- vc, fewshot
@pytest.mark.parametrize("suite", ["vc", "fewshot"])
def test_fewshot_suites(clips, tmp_path, suite):
    examples = [
        {
            "input_audio": str(clips / "speech_a.wav"),
            "output_audio": str(clips / "speech_b.wav"),
            "output_transcription": "A raging fire was in his eyes.",
        }
    ]
    data = write_jsonl(
        tmp_path / "fs.jsonl",
        [
            {
                "id": "x",
                "audio": str(clips / "speech_c.wav"),
                "text": "hello",
                "language": "en",
                "examples": examples,
            },
            {
                "id": "y",
                "audio": str(clips / "ref1.wav"),
                "text": SENTENCES[1],
                "language": "en",
                "examples": examples,
                "preset": "speed",
                "target_audio": str(clips / "speech_b.wav"),
            },
        ],
    )
    s = make_suite(
        suite,
        model=str(PARITY_DIR / "model"),
        tokenizer=str(PARITY_DIR / "tokenizer"),
        gen={"max_new_steps": 4, "seed": 0, "best_of": 1 if suite == "vc" else 2},  # best-of-N: its own tests
    )
    res = run_suite(s, data, tmp_path / "out", progress=False)
    assert_report(tmp_path / "out")
    assert [r["preset"] for r in res.items] == (["vc", "vc"] if suite == "vc" else ["vc", "speed"])
    for r in res.items:
        assert -1 <= r["similarity_target"] <= 1 and -1 <= r["similarity_source"] <= 1
        assert r["closer_to_target"] == (r["similarity_target"] > r["similarity_source"])
        assert r["error_rate"] is not None and r["hypothesis"] is not None
    share = sum(r["closer_to_target"] for r in res.items) / 2
    assert res.aggregate["closer_to_target"] == share
    assert set(res.per_category) == ({"vc"} if suite == "vc" else {"vc", "speed"})


@pytest.mark.slow
def test_fewshot_every_preset_with_pocketsphinx(clips, tmp_path):
    from mimo_audio.api import FEWSHOT_PRESETS

    examples = [{"input_audio": str(clips / "alt0.wav"), "output_audio": str(clips / "ref0.wav")}]
    lines = [
        {
            "id": p,
            "audio": str(clips / f"alt{i % 3}.wav"),
            "text": SENTENCES[i % 3],
            "language": "en",
            "examples": examples,
            "preset": p,
        }
        for i, p in enumerate(FEWSHOT_PRESETS)
    ]
    data = write_jsonl(tmp_path / "fs.jsonl", lines)
    s = make_suite(
        "fewshot",
        model=str(PARITY_DIR / "model"),
        tokenizer=str(PARITY_DIR / "tokenizer"),
        gen={"max_new_steps": 8, "seed": 0},
        judge="pocketsphinx",
    )
    res = run_suite(s, data, tmp_path / "out", batch_size=5, progress=False)
    assert set(res.per_category) == set(FEWSHOT_PRESETS) and not res.errors
    assert all(isinstance(r["hypothesis"], str) for r in res.items)


# ------------------------------------------------------------------------------------------ mcq
class Scripted:
    """An answerer replying from a script keyed by item id; counts the items it was asked."""

    def __init__(self, replies: dict[str, str]) -> None:
        self.replies, self.asked = replies, []

    def __call__(self, items):
        self.asked += [it.id for it in items]
        return [self.replies[it.id] for it in items]


def mcq_lines(clips: Path) -> list[dict]:
    q = {
        "audio": str(clips / "speech_a.wav"),
        "question": "What is heard?",
        "choices": ["a dog", "a cat", "rain", "birds"],
    }
    return [
        {**q, "id": "q1", "answer": "B", "category": "animals"},
        {**q, "id": "q2", "answer": 2, "category": "weather"},
        {**q, "id": "q3", "answer": "birds", "category": "animals"},
        {**q, "id": "q4", "answer": "A", "category": "animals"},
    ]


REPLIES = {"q1": "The answer is (B).", "q2": "It sounds like rain.", "q3": "A", "q4": "answer: a"}


def test_mcq_scripted_answerer_exact(clips, tmp_path):
    data = write_jsonl(tmp_path / "mcq.jsonl", mcq_lines(clips))
    answerer = Scripted(REPLIES)
    res = run_suite(
        make_suite("mcq", answerer=answerer), data, tmp_path / "out", batch_size=3, progress=False
    )
    assert_report(tmp_path / "out")
    assert [r["correct"] for r in res.items] == [True, True, False, True]
    assert res.aggregate["accuracy"] == 0.75
    assert res.per_category["animals"]["accuracy"] == pytest.approx(2 / 3)
    assert res.per_category["weather"]["accuracy"] == 1.0
    assert answerer.asked == ["q1", "q2", "q3", "q4"]
    # a re-run with the same settings comes entirely from the cache
    again = Scripted(REPLIES)
    res2 = run_suite(make_suite("mcq", answerer=again), data, tmp_path / "out", progress=False)
    assert again.asked == [] and res2.aggregate["accuracy"] == 0.75 and res2.computed == 0


def test_mcq_model_answerer_runs(clips, tmp_path):
    data = write_jsonl(tmp_path / "mcq.jsonl", mcq_lines(clips)[:2])
    s = make_suite(
        "mcq",
        model=str(PARITY_DIR / "model"),
        tokenizer=str(PARITY_DIR / "tokenizer"),
        gen={"max_new_steps": 3, "seed": 0},
    )
    res = run_suite(s, data, tmp_path / "out", progress=False)
    assert len(res.items) == 2 and 0.0 <= res.aggregate["accuracy"] <= 1.0
    assert all(isinstance(r["reply"], str) for r in res.items)


# --------------------------------------------------------------------------------- bad manifests
def bad_manifest(clips: Path, path: Path) -> Path:
    good = mcq_lines(clips)
    return write_jsonl(
        path,
        [
            good[0],
            good[1],
            "{not json",  # line 3
            {**good[2], "audio": "missing.wav"},  # line 4
            {**good[3], "id": "q5", "language": "fr"},  # line 5
            {k: v for k, v in good[3].items() if k != "question"},  # line 6
            good[3],  # line 7
            {**good[2], "id": "q6", "answer": "Z"},  # line 8: fails when evaluated
        ],
    )


def test_bad_manifest_skip_records_errors(clips, tmp_path):
    data = bad_manifest(clips, tmp_path / "bad.jsonl")
    answerer = Scripted({**REPLIES, "q6": "A"})
    res = run_suite(make_suite("mcq", answerer=answerer), data, tmp_path / "out", progress=False)
    assert [r["id"] for r in res.items] == ["q1", "q2", "q4"]
    lines = {e.line: e.message for e in res.errors}
    assert set(lines) == {3, 4, 5, 6, 8}
    assert "bad JSON" in lines[3] and "missing.wav: no such file" in lines[4]
    assert "unknown language 'fr'" in lines[5] and "missing field 'question'" in lines[6]
    assert "answer 'Z'" in lines[8]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["complete"] and [e["line"] for e in saved["errors"]] == [3, 4, 5, 6, 8]
    assert "line 4: audio missing.wav" in (tmp_path / "out" / "report.md").read_text()


def test_bad_manifest_stop_keeps_results_and_resumes(clips, tmp_path, capsys):
    data = bad_manifest(clips, tmp_path / "bad.jsonl")
    out = tmp_path / "out"
    first = Scripted(REPLIES)
    with pytest.raises(MimoAudioError, match=r"^line 3: bad JSON"):
        run_suite(make_suite("mcq", answerer=first), data, out, on_error="stop", progress=False)
    assert first.asked == ["q1", "q2"]  # the items before the bad line were evaluated and cached
    partial = json.loads((out / "results.json").read_text())
    assert not partial["complete"] and [r["id"] for r in partial["items"]] == ["q1", "q2"]
    assert len(list((out / "cache").rglob("*.json"))) == 2
    # fix the manifest: the resumed run only asks the remaining items
    lines = data.read_text().splitlines()
    data.write_text("\n".join(lines[:2] + [json.dumps(mcq_lines(clips)[2])] + lines[6:7]) + "\n")
    second = Scripted(REPLIES)
    res = run_suite(make_suite("mcq", answerer=second), data, out, on_error="stop", progress=False)
    assert second.asked == ["q3", "q4"] and res.complete and res.computed == 2
    assert res.aggregate["accuracy"] == 0.75


def test_stop_at_an_item_that_fails_to_evaluate(clips, tmp_path):
    good = mcq_lines(clips)
    data = write_jsonl(tmp_path / "m.jsonl", [good[0], {**good[1], "answer": "Z"}, good[2]])
    answerer = Scripted(REPLIES)
    with pytest.raises(MimoAudioError, match=r"^line 2: answer 'Z'"):
        run_suite(
            make_suite("mcq", answerer=answerer), data, tmp_path / "out", on_error="stop", progress=False
        )
    assert "q3" not in answerer.asked  # nothing after the failing item
    partial = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["id"] for r in partial["items"]] == ["q1"] and partial["errors"][0]["line"] == 2


def test_cli_stop_one_line_error_and_resume(clips, tmp_path, capsys):
    good = {"audio": str(clips / "speech_a.wav"), "text": "hello", "language": "en"}
    data = write_jsonl(
        tmp_path / "asr.jsonl",
        [{**good, "id": "a"}, {**good, "id": "b", "language": "xx"}, {**good, "id": "c"}],
    )
    out = tmp_path / "out"
    args = ["asr", "--data", str(data), "--out", str(out), "--on-error", "stop", *MODEL, *SHORT]
    rc, err = eval_cli(capsys, *args)
    assert rc == 2
    assert err.strip().splitlines()[-1].startswith("mimo-audio: error: line 2: unknown language 'xx'")
    cached = list((out / "cache").rglob("*.json"))
    assert len(cached) == 1 and json.loads((out / "results.json").read_text())["complete"] is False
    stamp = cached[0].stat().st_mtime_ns
    rc, err = eval_cli(capsys, *args[: -len(SHORT)], *SHORT[:-1], "--on-error", "skip")  # progress on
    assert rc == 0, err
    res = json.loads((out / "results.json").read_text())
    assert [r["id"] for r in res["items"]] == ["a", "c"] and res["counts"]["computed"] == 1
    assert [e["line"] for e in res["errors"]] == [2]
    assert cached[0].stat().st_mtime_ns == stamp  # the cached item was not recomputed
    assert "eval asr" in err  # the progress bar went to stderr


def test_cli_errors(tmp_path, capsys):
    rc, err = eval_cli(
        capsys, "asr", "--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o"), *MODEL
    )
    assert rc == 2 and "no such file" in err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    rc, err = eval_cli(capsys, "asr", "--data", str(empty), "--out", str(tmp_path / "o"), *MODEL)
    assert rc == 2 and "holds no items" in err and len(err.strip().splitlines()) == 1


def test_missing_extra_is_one_line_and_help_still_works(tmp_path):
    code = (
        "import sys; sys.modules['jiwer'] = None\n"  # as if the [eval] extra were not installed
        "from mimo_audio.cli import main\n"
        f"sys.exit(main(['eval', 'asr', '--data', {str(tmp_path / 'm.jsonl')!r}, '--out', 'o']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "mimo-audio: error: mimo-audio eval needs jiwer; install the [eval] extra: pip install 'mimo-audio[eval]'"
    ]
    help_code = "import sys; sys.modules['jiwer'] = None\nfrom mimo_audio.cli import main\nmain(['--help'])"
    proc = subprocess.run([sys.executable, "-c", help_code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "eval" in proc.stdout


def test_wrong_model_variant_fails_before_any_item(clips, tmp_path, capsys):
    data = write_jsonl(
        tmp_path / "a.jsonl", [{"audio": str(clips / "speech_a.wav"), "text": "x", "language": "en"}]
    )
    rc, err = eval_cli(
        capsys,
        "asr",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "o"),
        *MODEL,
        "--variant",
        "base",
        "--quiet",
    )
    assert rc == 2
    assert err.strip().splitlines() == [
        f"mimo-audio: error: {PARITY_DIR / 'model'}: asr needs the Instruct model, this is the Base model"
    ]
    assert json.loads((tmp_path / "o" / "results.json").read_text())["items"] == []


def test_results_are_numbers(clips, tmp_path):
    """results.json is strict JSON (a PESQ failure is null, never NaN)."""
    data = write_jsonl(tmp_path / "tok.jsonl", [{"audio": str(clips / "speech_b.wav")}])
    make = make_suite("tokenizer", tokenizer=str(PARITY_DIR / "tokenizer"), codebooks=1)
    run_suite(make, data, tmp_path / "out", progress=False)
    text = (tmp_path / "out" / "results.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert np.isfinite(json.loads(text)["aggregate"]["bitrate_bps"])


def test_cache_key_follows_the_weights_in_a_model_folder(tmp_path):
    """New weights exported to the same folder must not reuse results cached for the old ones."""
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"old weights")
    suite = SimpleNamespace(name="tokenizer", settings=lambda: {"tokenizer": str(folder), "codebooks": 8})
    before = settings_hash(suite)
    assert settings_hash(suite) == before
    (folder / "model.safetensors").write_bytes(b"new weights, same path")
    assert settings_hash(suite) != before
