"""``mimo-audio tokenize | detokenize | reconstruct`` end to end on the parity checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mimo_audio import AudioTokenizer
from mimo_audio.cli import main

from conftest import CLIPS, PARITY_DIR, clip_path

TOKENIZER = str(PARITY_DIR / "tokenizer")
NAMES = list(CLIPS)


@pytest.fixture(scope="module")
def tok() -> AudioTokenizer:
    return AudioTokenizer.from_pretrained(TOKENIZER)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_tokenize_one_file(tmp_path, tok, capsys):
    out = tmp_path / "codes.safetensors"
    assert main(["tokenize", "--tokenizer", TOKENIZER, str(clip_path(NAMES[0])), "--out", str(out)]) == 0
    codes = load_file(str(out))["codes"]
    assert codes.dtype == torch.int64 and torch.equal(codes, tok.encode(clip_path(NAMES[0])))
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["sample_rate"] == str(tok.sample_rate)
    assert "tokenized 1 file" in capsys.readouterr().err
    assert _files(tmp_path) == ["codes.safetensors"]  # no temp files left


@pytest.mark.parametrize("batch_size", ["1", "3"])
def test_tokenize_many_files_to_a_directory(batch_size, tmp_path, tok, capsys):
    out = tmp_path / "codes"
    inputs = [str(clip_path(n)) for n in NAMES]
    args = ["tokenize", "--tokenizer", TOKENIZER, *inputs, "--out", str(out), "--batch-size", batch_size]
    assert main(args) == 0
    assert _files(out) == sorted(f"{Path(p).stem}.safetensors" for p in inputs)
    for path in inputs:
        codes = load_file(str(out / f"{Path(path).stem}.safetensors"))["codes"]
        assert torch.equal(codes, tok.encode(path))
    err = capsys.readouterr().err
    assert f"{len(inputs)}/{len(inputs)}" in err  # tqdm progress on stderr


def test_quiet_silences_stderr(tmp_path, capsys):
    inputs = [str(clip_path(n)) for n in NAMES[:2]]
    assert main(["tokenize", "--tokenizer", TOKENIZER, *inputs, "--out", str(tmp_path), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_detokenize(tmp_path, tok):
    codes = tok.encode(clip_path(NAMES[0]))
    src = tmp_path / "c.safetensors"
    save_file({"codes": codes}, str(src))
    out = tmp_path / "out.wav"
    args = ["detokenize", "--tokenizer", TOKENIZER, str(src), "--out", str(out), "--codebooks", "8"]
    assert main([*args, "--quiet"]) == 0
    wav, rate = sf.read(str(out), dtype="float32")
    assert rate == tok.sample_rate and wav.shape == (codes.shape[1] * tok.samples_per_frame,)
    expected = tok.decode(codes[:8]).clamp(-1, 1).numpy()
    assert abs(wav - expected).max() < 2 / 32768
    # .npy codes and every codebook by default
    npy = tmp_path / "c.npy"
    np.save(npy, codes.numpy())
    assert main(["detokenize", "--tokenizer", TOKENIZER, str(npy), "--out", str(tmp_path / "all.flac")]) == 0
    assert sf.info(str(tmp_path / "all.flac")).frames == wav.shape[0]


def test_reconstruct(tmp_path, tok):
    out = tmp_path / "rec.wav"
    src = clip_path(NAMES[0])
    args = ["reconstruct", "--tokenizer", TOKENIZER, str(src), str(out), "--dtype", "bfloat16", "--quiet"]
    assert main(args) == 0
    frames = tok.encode(src).shape[1]
    assert sf.info(str(out)).frames == frames * tok.samples_per_frame


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tokenize", "IN", "IN2", "--out", "{tmp}/x.safetensors"], "must be a directory"),
        (["tokenize", "IN", "IN", "--out", "{tmp}/d"], "share the name"),
        (["tokenize", "IN", "--out", "{tmp}/d", "--batch-size", "0"], "--batch-size"),
        (["detokenize", "{tmp}/missing.safetensors", "--out", "{tmp}/o.wav"], "no such file"),
        (["detokenize", "{tmp}/bad.safetensors", "--out", "{tmp}/o.wav"], "codebook 0"),
        (["detokenize", "{tmp}/nokey.safetensors", "--out", "{tmp}/o.wav"], "no tensor named 'codes'"),
        (["detokenize", "{tmp}/bad.safetensors", "--out", "{tmp}/o.txt"], "output must end with"),
        (["reconstruct", "IN", "{tmp}/o.wav", "--codebooks", "99"], "--codebooks must be in"),
        (["reconstruct", "IN", "{tmp}/o.wav", "--device", "nonsense"], "device"),
    ],
)
def test_cli_errors_are_one_line_and_leave_nothing(args, message, tmp_path, capsys):
    save_file({"codes": torch.full((8, 5), 5000)}, str(tmp_path / "bad.safetensors"))
    save_file({"other": torch.zeros(8, 5, dtype=torch.long)}, str(tmp_path / "nokey.safetensors"))
    before = _files(tmp_path)
    src = str(clip_path(NAMES[0]))
    argv = [a.replace("{tmp}", str(tmp_path)).replace("IN2", src).replace("IN", src) for a in args]
    argv = [argv[0], "--tokenizer", TOKENIZER, *argv[1:]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert _files(tmp_path) == before


def test_entry_point_subprocess(tmp_path):
    """The installed command: exit codes and a one-line error without traceback."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    out = tmp_path / "a.safetensors"
    ok = subprocess.run(
        [sys.executable, "-m", "mimo_audio", "tokenize", "--tokenizer", TOKENIZER, str(clip_path(NAMES[0])),
         "--out", str(out), "--quiet"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert out.is_file()
    bad = subprocess.run(
        [sys.executable, "-m", "mimo_audio", "reconstruct", "--tokenizer", str(tmp_path / "nope"),
         str(clip_path(NAMES[0])), str(tmp_path / "o.wav")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "Traceback" not in bad.stderr
    assert not (tmp_path / "o.wav").exists()
