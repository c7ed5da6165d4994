"""The default model pair: where it is looked up (``MIMO_AUDIO_DEFAULT_DIR``, the package folder, else
a one-line error) from the CLI, ``serve``/``demo`` and ``MimoAudio.from_pretrained()``; and the whole
training chain of ``scripts/train_default.sh`` at tiny scale (synth → tokenizer → export → encode →
stage 2 → LM → export → release → load → tts / asr), resumed by a second run."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from safetensors.torch import load_file

from mimo_audio import MimoAudio, defaults
from mimo_audio.cli import main
from mimo_audio.cli.serve_cmds import _load_kwargs
from mimo_audio.errors import MimoAudioError
from mimo_audio.train.data import ShardSource
from mimo_audio.train.export import export_checkpoint

from conftest import PARITY_DIR, clip_path

ROOT = Path(__file__).resolve().parents[1]
SHORT = ["--max-new-steps", "4", "--seed", "0", "--quiet"]


@pytest.fixture()
def default_dir(tmp_path, monkeypatch) -> Path:
    """A default folder of symlinks to the parity checkpoints, named by MIMO_AUDIO_DEFAULT_DIR."""
    folder = tmp_path / "default"
    folder.mkdir()
    (folder / "model").symlink_to(PARITY_DIR / "model")
    (folder / "tokenizer").symlink_to(PARITY_DIR / "tokenizer")
    monkeypatch.setenv(defaults.ENV_DEFAULT_DIR, str(folder))
    for var in ("MIMO_AUDIO_MODEL", "MIMO_AUDIO_TOKENIZER"):
        monkeypatch.delenv(var, raising=False)
    return folder


@pytest.fixture()
def no_default(tmp_path, monkeypatch) -> None:
    """Neither the environment nor the package provides a default pair."""
    monkeypatch.delenv(defaults.ENV_DEFAULT_DIR, raising=False)
    monkeypatch.setattr(defaults, "PACKAGE_DEFAULT_DIR", tmp_path / "empty_package_folder")
    for var in ("MIMO_AUDIO_MODEL", "MIMO_AUDIO_TOKENIZER"):
        monkeypatch.delenv(var, raising=False)


# ---------------------------------------------------------------------------- resolution
def test_lookup_order(default_dir, tmp_path, monkeypatch):
    assert defaults.default_model_dirs() == (default_dir / "model", default_dir / "tokenizer")
    assert defaults.resolve_model_pair("m", "t") == ("m", "t")  # explicit folders win
    with pytest.raises(MimoAudioError, match="give both"):
        defaults.resolve_model_pair("m", None)
    # the package folder is used when the environment names none
    package = tmp_path / "package"
    shutil.copytree(default_dir, package, symlinks=True)
    monkeypatch.delenv(defaults.ENV_DEFAULT_DIR)
    monkeypatch.setattr(defaults, "PACKAGE_DEFAULT_DIR", package)
    assert defaults.default_model_dirs() == (package / "model", package / "tokenizer")
    # an environment folder without the pair is an error, not a silent fall-back
    monkeypatch.setenv(defaults.ENV_DEFAULT_DIR, str(tmp_path))
    with pytest.raises(MimoAudioError, match="does not hold model/config.json"):
        defaults.default_model_dirs()


def test_no_default_is_one_clear_line(no_default, capsys, tmp_path):
    with pytest.raises(MimoAudioError, match="no default model is installed; pass --model"):
        MimoAudio.from_pretrained()
    assert main(["tts", "Hello", "--out", str(tmp_path / "x.wav"), *SHORT]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "mimo-audio: error: no default model is installed; pass --model DIR --tokenizer DIR "
        "(or set MIMO_AUDIO_MODEL and MIMO_AUDIO_TOKENIZER)"
    ]
    assert main(["reconstruct", str(clip_path("speech_a")), str(tmp_path / "r.wav"), "--quiet"]) == 2
    assert "no default model is installed" in capsys.readouterr().err
    assert not (tmp_path / "r.wav").exists()


def test_cli_tasks_and_api_use_the_default(default_dir, capsys, tmp_path):
    out = tmp_path / "hello.wav"
    assert main(["tts", "Hello", "--out", str(out), *SHORT]) == 0
    assert out.is_file()
    capsys.readouterr()
    assert main(["asr", str(clip_path("speech_a")), *SHORT, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] <= 4
    model = MimoAudio.from_pretrained(device="cpu")
    assert model.tts("Hi.", max_new_steps=2, seed=0).audio is not None
    # the tokenizer commands take the default pair's tokenizer
    codes, wav = tmp_path / "a.safetensors", tmp_path / "a.wav"
    assert main(["tokenize", str(clip_path("speech_a")), "--out", str(codes), "--quiet"]) == 0
    assert main(["detokenize", str(codes), "--out", str(wav), "--quiet"]) == 0
    assert main(["reconstruct", str(clip_path("speech_a")), str(tmp_path / "r.wav"), "--quiet"]) == 0
    assert wav.stat().st_size > 44 and (tmp_path / "r.wav").stat().st_size > 44


def test_serve_and_demo_resolve_the_default(default_dir):
    args = argparse.Namespace(
        model=None, tokenizer=None, threads=None, device="cpu", dtype=None, variant=None,
        quantize=None, max_batch=2, max_len=256,
    )  # fmt: skip
    _load_kwargs(args)
    assert (args.model, args.tokenizer) == (default_dir / "model", default_dir / "tokenizer")


# ---------------------------------------------------------------------------- the training chain
def _tiny_configs(folder: Path) -> tuple[Path, Path]:
    """The default recipes' configs shrunk to a few hundred thousand parameters each."""
    tok = json.loads((ROOT / "recipes/default/tokenizer_config.json").read_text())
    tok.update(
        d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128, encoder_skip_layer_id=1,
        decoder_layers=2, decoder_attention_heads=4, decoder_ffn_dim=128, vocoder_dim=32,
        vocoder_intermediate_dim=64, vocoder_num_layers=2, vocoder_attention_heads=2,
        vocoder_attn_window_size=[6, 3], codebook_size=[64, 64, 16],
    )  # fmt: skip
    lm = json.loads((ROOT / "recipes/default/lm_config.json").read_text())
    lm.update(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        intermediate_size=128, local_dim=32, local_layers=1, local_attn_heads=2, local_ffn_dim=64,
        input_local_dim=32, input_local_layers=1, speech_vocab_size="65-65-17-17-17-17-17-17",
        speech_zeroemb_idx="64-64-16-16-16-16-16-16",
    )  # fmt: skip
    paths = folder / "tok.json", folder / "lm.json"
    for path, cfg in zip(paths, (tok, lm), strict=True):
        path.write_text(json.dumps(cfg))
    return paths


def _driver(
    run: Path, tok_cfg: Path, lm_cfg: Path, lm_steps: int, state: Path, **extra_env: str
) -> subprocess.CompletedProcess:
    tok = [
        f"model.config={tok_cfg}", "model.warm_start=null", "run.max_steps=2", "data.batch_size=4", "data.micro_batch_size=4",
        "data.segment_seconds=1.0", "a2t.dim=32", "a2t.layers=1", "a2t.heads=2", "a2t.ffn_dim=64",
        "quantizer.kmeans_iters=2", "quantizer.kmeans_init_batches=2",
    ]  # fmt: skip
    tok2 = [
        "run.max_steps=1", "data.batch_size=2", "data.micro_batch_size=2", "data.segment_seconds=0.5",
        "discriminator.periods=[2]", "discriminator.mpd_channels=4", "discriminator.mpd_max_channels=8",
        "discriminator.stft_ffts=[256]", "discriminator.stft_channels=4",
    ]  # fmt: skip
    lm = [
        f"model.config={lm_cfg}", f"run.max_steps={lm_steps}", "data.context_length=256",
        "data.batch_rows=2", "data.micro_rows=2",
    ]  # fmt: skip
    common = ["run.eval_batches=1", "run.threads=1"]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MIMO_DEFAULT_RUN": str(run),
        "MIMO_DEFAULT_STATE": str(state),
        "MIMO_DEFAULT_UTTERANCES": "30",
        "MIMO_DEFAULT_STAGE2": "1",  # the shipped recipe skips it; the chain still proves it
        "MIMO_DEFAULT_TOK_SET": " ".join(tok + common),
        "MIMO_DEFAULT_TOK2_SET": " ".join(tok2 + common),
        "MIMO_DEFAULT_LM_SET": " ".join(lm + common),
        "MIMO_DEFAULT_LM2_SET": " ".join(["run.max_steps=1", *lm[2:], *common]),
        "MIMO_DEFAULT_LM3_SET": " ".join(["run.max_steps=1", *lm[2:], *common]),
        "MIMO_DEFAULT_LM4_SET": " ".join(["run.max_steps=1", *lm[2:], *common]),
        "MIMO_DEFAULT_LM5_SET": " ".join(["run.max_steps=1", *lm[2:], *common]),
        "MIMO_DEFAULT_LM6_SET": " ".join(["run.max_steps=1", *lm[2:], *common]),
        "MIMO_DEFAULT_LM7_SET": " ".join(["run.max_steps=1", *lm[2:], *common]),
        "MIMO_DEFAULT_LM8_SET": " ".join(["run.max_steps=1", *lm[2:], *common]),
        "MIMO_DEFAULT_LM9_SET": " ".join(["run.max_steps=1", *lm[2:], *common]),
        "MIMO_DEFAULT_LM11_SET": " ".join(["run.max_steps=1", *lm[2:], *common]),
        "MIMO_DEFAULT_LM12_SET": " ".join(["run.max_steps=1", *lm[2:], *common]),
        "MIMO_DEFAULT_BF16": "0",
        **extra_env,
    }
    return subprocess.run(
        ["bash", str(ROOT / "scripts/train_default.sh")], env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_tiny_chain_end_to_end_and_resumed(tmp_path):
    tok_cfg, lm_cfg = _tiny_configs(tmp_path)
    run, state = tmp_path / "run", tmp_path / "state"
    proc = _driver(run, tok_cfg, lm_cfg, lm_steps=2, state=state)
    assert proc.returncode == 0, proc.stderr[-3000:]
    release = Path(proc.stdout.strip().splitlines()[-1])
    assert release == run / "release"
    for step in (
        "synth",
        "tokenizer1",
        "export_tokenizer1",
        "encode",
        "tokenizer2",
        "lm",
        "export_lm",
        "synth2",
        "encode2",
        "lm2",
        "export_lm2",
        "synth3",
        "encode3",
        "lm3",
        "export_lm3",
        "synth4",
        "encode4",
        "lm4",
        "export_lm4",
        "lm5",
        "export_lm5",
        "lm6",
        "export_lm6",
        "lm7",
        "export_lm7",
        "lm8",
        "export_lm8",
        "lm9",
        "export_lm9",
        "lm11",
        "lm12",
        "release",
    ):
        assert (run / "done" / step).is_file(), step
    # the release is the mean of the weights of LM stages 11 and 12
    assert (run / "done/release").read_text().startswith("lm11+lm12 ")
    soup = export_checkpoint(
        state / "lm11", tmp_path / "soup", dtype="bfloat16", average_with=[state / "lm12"]
    )
    got, want = (load_file(str(d / "model.safetensors")) for d in (release / "model", soup))
    assert got.keys() == want.keys() and all(got[k].equal(want[k]) for k in got)
    meta2 = json.loads((run / "corpus2/meta.json").read_text())
    assert meta2["options"]["word_sequences"] == 0.5, meta2
    meta3 = json.loads((run / "corpus3/meta.json").read_text())
    assert meta3["options"]["word_sequences"] == 0.75, meta3
    train2, train3 = ({json.loads(line)["text"] for line in (run / c / "train_asr.jsonl").open()}
                      for c in ("corpus2", "corpus3"))  # fmt: skip
    assert len(train3 - train2) > len(train3) // 2  # the third corpus brings new sentences
    meta4 = json.loads((run / "corpus4/meta.json").read_text())
    assert (meta4["options"]["word_sequences"], meta4["options"]["phrase_words"]) == (0.7, 0.5), meta4
    assert meta4["options"]["word_times"] is True  # LM stage 6 trains word-aligned TTS streams
    tts4 = [r for r, _ in map(ShardSource(run / "shards4/train").get, range(len(ShardSource(run / "shards4/train"))))
            if r["task"] == "tts"]  # fmt: skip
    assert tts4 and all(r["word_starts"] for r in tts4)
    # corpus 4's new codes go to a store of its own; the first corpora's store is only read
    assert (state / "codes.npz").is_file() and (state / "codes4.npz").is_file()
    assert sorted(p.name for p in (release / "model").iterdir()) == [
        "config.json",
        "generation_config.json",  # the default's samplers (greedy TTS)
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]

    model = MimoAudio.from_pretrained(release / "model", release / "tokenizer", device="cpu")
    assert not model.options("tts").speech_sampler.do_sample
    speech = model.tts("Hello.", max_new_steps=6, seed=0)
    assert speech.audio is not None and speech.audio.shape[0] > 0 and speech.sample_rate == 24000
    text = model.asr(run / "corpus" / json.loads((run / "corpus/test_asr.jsonl").open().readline())["audio"],
                     max_new_steps=6, seed=0)  # fmt: skip
    assert isinstance(text.text, str) and text.steps <= 6

    # a second session: finished steps are skipped, the LM resumes from its checkpoint for one more step
    for step in (
        "tokenizer1",
        "tokenizer2",
        "lm",
        "lm2",
        "lm3",
        "lm4",
        "lm5",
        "lm6",
        "lm7",
        "lm8",
        "lm9",
        "lm11",
        "lm12",
    ):  # each finished training step is packed in the state
        assert (state / "done" / step).is_file() and (state / step / "trainer.json").is_file(), step
        assert not (state / step / "optim.pt").exists()
    for marker in ("lm", "export_lm", "release"):
        (run / "done" / marker).unlink()
    (state / "done" / "lm").unlink()
    proc = _driver(run, tok_cfg, lm_cfg, lm_steps=3, state=state)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for step in ("tokenizer1", "export_tokenizer1", "tokenizer2", "export_tokenizer2"):
        assert f"{step}: done" in proc.stderr
    assert "synth:" not in proc.stderr and "encode:" not in proc.stderr  # skipped silently once marked
    assert "lm: training into" in proc.stderr and "--resume" in proc.stderr
    steps = [json.loads(line)["step"] for line in proc.stdout.splitlines() if line.startswith("{")]
    assert steps == [3]
    assert (run / "lm/checkpoints/step-00000003").is_dir()
    assert json.loads((run / "release/model/config.json").read_text())["hidden_size"] == 64

    # a fresh machine: only the packed state is left; the corpus is regenerated, finished training
    # steps are exported from their packed checkpoints and the unfinished LM continues from its own
    (state / "done" / "lm").unlink()
    for step in ("lm6", "lm7", "lm8", "lm9"):  # stages that only feed trained later ones need no state
        shutil.rmtree(state / step)
        (state / "done" / step).unlink()
    run2 = tmp_path / "run2"
    proc = _driver(run2, tok_cfg, lm_cfg, lm_steps=4, state=state)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all(f"lm{n}:" not in proc.stderr for n in (6, 7, 8, 9))
    assert "lm11: done" in proc.stderr and "lm12: done" in proc.stderr
    assert "tokenizer1: done" in proc.stderr and f"exporting {state / 'tokenizer1'}" in proc.stderr
    assert "files already encoded" in proc.stderr  # shards rebuilt from the code store
    first = ShardSource(run / "shards/train")
    again = ShardSource(run2 / "shards/train")
    assert len(first) == len(again) and all(
        json.dumps(first.get(i)[0], default=lambda t: t.tolist())
        == json.dumps(again.get(i)[0], default=lambda t: t.tolist())
        for i in range(len(first))
    )
    assert f"--resume {state / 'lm'}" in proc.stderr and "lm: packed" in proc.stderr
    steps = [json.loads(line)["step"] for line in proc.stdout.splitlines() if line.startswith("{")]
    assert steps == [4] and (state / "done" / "lm").is_file()
    assert json.loads((state / "lm" / "trainer.json").read_text())["step"] == 4
    assert not (run2 / "corpus2").exists() and not (run2 / "corpus4").exists()  # their LMs are trained
    model = MimoAudio.from_pretrained(run2 / "release/model", run2 / "release/tokenizer", device="cpu")
    assert model.tts("Hello.", max_new_steps=4, seed=0).audio is not None
    # the release may take another trained stage; an untrained one is a one-line error
    proc = _driver(run2, tok_cfg, lm_cfg, lm_steps=4, state=state, MIMO_DEFAULT_RELEASE_LM="lm3")
    assert proc.returncode == 0 and (run2 / "done/release").read_text().startswith("lm3 "), proc.stderr[
        -3000:
    ]
    proc = _driver(run2, tok_cfg, lm_cfg, lm_steps=4, state=state, MIMO_DEFAULT_RELEASE_LM="lm10")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].endswith("release: no trained lm10")
