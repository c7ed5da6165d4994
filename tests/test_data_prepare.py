"""``mimo-audio data prepare`` end to end on one local Ray instance (loopback only, 2 CPUs).

The sidecar backends stand in for the recognisers where the transcript must be right (the fixture
LM has random weights); one run goes through our real ASR and captioner on the fixture checkpoints.
The fixture audio tokenizer writes the codes in every run, and the training loader reads the shards.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from mimo_audio.cli import main
from mimo_audio.data.recipe import RUN, load_recipe
from mimo_audio.data.runner import prepare, ray_session
from mimo_audio.prompts import PromptBuilder
from mimo_audio.text_tokenizer import TextTokenizer
from mimo_audio.train.data import CodeResolver, ShardSource, open_sources
from mimo_audio.train.lm_data import LMDataset, SequenceBuilder
from test_data_corpus import SENTENCES, corpus, dialogue, needs_tools

from conftest import PARITY_DIR

pytestmark = [needs_tools, pytest.mark.filterwarnings("ignore::DeprecationWarning")]  # Ray Data internals
TOKENIZER = str(PARITY_DIR / "tokenizer")
FAST_STAGES = ["signal", "transcribe", "language", "quality", "blocklist", "caption", "sample", "tokenize"]


@pytest.fixture(scope="module")
def ray_instance():
    with ray_session({**RUN, "num_cpus": 2}, None) as ray:
        yield ray


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("in")
    truth = corpus(folder)
    # sidecars with recogniser confidences: turn 2 of talk.wav is unsure (no repeats); the mp3's
    # second turn carries a blocked word
    talk = [{**t, "confidence": 0.5 if i == 1 else 0.99, "caption": f"voice {t['speaker']}"} for i, t in
            enumerate(truth["talk"])]  # fmt: skip
    (folder / "talk.transcript.json").write_text(json.dumps(talk))
    mp3 = [{**t, "confidence": 0.99} for t in truth["talk"]]
    mp3[1]["text"] = "What the fuck is this."
    (folder / "talk_8k.transcript.json").write_text(json.dumps(mp3))
    sub = folder / "zh"
    sub.mkdir()
    zh = dialogue(sub, "chat", [("B", SENTENCES[4])])
    (sub / "chat.transcript.json").write_text(
        json.dumps([{**zh[0], "text": "每天早上面包师都会在太阳升起之前打开他的小店。", "confidence": 0.99}])
    )
    fr = dialogue(sub, "salut", [("A", SENTENCES[5])])  # French transcript: not a kept language
    (sub / "salut.transcript.json").write_text(
        json.dumps([{**fr[0], "text": "Les enfants ont joué au football dans le parc jusqu'à la pluie."}])
    )
    return folder, truth


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("recipe") / "sidecar.yaml"
    recipe = {
        "run": {"batch_files": 2},
        "stages": FAST_STAGES,
        "transcribe": {"backend": "sidecar"},
        "caption": {"backend": "sidecar"},
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def prepared(ray_instance, inputs, recipe_file, tmp_path_factory):
    folder, _ = inputs
    out = tmp_path_factory.mktemp("out")
    before = _digests(folder)
    argv = [
        "data",
        "prepare",
        str(folder),
        "--out",
        str(out),
        "--recipe",
        str(recipe_file),
        "--tokenizer",
        TOKENIZER,
    ]
    assert main(argv) == 0
    assert _digests(folder) == before  # inputs never modified
    return out, argv


def test_ray_runs_on_loopback_only(ray_instance):
    assert ray_instance.util.get_node_ip_address() == "127.0.0.1"


def test_prepare_drops_with_reasons_and_reports(prepared):
    out, _ = prepared
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inputs"] == 7
    assert summary["inputs_dropped"] == {"decode_failed": 1, "low_bitrate": 1, "no_speech": 1}
    assert summary["segments_dropped"] == {"blocklist": 1, "language": 1}
    assert summary["segments_kept"] == 6 and summary["shards"] == 3
    # talk.wav: turns 1, 3 are high quality (3 copies), turn 2 not; mp3: 2 kept turns (3 copies each),
    # zh: 1 turn (3 copies) → 3 + 1 + 3 + 3 + 3 + 3
    assert summary["samples_written"] == 16
    assert set(summary["hours_per_language"]) == {"en", "zh"}
    assert summary["run"]["processed"] == 7
    assert (out / "report.md").read_text().startswith("# Data preparation report")
    assert (out / "plots" / "snr_db.png").is_file()


def test_shards_are_read_by_the_training_loader(prepared):
    out, _ = prepared
    src = ShardSource(out / "shards")
    assert len(src) == 16 and len(open_sources([str(out / "shards")])) == 16
    records = [src.get(i)[0] for i in range(len(src))]
    by_text = {r["text"]: r for r in records}
    assert set(by_text) == {
        SENTENCES[0],
        SENTENCES[1],
        SENTENCES[2],
        "每天早上面包师都会在太阳升起之前打开他的小店。",
    }
    for r in records:
        assert r["task"] == "asr" and r["language"] in ("en", "zh") and 0 < r["duration"] <= 30
        assert set(r["scores"]) >= {
            "snr_db",
            "clipping",
            "asr_confidence",
            "lang_confidence",
            "transcript_quality",
        }
        codes = r["audio"]  # int64 [N, 8], whole patches of 4 frames at 25 Hz
        assert codes.shape[1] == 8 and codes.shape[0] % 4 == 0
        assert abs(codes.shape[0] - 25 * r["duration"]) <= 4
    talk = [r for r in records if r["source"] == "talk.wav"]
    assert sorted((r["index"], r["repeat"]) for r in talk) == [
        (0, 0),
        (0, 1),
        (0, 2),
        (1, 0),
        (2, 0),
        (2, 1),
        (2, 2),
    ]
    assert {r["caption"] for r in talk} == {"voice A", "voice B"}
    assert {r["speaker"] for r in talk if r["caption"] == "voice A"} == {"spk0"}
    index = json.loads((out / "shards" / "index.json").read_text())
    assert index["num_samples"] == 16 and len(index["shards"]) == 3


def test_shards_build_lm_training_batches(prepared):
    out, _ = prepared
    tok = TextTokenizer.from_dir(PARITY_DIR / "model")
    empty = [1024, 1024] + [128] * 6
    data = LMDataset(
        open_sources([str(out / "shards")]), SequenceBuilder(PromptBuilder(tok, empty, 4), tok), CodeResolver(8, 4),
        seed=0, empty_text_id=tok.id("<|empty|>"), empty_ids=empty, delays=range(8),
    )  # fmt: skip
    assert len(data) == 16
    batch = data.collate([[0, 1], [2]], max(data.lengths[0] + data.lengths[1], data.lengths[2]))
    assert batch["ids"].shape[:2] == (2, 9)
    assert (batch["text_targets"] >= 0).any() and (batch["doc"][0] == 1).any()  # two packed ASR examples


def test_rerun_does_no_work_and_keeps_the_shards(prepared, capsys):
    out, argv = prepared
    before = _digests(out / "shards")
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "shards").glob("*.tar")}
    capsys.readouterr()
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["run"]["processed"] == 0 and printed["run"]["skipped"] == 7
    assert _digests(out / "shards") == before
    assert {p: p.stat().st_mtime_ns for p in (out / "shards").glob("*.tar")} == mtimes


def test_a_killed_run_resumes_with_the_same_shards(prepared, inputs, recipe_file):
    out, _ = prepared
    folder, _ = inputs
    before = _digests(out / "shards")
    # what a kill during the batch of talk.wav leaves: no done marker, maybe no shard, a temp file
    marker = next(
        p for p in (out / "done").glob("*.json") if json.loads(p.read_text())["source"] == "talk.wav"
    )
    shard = out / "shards" / json.loads(marker.read_text())["shard"]
    marker.unlink()
    shard.unlink()
    (out / "shards" / f".{shard.name}.abc123.partial").write_bytes(b"half a tar")
    recipe = load_recipe(recipe_file, {"models": {"tokenizer": TOKENIZER}})
    summary = prepare(folder, out, recipe)
    assert summary["run"]["processed"] == 1 and summary["run"]["skipped"] == 6
    assert _digests(out / "shards") == before


def test_real_model_path_on_the_fixture_checkpoints(ray_instance, inputs, tmp_path):
    folder, _ = inputs
    one = tmp_path / "in"
    one.mkdir()
    shutil.copy(folder / "talk.wav", one / "talk.wav")
    recipe = load_recipe(
        None,
        {
            "models": {"model": str(PARITY_DIR / "model"), "tokenizer": TOKENIZER, "max_new_steps": 12},
            "stages": FAST_STAGES,
            # the random-weight LM writes gibberish: keep every language and rate
            "language": {"keep": None, "min_confidence": 0.0},
            "quality": {"min_chars_per_second": 0.0, "max_chars_per_second": 1000.0},
            "blocklist": {"builtin": False},
        },
    )
    summary = prepare(one, tmp_path / "out", recipe)
    assert summary["segments"] == 3 and summary["segments_kept"] == 3
    records = [r for r, _ in (ShardSource(tmp_path / "out" / "shards").get(i) for i in range(3))]
    for r in records:
        assert r["text"] and r["caption"]  # generated by our ASR and audio-understanding tasks
        assert 0 < r["scores"]["asr_confidence"] <= 1
        assert r["audio"].shape[1] == 8


@pytest.mark.slow
def test_default_stages_with_agreement_on_two_workers(ray_instance, inputs, tmp_path):
    folder, _ = inputs
    recipe = load_recipe(
        None,
        {
            "run": {"workers": 2, "batch_files": 1},
            "models": {"model": str(PARITY_DIR / "model"), "tokenizer": TOKENIZER, "max_new_steps": 12},
            "transcribe": {"backend": "sidecar"},  # real text, so language ID and agreement apply
        },
    )
    summary = prepare(folder, tmp_path / "out", recipe)
    assert summary["run"]["processed"] == 7 and summary["segments_kept"] >= 1
    records = [ShardSource(tmp_path / "out" / "shards").get(i)[0] for i in range(summary["samples_written"])]
    english = [r for r in records if r["language"] == "en"]
    assert english and all(0 <= r["scores"]["agreement"] <= 1 for r in english)
    assert all(r["caption"] for r in records)  # from the audio-understanding task


@pytest.mark.parametrize(
    "setup, message",
    [
        ("empty", "no input files"),
        ("bad_key", "unknown key vad.treshold"),
        ("bad_stage", "unknown stage 'denoise'"),
        ("bad_yaml", "invalid YAML"),
        ("missing_dir", "input folder not found"),
        ("no_model", "need models.model and models.tokenizer"),
        ("no_tokenizer", "tokenize stage needs"),
        ("bad_backend", "unknown transcribe.backend 'whisper'"),
        ("out_inside", "--out must not be inside the input folder"),
    ],
)
def test_bad_input_gives_one_line_errors(tmp_path, capsys, monkeypatch, setup, message):
    monkeypatch.delenv("MIMO_AUDIO_MODEL", raising=False)
    monkeypatch.delenv("MIMO_AUDIO_TOKENIZER", raising=False)
    folder = tmp_path / "in"
    folder.mkdir()
    if setup not in ("empty", "missing_dir"):
        (folder / "a.wav").write_bytes(b"x")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        {
            "bad_key": "vad: {treshold: 0.5}\n",
            "bad_stage": "stages: [signal, denoise]\n",
            "bad_yaml": "vad: [unclosed\n",
        }.get(setup, "run: {num_cpus: 1}\n")
    )
    target = tmp_path / "nowhere" if setup == "missing_dir" else folder
    out = folder / "out" if setup == "out_inside" else tmp_path / "out"
    argv = ["data", "prepare", str(target), "--out", str(out), "--recipe", str(recipe)]
    recipe.write_text(
        {
            "no_model": "stages: [transcribe]\n",
            "no_tokenizer": "stages: [signal, tokenize]\n",
            "bad_backend": "stages: [transcribe]\ntranscribe: {backend: whisper}\n",
        }.get(setup, recipe.read_text())
    )
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mimo-audio: error:") and message in err and "\n" not in err


def test_missing_extra_gives_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the [data] extra were not installed
    assert main(["data", "prepare", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mimo-audio: error: data prepare needs the [data] extra") and "\n" not in err
